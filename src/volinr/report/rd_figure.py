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


def method_styles() -> dict[str, type]:
    """Each kind of point (a table's ``family`` column) and the method class that draws it:
    its marker, whether its points are joined, whether it stands out (``volinr.methods``)."""
    from volinr import methods

    return {cls.kind: cls for cls in methods.families().values()}


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
    styles = method_styles()
    for ax, (column, label) in zip(axes, panels, strict=True):
        for (method, family), group in table.groupby(["method", "family"], sort=False):
            group = group.dropna(subset=[column]).sort_values("bits_per_voxel")
            if group.empty:
                continue
            style = styles.get(family)
            color, marker = palette[method], style.marker if style else "o"
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
                ms=8 if style and style.emphasised else 6,
                mec="black" if style and style.emphasised else None,
                color=color,
                label=method,
                capsize=2,
                ls="-" if style and style.joined else "",
            )
            amortized = group.get("bits_per_voxel_with_sr_amortized")
            if style and style.joined and amortized is not None and amortized.notna().any():
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
