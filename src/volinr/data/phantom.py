"""A synthetic head phantom (skull, brain, ventricles, texture, noise), deterministic from its
seed: for tests and quick runs.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from pydicom.uid import (
    generate_uid,
)

from volinr.data.geometry import Volume, floats, geometry_meta, geometry_problem, spacing_problem

# Bytes a voxel of the phantom holds while it is built (float64 arrays, a few at once).
PHANTOM_BYTES_PER_VOXEL = 6 * 8


def synthetic_head_phantom(
    shape: Sequence[int] = (48, 96, 96),
    seed: int = 0,
    spacing_mm: Sequence[float] = (2.5, 1.0, 1.0),
) -> Volume:
    """A CT-like head in HU, deterministic from ``seed``: air, scalp, a skull shell
    (~1000-1500 HU), grey (~40 HU) and white (~28 HU) matter with folded boundaries, two CSF
    ventricles (~5 HU), smooth texture and ~10 HU noise. Shapes and positions vary a little with
    the seed, so two seeds give two different heads."""
    from scipy.ndimage import gaussian_filter

    shape = tuple(int(n) for n in shape)
    if len(shape) != 3 or min(shape) < 4:
        raise ValueError(f"phantom shape must be 3 sizes of at least 4, got {shape}")
    problem = spacing_problem(spacing_mm, 3)
    if problem:
        raise ValueError(f"phantom spacing_mm {problem}")
    spacing = floats(spacing_mm)
    centre = (np.array(shape[::-1], float) - 1) / 2 * np.array(spacing[::-1])
    origin = -centre  # the centre of the volume at the scanner's isocentre
    positions = origin + np.arange(shape[0])[:, None] * spacing[0] * np.array([0.0, 0.0, 1.0])
    geometry = geometry_meta([1, 0, 0, 0, 1, 0], spacing, positions)
    problem = geometry_problem(geometry, shape)  # e.g. a spacing that puts slices 10 km apart
    if problem:
        raise ValueError(f"phantom geometry unusable: {problem}")
    from volinr import limits

    # the float64 grids, the smoothed texture and its noise held at once (measured: about 6)
    limits.check_memory(
        f"a phantom of shape {shape}",
        {"phantom arrays": PHANTOM_BYTES_PER_VOXEL * int(np.prod(shape))},
        "choose a smaller phantom.shape",
    )
    rng = np.random.default_rng(seed)

    def smooth_noise(sigma: float) -> np.ndarray:
        noise = gaussian_filter(rng.standard_normal(shape, dtype=np.float32), sigma)
        return noise / max(float(noise.std()), 1e-6)

    # Coordinates in -1..1 across the grid: the head fills the field of view at any size.
    z, y, x = (
        np.linspace(-1, 1, n, dtype=np.float32).reshape([-1 if a == axis else 1 for a in range(3)])
        for axis, n in enumerate(shape)
    )
    jitter = rng.uniform(-0.04, 0.04, size=8).astype(np.float32)
    centre_z = -0.2 + jitter[0]  # the vertex in the top slices, the brain cut at the bottom
    radius = np.sqrt(
        (x / (0.82 + jitter[1])) ** 2
        + ((y - jitter[2]) / (0.92 + jitter[3])) ** 2
        + ((z - centre_z) / (1.05 + jitter[4])) ** 2
    )
    radius = radius * (1 + 0.015 * smooth_noise(4.0))  # an irregular outline
    folds = smooth_noise(1.5)  # gyri: the grey/white boundary folds
    texture = smooth_noise(1.2)

    hu = np.full(shape, -1000.0, dtype=np.float32)
    hu[radius < 1.0] = 40.0  # scalp
    skull = (radius < 0.95) & (radius >= 0.86)
    # Denser tables outside, lighter diploe in the middle of the shell.
    depth = np.abs((radius - 0.905) / 0.045)
    hu[skull] = (1050.0 + 450.0 * depth + 60.0 * texture)[skull]
    brain = radius < 0.86
    white = radius * (1 + 0.08 * folds) < 0.68
    hu[brain] = 40.0 + 3.0 * texture[brain]
    hu[brain & white] = 28.0 + 3.0 * texture[brain & white]
    for side in (-1, 1):
        ventricle = (
            ((x - side * (0.13 + jitter[5])) / 0.07) ** 2
            + ((y - 0.05 - jitter[6]) / 0.28) ** 2
            + ((z - centre_z - 0.15 - jitter[7]) / 0.18) ** 2
        ) < 1
        hu[ventricle & brain] = 5.0
    hu += 10.0 * rng.standard_normal(shape, dtype=np.float32)

    described = f"shape={list(shape)}, seed={seed}, spacing_mm={spacing}"
    meta = {
        "source": f"phantom({described})",
        "kind": "phantom",
        "modality": "CT",
        "units": "HU",
        **geometry,
        # Fixed per phantom, so every export of one phantom shares its study in a viewer.
        "study_uid": generate_uid(entropy_srcs=[f"volinr phantom study {described}"]),
        "frame_of_reference_uid": generate_uid(entropy_srcs=[f"volinr phantom frame {described}"]),
        "phantom": {"shape": list(shape), "seed": int(seed), "spacing_mm": spacing},
    }
    # Integer HU, as a scanner stores them.
    return Volume(np.rint(hu).astype(np.float32), meta)
