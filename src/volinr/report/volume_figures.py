"""Volume mode's figures: quality slice by slice, and axial/coronal/sagittal planes."""

from __future__ import annotations

import logging
from pathlib import Path

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from volinr.report.figure_common import LOSSLESS_MARK, FigureInputs, mark_lossless, save_figure

log = logging.getLogger(__name__)


def per_slice_figure(inputs: FigureInputs, layers: list[int], path: Path) -> None:
    """Volumes: PSNR and SSIM of every axial slice, for each method."""
    frames = []
    for file in inputs.per_slice_files(layers):
        frame = pd.read_csv(file)
        layer = frame["layers"].iloc[0] if "layers" in frame else None
        name = str(frame["method"].iloc[0])
        frame["curve"] = f"{name}, {int(layer)} layers" if pd.notna(layer) else name
        frames.append(frame)
    data = pd.concat(frames, ignore_index=True)
    lossless = data[["slice", "psnr_8bit_db", "curve"]][data["psnr_8bit_db"] == np.inf]
    data["psnr_8bit_db"] = data["psnr_8bit_db"].replace(np.inf, np.nan)
    fig, axes = plt.subplots(1, 2, figsize=(13, 4))
    for ax, column, label in (
        (axes[0], "psnr_8bit_db", "PSNR (dB, 8-bit, volume min..max window)"),
        (axes[1], "ssim", "SSIM (HU, volume data range)"),
    ):
        sns.lineplot(data=data, x="slice", y=column, hue="curve", ax=ax, lw=1)
        ax.set_xlabel("axial slice of the evaluated volume")
        ax.set_ylabel(label)
        ax.legend(fontsize=7)
    title = "Per-slice quality: where along the volume each method loses"
    if mark_lossless(axes[0], lossless["slice"], lossless["psnr_8bit_db"]):
        title += f"\n{LOSSLESS_MARK}"
    axes[0].set_title(title, fontsize=9)
    save_figure(fig, path)


def _orthogonal_planes(volume: np.ndarray) -> list[np.ndarray]:
    slices, rows, cols = volume.shape
    return [volume[slices // 2], volume[:, rows // 2, :], volume[:, :, cols // 2]]


def orthogonal_figure(inputs: FigureInputs, layers: list[int], path: Path) -> None:
    """Volumes: axial, coronal and sagittal middle planes of the original and reconstructions,
    drawn with the voxels' physical aspect ratio."""
    spacing = inputs.hr_meta.get("spacing_mm") or [1.0, 1.0, 1.0]
    dz, dy, dx = (float(s) for s in spacing)
    rows = [("original", inputs.hr)]
    for n in layers:
        rows.append((f"ours, {n} layers", inputs.reconstruction("ours", n)))
        rows.append((f"SIREN on HR, {n} layers", inputs.reconstruction("baseline", n)))
    fig, axes = plt.subplots(len(rows), 3, figsize=(11, 3.2 * len(rows)), squeeze=False)
    for r, (name, volume) in enumerate(rows):
        for c, (plane, aspect, view) in enumerate(
            zip(
                _orthogonal_planes(volume),
                (dy / dx, dz / dx, dz / dy),
                ("axial", "coronal", "sagittal"),
                strict=True,
            )
        ):
            ax = axes[r, c]
            ax.imshow(
                plane, cmap="gray", vmin=inputs.window[0], vmax=inputs.window[1], aspect=aspect
            )
            ax.set_title(f"{name}: {view}", fontsize=9)
            ax.set_axis_off()
    save_figure(fig, path)
