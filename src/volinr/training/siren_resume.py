"""Resume checkpoints of a SIREN fit: the whole state (model, Adam, batch sampler, losses,
evaluations, best snapshot, timers) every ``checkpoint_every`` iterations, with a fingerprint
so that a checkpoint of another fit is never continued.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from volinr.errors import InputError
from volinr.models.siren import Siren
from volinr.outputs import atomic_path

if TYPE_CHECKING:  # types only: training.siren imports this module
    from volinr.training.siren import FitSettings, IndexBatches

log = logging.getLogger(__name__)


RESUME_FORMAT = "volinr-siren-resume-1"


def fit_fingerprint(target: np.ndarray, settings: FitSettings, extent, device) -> str:
    """What a resume checkpoint must match: the data, every setting that changes the result,
    the grid's extent and the device type."""
    digest = hashlib.sha256(np.ascontiguousarray(target).tobytes())
    relevant = {k: v for k, v in asdict(settings).items() if k != "checkpoint_every"}
    digest.update(json.dumps([relevant, list(extent), device.type], sort_keys=True).encode())
    return digest.hexdigest()


@dataclass
class FitState:
    """Everything a fit carries from one iteration to the next, so it can be checkpointed."""

    model: Siren
    optimizer: torch.optim.Optimizer
    batches: IndexBatches
    losses: torch.Tensor
    iteration: int = 0
    evaluations: list[dict[str, float]] = field(default_factory=list)
    best_psnr: float = -math.inf
    best_iteration: int = 0
    best_state: dict[str, torch.Tensor] | None = None
    train_seconds: float = 0.0
    first_seconds: float = 0.0

    def save(self, path: Path, fingerprint: str, learning_rate: float, attempt: int) -> None:
        payload = {
            "format": RESUME_FORMAT,
            "fingerprint": fingerprint,
            "learning_rate": learning_rate,
            "attempt": attempt,
            "iteration": self.iteration,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "batches": self.batches.state_dict(),
            "losses": self.losses[: self.iteration].cpu(),
            "evaluations": self.evaluations,
            "best_psnr": self.best_psnr,
            "best_iteration": self.best_iteration,
            "best_state": self.best_state,
            "train_seconds": self.train_seconds,
            "first_seconds": self.first_seconds,
        }
        # written now, not with the stage's outputs: it is what survives a kill
        with atomic_path(path, deferred=False) as tmp:
            torch.save(payload, tmp)

    def load(self, payload: dict[str, Any]) -> None:
        self.model.load_state_dict(payload["model"])
        self.optimizer.load_state_dict(payload["optimizer"])
        self.batches.load_state_dict(payload["batches"])
        self.iteration = int(payload["iteration"])
        self.losses[: self.iteration] = payload["losses"].to(self.losses.device)
        self.evaluations = list(payload["evaluations"])
        self.best_psnr = float(payload["best_psnr"])
        self.best_iteration = int(payload["best_iteration"])
        self.best_state = payload["best_state"]
        self.train_seconds = float(payload["train_seconds"])
        self.first_seconds = float(payload["first_seconds"])


def read_resume(
    path: Path | None, fingerprint: str, device, replace_stale: bool = False
) -> dict[str, Any] | None:
    """This fit's resume checkpoint at ``path``, or None where there is none.

    Anything else there is refused before training and left as it is (the program removes only
    files it wrote): a folder, a link or a file that is not a readable SIREN resume checkpoint,
    and a checkpoint of another fit. With ``replace_stale`` (the default path beside the
    weights) a checkpoint of another fit is this job's own, left by a killed run with other data
    or settings, and is replaced. Checkpoints are renamed into place whole, so a kill never
    leaves a truncated one.
    """
    if path is None or not (path.exists() or path.is_symlink()):
        return None
    keep = "it is left as it is: remove it to start over, or give another --resume"
    if path.is_symlink() or not path.is_file():
        kind = "a symbolic link" if path.is_symlink() else "not a regular file"
        raise InputError(f"{path}: the resume path is {kind}, not a resume checkpoint; {keep}")
    try:
        with open(path, "rb") as handle:
            if handle.read(2) != b"PK":  # torch.save writes a zip archive
                raise ValueError("not a torch checkpoint")
        payload = torch.load(path, map_location=device, weights_only=True)
    except Exception as err:  # noqa: BLE001  (torch raises many types on foreign files)
        reason = str(err).split(". ")[0].strip() or type(err).__name__
        raise InputError(
            f"{path}: not a readable SIREN resume checkpoint ({reason}); {keep}"
        ) from None
    if not isinstance(payload, dict) or payload.get("format") != RESUME_FORMAT:
        raise InputError(f"{path}: not a SIREN resume checkpoint; {keep}")
    if payload.get("fingerprint") != fingerprint:
        if not replace_stale:
            raise InputError(
                f"{path}: a resume checkpoint of another fit (its data or settings differ); {keep}"
            )
        log.warning(
            "%s: left by an earlier run of this job with other data or settings; starting over "
            "(it will be replaced)",
            path,
        )
        return None
    return payload
