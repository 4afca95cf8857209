"""Memory estimates of a fit and a decode, checked before they start.

A configuration whose estimate exceeds the memory available (``volinr.devices.
available_memory_bytes``; ``VOLINR_MEMORY_LIMIT_BYTES`` overrides it) is refused with the
estimate in the message, or, for a decode whose output fits but whose chunks do not, decoded
in smaller chunks. The estimates count the large arrays only, not torch's own buffers
(about 0.1 GB on a CPU).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence

import torch

from volinr import devices
from volinr.errors import InputError

log = logging.getLogger(__name__)

FLOAT = 4  # bytes of a float32
# Per voxel of the fitted grid: coordinates (3 floats), values, the image, the batch
# permutation (int64).
FIT_BYTES_PER_VOXEL = 3 * FLOAT + FLOAT + FLOAT + 8
# Per decoded voxel of a chunk, besides its activations: the voxel indices and their
# per-axis remainders (int64), per-axis and stacked coordinates, the output column.
DECODE_BYTES_PER_CHUNK_VOXEL = 3 * 8 + 3 * FLOAT + 3 * FLOAT + FLOAT
# The SIREN decoder's network always sees this many voxels at once (the last tile padded) and
# a chunk is a whole number of tiles, so the output does not depend on the chunk.
DECODE_TILE = 4096
MIN_DECODE_CHUNK = DECODE_TILE
EVAL_CHUNK = 1 << 13  # volinr.training.siren's full-grid evaluation chunk

# What a file may ask a decoder for (checked by volinr.decode_recipe before anything is built).
# A container's constant tensors store no bytes, so without these a file of a few hundred bytes
# claims a network of gigabytes and minutes of decoding. Each is a generous multiple of what the
# paper's configurations need.
MAX_SIREN_WIDTH = 1024  # the paper: 128
MAX_SINE_LAYERS = 16  # the paper: 2 to 4
MAX_DECODE_VOXELS = 1 << 31  # a grid or an upsampling target; the paper's volume: 1.2e8
# SIREN weights x decoded voxels: the paper's 4-layer SIREN on its 463x512x512 volume needs
# 6.1e12; this is 5.8 times that (about 10 minutes on one CPU core at 25 G multiply-adds/s).
MAX_DECODE_MULTIPLY_ADDS = 1 << 45
# The physical extent of a grid axis (mm): a nanometre-scale sample to a kilometre holds every
# physical image with room to spare; far outside it the float32 coordinates underflow (1e-300 mm
# gives NaN coordinates: the fit "diverges", the decode is NaN) or overflow.
MIN_EXTENT_MM, MAX_EXTENT_MM = 1e-6, 1e9


def gb(n: float) -> str:
    x = n / 1e9
    return f"{x:.2f} GB" if x >= 0.01 else f"{x:.2g} GB"


def siren_parameters(width: int, sine_layers: int, in_features: int = 3) -> int:
    return (in_features + 1) * width + (sine_layers - 1) * (width + 1) * width + width + 1


def fit_bytes(
    voxels: int,
    batch: int,
    width: int,
    sine_layers: int,
    step: str = "autograd",
    workers: int = 1,
    block_rows: int | None = None,
) -> dict[str, int]:
    """The parts of a fit's working set, in bytes (see ``estimate_fit_bytes``)."""
    batch = min(batch, voxels)
    if step == "blocked":
        from volinr.training.siren_blocked import DEFAULT_BLOCK_ROWS

        rows = min(block_rows or DEFAULT_BLOCK_ROWS, batch)
        # each worker's sin and cos buffers per layer and two gradient buffers; the batch's
        # gathered coordinates, values and indices
        activations = workers * rows * width * FLOAT * (2 * sine_layers + 2) + batch * 24
    else:
        # autograd keeps pre-activations, sines and their gradients for the backward pass
        activations = batch * width * FLOAT * (3 * sine_layers + 2)
    # weights, gradients, Adam's two moments, the best snapshot
    model = siren_parameters(width, sine_layers) * FLOAT * 5
    return {
        "grid": voxels * FIT_BYTES_PER_VOXEL,
        f"activations of a {batch}-voxel batch": activations,
        # the full-grid evaluation runs in chunks of 8192 voxels, three activations live
        "evaluation pass": min(EVAL_CHUNK, voxels) * width * FLOAT * 3,
        "model and optimizer": model,
    }


def estimate_fit_bytes(
    voxels: int,
    batch: int,
    width: int,
    sine_layers: int,
    step: str = "autograd",
    workers: int = 1,
) -> int:
    """Bytes a SIREN fit holds at its peak: the whole grid's coordinates and values, one
    batch's activations for the forward and backward pass (autograd: about batch x width x
    4 bytes x (3 x sine_layers + 2); the blocked step: fixed blocks per worker), a chunk of
    the full-grid evaluation, the model and Adam's state."""
    return sum(fit_bytes(voxels, batch, width, sine_layers, step, workers).values())


def decode_tiles(chunk: int) -> int:
    """Voxels a decode chunk really holds: ``chunk`` rounded up to whole tiles."""
    return -(-max(1, chunk) // DECODE_TILE) * DECODE_TILE


def decode_chunk_bytes(chunk: int, width: int) -> int:
    """One decode chunk: its coordinates, indices and values per voxel, and three live
    width-wide activations (a sine layer's linear output, its scaling by omega_0, the sine)
    for one tile at a time."""
    voxels = decode_tiles(chunk)
    return voxels * (DECODE_BYTES_PER_CHUNK_VOXEL + FLOAT) + DECODE_TILE * 3 * width * FLOAT


def _refuse(what: str, parts: dict[str, int], available: int, where: str, hint: str):
    listed = ", ".join(f"{name} {gb(n)}" for name, n in parts.items() if n)
    raise InputError(
        f"{what}: needs an estimated {gb(sum(parts.values()))} ({listed}), more than the "
        f"{gb(available)} available ({where}); {hint}"
    )


def _available(device: torch.device) -> tuple[int | None, str]:
    available, source = devices.available_memory_bytes(device)
    return available, f"{source} on {device}"


def check_memory(what: str, parts: dict[str, int], hint: str) -> int:
    """Refuse (InputError) a CPU job whose estimated working set (``parts``, bytes by name)
    exceeds the memory available, before anything is allocated; returns the estimate."""
    need = sum(parts.values())
    available, where = _available(torch.device("cpu"))
    if available is not None and need > available:
        _refuse(what, parts, available, where, hint)
    return need


def check_fit(voxels: int, settings, device: torch.device, what: str = "SIREN fit") -> int:
    """Refuse (InputError) a fit whose working set exceeds the device's available memory;
    returns the estimate in bytes."""
    from volinr.training.siren import resolve_step

    step = resolve_step(settings, device)
    workers = torch.get_num_threads() if step == "blocked" and device.type == "cpu" else 1
    parts = fit_bytes(
        voxels, settings.batch_size, settings.width, settings.sine_layers, step, workers
    )
    need = sum(parts.values())
    available, where = _available(device)
    log.info("%s: estimated working set %s (%s step)", what, gb(need), step)
    if available is not None and need > available:
        _refuse(
            what,
            parts,
            available,
            where,
            "lower siren.batch_size or siren.width, or fit on a device with more memory",
        )
    return need


def plan_decode(
    shape: Sequence[int],
    width: int,
    chunk: int,
    device: torch.device,
    what: str = "decode",
    extra: dict[str, int] | None = None,
) -> int:
    """The chunk (voxels) to decode a grid of ``shape`` with: ``chunk``, or smaller where one
    chunk would not fit beside the output; InputError where the output itself (plus
    ``extra`` host arrays, e.g. an upsampled volume) would not fit."""
    voxels = math.prod(int(n) for n in shape)
    chunk = max(1, min(chunk, voxels))
    what = f"{what} onto a {'x'.join(str(int(n)) for n in shape)} grid"
    host = {"output": voxels * (FLOAT + 1), **(extra or {})}

    def with_chunk(size: int, parts: dict[str, int]) -> dict[str, int]:
        return parts | {f"a chunk of {size} voxels": decode_chunk_bytes(size, width)}

    hint = "decode on a machine with more memory, or onto a smaller grid"
    budget, where = _available(torch.device("cpu"))
    fixed = sum(host.values())  # on the host, beside the chunks on a CPU
    if device.type != "cpu":
        if budget is not None and fixed > budget:
            _refuse(what, with_chunk(chunk, host), budget, where, hint)
        budget, where = _available(device)
        host, fixed = {}, 0
    if budget is None:
        return chunk
    if fixed > budget:
        _refuse(what, with_chunk(chunk, host), budget, where, hint)
    planned = chunk
    while planned > MIN_DECODE_CHUNK and fixed + decode_chunk_bytes(planned, width) > budget:
        planned //= 2
    if fixed + decode_chunk_bytes(planned, width) > budget:
        _refuse(what, with_chunk(planned, host), budget, where, hint)
    if planned != chunk:
        log.warning(
            "%s: a chunk of %d voxels (%s) does not fit beside the output in the %s available "
            "(%s); decoding in chunks of %d voxels",
            what, chunk, gb(decode_chunk_bytes(chunk, width)), gb(budget), where, planned,
        )  # fmt: skip
    return planned
