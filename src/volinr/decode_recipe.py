"""What a file tells a decoder to do, checked before anything is built.

A container header (and, for its grid and intensity range, a SIREN weights file) claims an
architecture, a grid (shape and physical extent), the intensity range its outputs map to, and
a recipe for restoring full resolution. ``check_decoding`` checks every field the decoder uses
against the architecture and the documented limits of ``volinr.limits``, in one place, so that
a file with a valid checksum but an inconsistent header is refused with the field named
(``InputError``, exit 2), never decoded into an inverted image, never a traceback, and never a
network of gigabytes claimed by a file of a few hundred bytes.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

import numpy as np

from volinr import limits
from volinr.errors import InputError

UPSAMPLE_METHODS = ("none", "sr", "lanczos", "bicubic")
SHA256_HEX = re.compile(r"[0-9a-f]{64}")
FLOAT32_MAX = float(np.finfo(np.float32).max)
# Siren's own defaults, for a claim that leaves a field out
SIREN_DEFAULTS = {"in_features": 3, "hidden_features": 128, "sine_layers": 2, "out_features": 1}


def _is_int(value: Any) -> bool:
    return type(value) is int  # not bool, not a float that happens to be whole


def _is_number(value: Any) -> bool:
    return type(value) in (int, float) and math.isfinite(value)


def check_decoding(
    source: str,
    grid_shape: Any,
    grid_extent: Any,
    value_range: Any,
    architecture: Mapping[str, Any] | None = None,
    recipe: Any = None,
) -> None:
    """InputError naming ``source`` and the field, unless every claim is usable.

    ``architecture`` (a container's; a weights file's is backed by its stored tensors) and
    ``recipe`` (a container's ``extra``) are checked when given.
    """
    voxels = _check_grid(source, grid_shape, grid_extent)
    _check_value_range(source, value_range)
    if architecture is not None:
        weights = _check_architecture(source, architecture)
        if weights * voxels > limits.MAX_DECODE_MULTIPLY_ADDS:
            raise InputError(
                f"{source}: decoding {weights} SIREN weights on {voxels} voxels takes "
                f"{weights * voxels:.3g} multiply-adds, more than the "
                f"{limits.MAX_DECODE_MULTIPLY_ADDS:.3g} a file may ask for "
                "(volinr.limits.MAX_DECODE_MULTIPLY_ADDS)"
            )
    if recipe is not None:
        _check_recipe(source, recipe, grid_shape)


def _check_grid(source: str, shape: Any, extent: Any) -> int:
    if not (
        isinstance(shape, list)
        and len(shape) in (2, 3)  # a slice or a volume
        and all(_is_int(n) and n > 0 for n in shape)
        and isinstance(extent, list)
        and len(extent) == len(shape)
        and all(_is_number(e) and e > 0 for e in extent)
    ):
        raise InputError(f"{source}: bad grid (shape {shape!r}, extent {extent!r})")
    if not all(limits.MIN_EXTENT_MM <= e <= limits.MAX_EXTENT_MM for e in extent):
        raise InputError(
            f"{source}: grid_extent {extent} mm outside {limits.MIN_EXTENT_MM:g}.."
            f"{limits.MAX_EXTENT_MM:g} mm per axis (volinr.limits; far outside it float32 "
            "coordinates underflow or overflow)"
        )
    voxels = math.prod(shape)
    if voxels > limits.MAX_DECODE_VOXELS:
        raise InputError(
            f"{source}: grid_shape {shape} has {voxels} voxels, more than the "
            f"{limits.MAX_DECODE_VOXELS} a file may ask for (volinr.limits.MAX_DECODE_VOXELS)"
        )
    return voxels


def _check_value_range(source: str, value_range: Any) -> None:
    if not (
        isinstance(value_range, list)
        and len(value_range) == 2
        and all(_is_number(v) and abs(v) <= FLOAT32_MAX for v in value_range)
    ):
        raise InputError(
            f"{source}: bad value_range {value_range!r} (two finite numbers within float32)"
        )
    low, high = value_range
    if not low < high:
        # the decoder maps the SIREN's -1..1 onto low..high: reversed, the image is inverted
        raise InputError(
            f"{source}: value_range {value_range} is {'reversed' if low > high else 'empty'}: "
            "its low end must be below its high end"
        )


def _check_architecture(source: str, architecture: Any) -> int:
    """The claimed SIREN's weight count, after checking its fields against the limits."""
    if not isinstance(architecture, Mapping):
        raise InputError(f"{source}: bad architecture {architecture!r}")
    claim = {**SIREN_DEFAULTS, **architecture}
    inputs, outputs = claim["in_features"], claim["out_features"]
    if inputs != 3 or outputs != 1 or not (_is_int(inputs) and _is_int(outputs)):
        raise InputError(
            f"{source}: a SIREN of {inputs!r} inputs and {outputs!r} outputs; the decoder "
            "needs 3 and 1"
        )
    omega = claim.get("omega_0", 30.0)
    if not (_is_number(omega) and omega > 0):
        raise InputError(f"{source}: a SIREN with omega_0 {omega!r}; it must be positive")
    for field, most in (
        ("hidden_features", limits.MAX_SIREN_WIDTH),
        ("sine_layers", limits.MAX_SINE_LAYERS),
    ):
        value = claim[field]
        if not (_is_int(value) and 1 <= value <= most):
            raise InputError(
                f"{source}: architecture {field} {value!r}: an integer from 1 to {most} "
                "(volinr.limits)"
            )
    return limits.siren_parameters(claim["hidden_features"], claim["sine_layers"])


def _check_recipe(source: str, recipe: Any, grid_shape: list[int]) -> None:
    """A container's ``extra``: what follows the SIREN (see ``super_resolution.upsample_array``)."""
    if not isinstance(recipe, dict):
        raise InputError(f"{source}: extra is not a JSON object")
    method = recipe.get("upsample", "none")
    if method not in UPSAMPLE_METHODS:
        raise InputError(
            f"{source}: extra.upsample {method!r} is not one of {', '.join(UPSAMPLE_METHODS)}"
        )
    if method == "none":
        return
    target = recipe.get("target_shape")
    if not (isinstance(target, list) and all(_is_int(n) and n > 0 for n in target)):
        raise InputError(
            f"{source}: extra.target_shape {target!r}: upsampling by {method} needs the target "
            "grid as positive integers"
        )
    if len(target) != len(grid_shape) or any(
        t < g for t, g in zip(target, grid_shape, strict=True)
    ):
        raise InputError(
            f"{source}: extra.target_shape {target} does not agree with grid_shape "
            f"{grid_shape}: the same number of axes, none smaller"
        )
    if math.prod(target) > limits.MAX_DECODE_VOXELS:
        raise InputError(
            f"{source}: extra.target_shape {target} has {math.prod(target)} voxels, more than "
            f"the {limits.MAX_DECODE_VOXELS} a file may ask for (volinr.limits.MAX_DECODE_VOXELS)"
        )
    from volinr.super_resolution import Z_RESTORE_METHODS

    z_restore = recipe.get("z_restore", "lanczos")
    if z_restore not in Z_RESTORE_METHODS:
        raise InputError(
            f"{source}: extra.z_restore {z_restore!r} is not one of {', '.join(Z_RESTORE_METHODS)}"
        )
    if method == "sr":
        digest = recipe.get("sr_model_sha256")
        if not (isinstance(digest, str) and SHA256_HEX.fullmatch(digest)):
            raise InputError(
                f"{source}: extra.sr_model_sha256 {digest!r} is not a sha256 (64 lowercase hex "
                "digits): the SR model it needs cannot be checked"
            )
