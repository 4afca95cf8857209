"""The rate-distortion figure: every method's points on the same image, PSNR against bits per
voxel (log scale), in two panels (8-bit and native PSNR).
"""

from __future__ import annotations

import logging
from pathlib import Path

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from volinr.report.figure_common import LOSSLESS_MARK, mark_lossless, save_figure

log = logging.getLogger(__name__)


RD_MARKERS = {
    "siren": "o",
    "lr + upsampling": "s",
    "codec": ".",
    "neural codec": "D",
    "published": "*",
}
CURVE_FAMILIES = ("siren", "neural codec")  # points joined by a line (one per setting)


def rate_distortion_figure(table: pd.DataFrame, amortize_over: int, path: Path) -> None:
    """PSNR (8-bit, native) and SSIM against bits per voxel: codecs and the neural codec's
    lambdas as curves, SIREN points with 95% intervals over seeds (filled: SR model not
    counted; hollow: SR amortized over ``amortize_over`` volumes), LR + upsampling, and the
    paper's published points."""
    panels = [
        ("psnr_8bit_minmax_db", "PSNR (dB, 8-bit, min..max window)"),
        ("psnr_native_db", "PSNR (dB, native HU)"),
        ("ssim", "SSIM"),
    ]
    fig, axes = plt.subplots(1, 3, figsize=(18, 5.5))
    infinite_psnr = False
    palette = dict(
        zip(
            table["method"].unique(),
            sns.color_palette("tab20", table["method"].nunique()),
            strict=True,
        )
    )
    for ax, (column, label) in zip(axes, panels, strict=True):
        for (method, family), group in table.groupby(["method", "family"], sort=False):
            group = group.dropna(subset=[column]).sort_values("bits_per_voxel")
            if group.empty:
                continue
            color, marker = palette[method], RD_MARKERS.get(family, "o")  # a new kind: a dot
            if family == "codec":
                lossy = group[group["setting"] != "lossless"]
                ax.plot(
                    lossy["bits_per_voxel"],
                    lossy[column],
                    "-",
                    marker=marker,
                    color=color,
                    label=method,
                    lw=1,
                )
                lossless = group[group["setting"] == "lossless"]
                ax.plot(lossless["bits_per_voxel"], lossless[column], "x", color=color, ms=7)
                continue
            if family == "published":
                ax.plot(
                    group["bits_per_voxel"],
                    group[column],
                    "*",
                    ms=12,
                    color=color,
                    mec="black",
                    label=method,
                )
                continue
            error = group["psnr_ci95_db"] if column == "psnr_8bit_minmax_db" else None
            ax.errorbar(
                group["bits_per_voxel"],
                group[column],
                yerr=error,
                fmt=marker,
                ms=8 if family == "neural codec" else 6,
                mec="black" if family == "neural codec" else None,  # stands out among codecs
                color=color,
                label=method,
                capsize=2,
                ls="-" if family in CURVE_FAMILIES else "",
            )
            if family == "siren" and group["bits_per_voxel_with_sr_amortized"].notna().any():
                shifted = group["bits_per_voxel_with_sr_amortized"]
                if not np.allclose(shifted, group["bits_per_voxel"]):
                    ax.plot(shifted, group[column], marker, ms=6, mfc="none", color=color)
        ax.set_xscale("log")
        ax.set_xlabel("bits per voxel (log)")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3, which="both")
        infinite_psnr |= mark_lossless(ax, table["bits_per_voxel"], table[column])
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5))
    fig.suptitle(
        "Rate-distortion from real files. Hollow: the SR model's bytes amortized over "
        f"{amortize_over} volumes; x: lossless codec settings; stars: the paper's published "
        "points" + (f"; {LOSSLESS_MARK}" if infinite_psnr else ""),
        fontsize=10,
    )
    save_figure(fig, path)
