"""Sleep-sound dataset sources (one module each, registered in :mod:`physiossl.data.sources`)."""
