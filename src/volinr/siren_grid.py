"""A fitted SIREN's grid: voxel-centre coordinates in physical proportions, the intensity
scaling, the weights file, and decoding the network back onto a grid (chunk by chunk).
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from tqdm import tqdm

from volinr.checkpoints import load_checkpoint, save_checkpoint
from volinr.decode_recipe import check_decoding
from volinr.errors import InputError
from volinr.limits import DECODE_TILE, decode_tiles
from volinr.models.siren import Siren

if TYPE_CHECKING:  # types only: training.siren imports this module
    from volinr.training.siren import FitResult

log = logging.getLogger(__name__)


WEIGHTS_FORMAT = "volinr-siren-1"


def grid_extent(shape: Sequence[int], spacing_mm: Sequence[float] | None = None) -> list[float]:
    """Physical extent (voxels x spacing) of each axis; unit spacing when none is known.

    A spacing that does not have one entry per axis (e.g. a slice's PixelSpacing given for a
    volume) is ignored rather than guessed.
    """
    if spacing_mm is None or len(spacing_mm) != len(shape) or min(spacing_mm) <= 0:
        spacing_mm = [1.0] * len(shape)
    return [float(n) * float(s) for n, s in zip(shape, spacing_mm, strict=True)]


def grid_coordinates(
    shape: Sequence[int],
    extent: Sequence[float] | None = None,
    device: torch.device | str = "cpu",
    start: int = 0,
    stop: int | None = None,
) -> torch.Tensor:
    """(N, 3) SIREN inputs (x, y, z) of the voxels ``start..stop`` (C order) of a (rows, cols)
    slice or a (slices, rows, cols) volume; z = 0 for a slice.

    Coordinates are voxel centres in physical space, centred on the grid and divided by half
    the longest extent: the longest axis spans (-1, 1) and shorter or anisotropic axes keep
    their true proportions. A grid of another shape over the same extent (the LR grid, or a
    decode at full resolution) therefore lands on the same physical positions.
    """
    shape = tuple(int(n) for n in shape)
    if len(shape) not in (2, 3):
        raise ValueError(f"a SIREN grid is 2D or 3D, got shape {shape}")
    extent = grid_extent(shape) if extent is None else [float(e) for e in extent]
    count = math.prod(shape)
    stop = count if stop is None else min(stop, count)
    flat = torch.arange(start, stop, device=device)
    half_longest = max(extent) / 2
    axes = []
    for n, length in zip(reversed(shape), reversed(extent), strict=True):
        index = flat % n
        flat = flat // n
        # centre of voxel i at (i + 0.5) * length / n, measured from the grid's centre
        axes.append(((index.to(torch.float32) + 0.5) * (length / n) - length / 2) / half_longest)
    if len(shape) == 2:
        axes.append(torch.zeros_like(axes[0]))
    return torch.stack(axes, dim=-1)  # (x, y, z): columns, rows, slices


def coordinate_grid(
    shape: Sequence[int],
    device: torch.device | str = "cpu",
    extent: Sequence[float] | None = None,
) -> torch.Tensor:
    """(N, 3) coordinates of every voxel of a grid, in C order (see ``grid_coordinates``)."""
    return grid_coordinates(shape, extent, device)


def scale_to_unit(
    values: np.ndarray, lo: float, hi: float, slab_voxels: int = 1 << 22
) -> np.ndarray:
    """lo..hi -> -1..1 as float32, computed in float64 slab by slab (no float64 copy of a
    volume): distinct int32 values above 2^24 do not merge in a float32 copy, nor does
    ``values - lo`` overflow for float32 values near its limits."""
    values = np.asarray(values)
    flat = values.reshape(-1)
    out = np.empty(flat.shape, np.float32)
    span = float(hi) - float(lo)
    for start in range(0, flat.size, slab_voxels):
        part = np.asarray(flat[start : start + slab_voxels], np.float64)
        out[start : start + slab_voxels] = (part - lo) / span * 2.0 - 1.0
    return out.reshape(values.shape)


def save_siren(path: str | os.PathLike, result: FitResult) -> int:
    """Write the weights and everything needed to decode them; returns the file's bytes."""
    return save_checkpoint(
        path,
        WEIGHTS_FORMAT,
        result.model,
        value_range=list(result.value_range),
        grid_shape=list(result.grid_shape),
        grid_extent=list(result.grid_extent),
    )


def load_siren(
    path: str | os.PathLike, device: torch.device | str = "cpu"
) -> tuple[Siren, dict[str, Any]]:
    model, payload = load_checkpoint(path, WEIGHTS_FORMAT, Siren, device)
    # What decoding needs beside the weights; a foreign or edited file may lack or bend it.
    config, shape = model.config, payload.get("grid_shape")
    if config["in_features"] != 3 or config["out_features"] != 1:
        raise InputError(f"{path}: a SIREN of {config['in_features']} inputs and "
                         f"{config['out_features']} outputs; decoding needs 3 and 1")  # fmt: skip
    if not (
        isinstance(shape, list)
        and len(shape) in (2, 3)
        and all(isinstance(n, int) and n > 0 for n in shape)
    ):
        raise InputError(f"{path}: bad or missing grid_shape {shape!r}")
    extent, value_range = payload.get("grid_extent"), payload.get("value_range")
    if not (
        isinstance(extent, list)
        and len(extent) == len(shape)
        and all(isinstance(e, int | float) and math.isfinite(e) and e > 0 for e in extent)
    ):
        raise InputError(f"{path}: bad or missing grid_extent {extent!r}")
    if not (
        isinstance(value_range, list)
        and len(value_range) == 2
        and all(isinstance(v, int | float) and math.isfinite(v) for v in value_range)
    ):
        raise InputError(f"{path}: bad or missing value_range {value_range!r}")
    # as a container's: a reversed range decodes an inverted image, an extreme extent or range
    # overflows float32 (the architecture is backed by the tensors the file stores)
    check_decoding(str(path), shape, extent, value_range)
    return model, payload


def decode_siren(
    model: Siren,
    shape: Sequence[int],
    value_range: tuple[float, float],
    device: torch.device | str = "cpu",
    extent: Sequence[float] | None = None,
    chunk: int = 1 << 18,
    progress: bool | None = None,
) -> np.ndarray:
    """Evaluate the SIREN on every voxel of a grid of ``shape`` spanning ``extent`` (the fit's
    physical extent; default: the grid's own, unit spacing).

    Coordinates are made chunk by chunk, so the memory is the output plus one chunk: a
    512x512x463 volume decodes without its 1.4 GB coordinate array.
    """
    shape = tuple(int(n) for n in shape)
    extent = grid_extent(shape) if extent is None else extent
    count = math.prod(shape)
    out = np.empty(count, np.float32)
    if progress is None:
        progress = os.isatty(2)
    # The network sees whole tiles of DECODE_TILE voxels (the last one padded), each voxel at
    # the same place in its tile whatever the chunk: the last bits of the products and of the
    # vectorised sine depend on a value's place in a batch (SIMD lanes, scalar tails).
    chunk = decode_tiles(chunk)
    starts = range(0, count, chunk)
    with torch.inference_mode():
        for start in tqdm(starts, desc="decode", unit="chunk", disable=not progress):
            coords = grid_coordinates(shape, extent, device, start, start + chunk)
            size = coords.shape[0]
            padded = decode_tiles(size)
            if padded > size:
                coords = torch.cat([coords, coords.new_zeros(padded - size, coords.shape[1])])
            values = torch.cat([model(tile)[:, 0] for tile in coords.split(DECODE_TILE)])
            out[start : start + size] = values[:size].float().cpu().numpy()
    lo, hi = value_range
    # in place (a plain (v + 1) / 2 x (hi - lo) + lo would allocate two more volumes)
    out += 1.0
    out *= (hi - lo) / 2.0
    out += lo
    return out.reshape(shape)
