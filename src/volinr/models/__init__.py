"""Network definitions only; the training loops live in volinr.fit and volinr.sr_training."""

from volinr.models.siren import Siren
from volinr.models.srdensenet import SRDenseNet

__all__ = ["Siren", "SRDenseNet"]
