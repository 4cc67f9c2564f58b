"""physiossl: self-supervised representation learning pipeline for physiological signals."""

__version__ = "0.1.0"
