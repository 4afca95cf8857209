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
from torch.nn.modules import module as module_hooks

from volinr.errors import InputError
from volinr.outputs import atomic_path


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
        size_bytes = tmp.stat().st_size  # renamed into place with the stage's other outputs
    return size_bytes


class _TooManyTensors(Exception):
    pass


def architecture_shapes(
    model_class: type[nn.Module], config: dict[str, Any], max_tensors: int
) -> dict[str, tuple[int, ...]]:
    """Name -> shape of the state_dict of ``model_class(**config)``, built on the meta device.

    A file may claim any architecture: the meta device makes a claimed width cost no memory,
    and the build stops once it registers more than ``max_tensors`` tensors, so a claimed depth
    costs no time either. Raises ValueError for a claim beyond ``max_tensors``, or for any
    failure of the constructor.
    """
    registered = 0

    def count(*_):
        nonlocal registered
        registered += 1
        if registered > max_tensors:
            raise _TooManyTensors

    handles = [
        module_hooks.register_module_parameter_registration_hook(count),
        module_hooks.register_module_buffer_registration_hook(count),
    ]
    try:
        with torch.device("meta"):
            model = model_class(**config)
    except _TooManyTensors:
        raise ValueError(f"the architecture has more than {max_tensors} tensors") from None
    except Exception as err:  # a claimed config can fail a constructor in any way
        raise ValueError(f"{type(err).__name__}: {err}") from None
    finally:
        for handle in handles:
            handle.remove()
    return {name: tuple(tensor.shape) for name, tensor in model.state_dict().items()}


def _mismatches(
    expected: dict[str, tuple[int, ...]], stored: dict[str, tuple[int, ...]]
) -> list[str]:
    problems = [f"{name} is missing" for name in expected if name not in stored]
    problems += [f"{name} is not in the architecture" for name in stored if name not in expected]
    problems += [
        f"{name} has shape {list(stored[name])}, the architecture's is {list(shape)}"
        for name, shape in expected.items()
        if name in stored and stored[name] != shape
    ]
    return problems


def load_checkpoint(
    path: str | os.PathLike, kind: str, model_class: type[nn.Module], device="cpu"
) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild a model saved by ``save_checkpoint``; bad files raise InputError naming them.

    The stored architecture is checked against the stored weights before the model is built,
    so a file claiming a huge model fails without allocating it.
    """
    path = Path(path)
    try:
        payload = torch.load(path, map_location=device, weights_only=True)
    except FileNotFoundError:
        raise InputError(f"{path}: {kind} file not found") from None
    except Exception as err:
        raise InputError(f"{path}: not a readable {kind} file ({err})") from None
    if not isinstance(payload, dict) or payload.get("format") != kind:
        raise InputError(f"{path}: not a {kind} file")
    config, state_dict = payload.get("config"), payload.get("state_dict")
    if not isinstance(config, dict) or not isinstance(state_dict, dict):
        raise InputError(f"{path}: the {kind} file lacks its config or its weights")
    if not all(isinstance(value, torch.Tensor) for value in state_dict.values()):
        raise InputError(f"{path}: the {kind} file's weights are not all tensors")
    mismatch = f"{path}: weights do not match the stored architecture {config}"
    try:
        # Headroom over the stored count for models that replace a tensor while being built.
        expected = architecture_shapes(model_class, config, 2 * len(state_dict) + 16)
    except (TypeError, ValueError, RuntimeError) as err:
        raise InputError(f"{mismatch} ({err})") from None
    problems = _mismatches(expected, {k: tuple(v.shape) for k, v in state_dict.items()})
    if problems:
        more = f"; {len(problems) - 3} more" if len(problems) > 3 else ""
        raise InputError(f"{mismatch}: {'; '.join(problems[:3])}{more}")
    try:
        model = model_class(**config).to(device)
        model.load_state_dict(state_dict)
    except (TypeError, ValueError, RuntimeError) as err:
        raise InputError(f"{mismatch} ({err})") from None
    return model.eval(), payload
