"""Network definitions only; the training loops live in volinr.training."""

from volinr.models.siren import Siren
from volinr.models.srdensenet import SRDenseNet

__all__ = ["Siren", "SRDenseNet"]
