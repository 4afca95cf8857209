"""Model files: weights plus what is needed to rebuild the model, loaded without pickle code.

``torch.load(..., weights_only=True)`` accepts only tensors and plain containers, so a crafted
file cannot run code; the payload's ``format`` tag tells one kind of file from another.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from volinr.io import InputError, atomic_path


def save_checkpoint(path: str | os.PathLike, kind: str, model: nn.Module, **extra: Any) -> int:
    """Write ``model`` (its ``config`` and weights) and ``extra`` fields; returns the bytes."""
    payload = {
        "format": kind,
        "config": dict(model.config),
        # Plain JSON types only, so that torch.load(weights_only=True) accepts the file.
        **json.loads(json.dumps(extra, default=str)),
        "state_dict": {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()},
    }
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
    return Path(path).stat().st_size


def load_checkpoint(
    path: str | os.PathLike, kind: str, model_class: type[nn.Module], device="cpu"
) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild a model saved by ``save_checkpoint``; bad files raise InputError naming them."""
    path = Path(path)
    try:
        payload = torch.load(path, map_location=device, weights_only=True)
    except FileNotFoundError:
        raise InputError(f"{path}: {kind} file not found") from None
    except Exception as err:
        raise InputError(f"{path}: not a readable {kind} file ({err})") from None
    if not isinstance(payload, dict) or payload.get("format") != kind:
        raise InputError(f"{path}: not a {kind} file")
    try:
        model = model_class(**payload["config"]).to(device)
        model.load_state_dict(payload["state_dict"])
    except (KeyError, TypeError, ValueError, RuntimeError) as err:
        raise InputError(f"{path}: weights do not match the stored architecture ({err})") from None
    return model.eval(), payload
