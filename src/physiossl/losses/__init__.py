"""Losses: pure functions, one per file (``_distributed`` holds the collectives and their gradient convention,
``_common`` the full-precision decorator and shared checks)."""

from .autoregressive import apc_loss
from .barlow_twins import barlow_twins_loss
from .byol import byol_loss
from .ccssl import ccssl_loss
from .cpc import cpc_loss
from .infonce import infonce
from .masked_prediction import masked_prediction_loss
from .nt_xent import nt_xent
from .semi_supervised_contrastive import semi_supervised_contrastive_loss
from .sequential_consistency import sequential_consistency_loss
from .simper import simper_loss
from .simsiam import simsiam_loss
from .swav import sinkhorn, swav_loss

__all__ = ["apc_loss", "barlow_twins_loss", "byol_loss", "ccssl_loss", "cpc_loss", "infonce",
           "masked_prediction_loss", "nt_xent", "semi_supervised_contrastive_loss", "sequential_consistency_loss",
           "simper_loss", "simsiam_loss", "sinkhorn", "swav_loss"]
