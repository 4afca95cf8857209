"""The paper's figures, drawn from the pipeline's outputs (matplotlib + seaborn).

Images are shown through the tissue window of the tables (padding outside the scanner's field
of view would otherwise take most of the grey levels); a 3D volume shows its middle slice.
"""

from __future__ import annotations

import logging
from pathlib import Path

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from volinr.report.figure_common import (
    FigureInputs,
    db_label,
    display_slice,
    draw_curves,
    save_figure,
    show_image,
)

log = logging.getLogger(__name__)


def lr_fit_figure(inputs: FigureInputs, layers: int, path: Path) -> None:
    """Figures 4-6: the LR slice, its SIREN reconstruction, PSNR and loss curves."""
    lr_hat = inputs.reconstruction("ours", layers, "lr")
    fig, axes = plt.subplots(1, 4, figsize=(16, 4))
    show_image(axes[0], inputs.lr, inputs.window, f"original LR {inputs.lr.shape}")
    show_image(axes[1], lr_hat, inputs.window, f"SIREN ({layers} layers) on LR")
    draw_curves(axes[2], axes[3], inputs.curve("lr", layers), f"{layers} layers on LR")
    save_figure(fig, path)


def pipeline_figure(inputs: FigureInputs, layers: int, path: Path) -> None:
    """Figures 7-9: original HR, original LR, reconstructed LR, reconstructed HR."""
    lr_hat = inputs.reconstruction("ours", layers, "lr")
    hr_hat = inputs.reconstruction("ours", layers)
    psnr = inputs.psnr("ours", layers)
    fig, axes = plt.subplots(1, 4, figsize=(16, 4.4))
    show_image(axes[0], inputs.hr, inputs.window, f"original HR {inputs.hr.shape}")
    show_image(axes[1], inputs.lr, inputs.window, "original LR (Lanczos x4)")
    show_image(axes[2], lr_hat, inputs.window, f"reconstructed LR (SIREN, {layers} layers)")
    title = f"reconstructed HR (SRDenseNet), seed {inputs.seed}: {db_label(psnr)}"
    show_image(axes[3], hr_hat, inputs.window, title)
    save_figure(fig, path)


def baseline_figure(inputs: FigureInputs, layers: int, path: Path) -> None:
    """Figures 10-12: the SIREN fitted on the full-resolution slice."""
    hr_hat = inputs.reconstruction("baseline", layers)
    psnr = inputs.psnr("baseline", layers)
    fig, axes = plt.subplots(1, 4, figsize=(16, 4))
    show_image(axes[0], inputs.hr, inputs.window, "original HR")
    title = f"SIREN ({layers} layers) on HR, seed {inputs.seed}: {db_label(psnr)}"
    show_image(axes[1], hr_hat, inputs.window, title)
    draw_curves(axes[2], axes[3], inputs.curve("hr", layers), f"{layers} layers on HR")
    save_figure(fig, path)


def bars_figure(inputs: FigureInputs, path: Path) -> None:
    _bars(inputs.ours_table, inputs.base_table, path)


def comparison_figure(inputs: FigureInputs, layers: list[int], path: Path) -> None:
    ours = {n: inputs.reconstruction("ours", n) for n in layers}
    baseline = {n: inputs.reconstruction("baseline", n) for n in layers}
    titles = {
        (kind, n): f"{name}, {n} layers, seed {inputs.seed}\n{db_label(inputs.psnr(kind, n))}"
        for kind, name in (("ours", "ours"), ("baseline", "SIREN on HR"))
        for n in layers
    }
    _comparison(inputs.hr, ours, baseline, titles, inputs.window, path)


def sr_training_figure(curve_path: Path, path: Path) -> None:
    _sr_training(curve_path, path)


def _bars(ours: pd.DataFrame, baseline: pd.DataFrame, path: Path) -> None:
    """Figure 13: PSNR, training time and memory, ours vs baseline, paper and measured."""
    quantities = [
        ("best_psnr_db", "best PSNR (dB)"),
        ("train_seconds_per_50k", "training s / 50k iterations"),
        ("memory_kb", "memory (KB)"),
    ]
    rows = []
    for method, table in (("SIREN on HR (baseline)", baseline), ("SIREN on LR + SR (ours)", ours)):
        for layers, row in table.iterrows():
            for column, name in quantities:
                for source in ("paper", "ours"):
                    rows.append(
                        {
                            "method": method,
                            "layers": layers,
                            "quantity": name,
                            "source": "published" if source == "paper" else "measured",
                            "value": row[f"{column}_{source}"],
                        }
                    )
    data = pd.DataFrame(rows)
    lossless = bool((data["value"] == np.inf).any())
    data["value"] = data["value"].replace(np.inf, np.nan)  # a bar cannot be infinite
    grid = sns.catplot(
        data=data,
        x="layers",
        y="value",
        hue="method",
        row="source",
        col="quantity",
        kind="bar",
        sharey=False,
        height=2.8,
        aspect=1.2,
        margin_titles=True,
    )
    grid.set_titles(row_template="{row_name}", col_template="{col_name}")
    grid.figure.suptitle(
        "Figure 13: baseline vs the paper's method (top: paper, bottom: ours)"
        + ("; no bar: PSNR ∞ (lossless)" if lossless else ""),
        y=1.03,
    )
    save_figure(grid.figure, path)


def _comparison(hr, ours, baseline, titles, window, path: Path) -> None:
    """Figure 14: reconstructions side by side, a zoomed inset and the error map."""
    hr2d = display_slice(hr)
    rows, cols = hr2d.shape
    zoom = (slice(rows // 3, rows // 3 + rows // 4), slice(cols // 3, cols // 3 + cols // 4))
    panels = [("original", hr2d, None)]
    for kind, images in (("baseline", baseline), ("ours", ours)):
        panels += [(titles[kind, n], display_slice(images[n]), n) for n in sorted(images)]
    # The zoom uses its own window, twice the 1st..99th percentile range of the original there,
    # narrow enough to show tissue texture, wide enough not to saturate the reconstructions.
    low, high = np.percentile(hr2d[zoom], [1, 99])
    zoom_window = ((3 * low - high) / 2, (3 * high - low) / 2)
    errors = [np.abs(p - hr2d) for _, p, _ in panels[1:]]
    error_max = float(np.percentile(np.concatenate([e.ravel() for e in errors]), 99.5))
    fig, axes = plt.subplots(3, len(panels), figsize=(2.6 * len(panels), 8))
    for k, (title, image, _) in enumerate(panels):
        show_image(axes[0, k], image, window, title)
        axes[0, k].add_patch(
            plt.Rectangle(
                (zoom[1].start, zoom[0].start),
                cols // 4,
                rows // 4,
                fill=False,
                color="yellow",
                lw=1,
            )
        )
        show_image(axes[1, k], image[zoom], zoom_window, "zoom")
        axes[2, k].set_axis_off()
        if k:
            shown = axes[2, k].imshow(errors[k - 1], cmap="magma", vmin=0, vmax=error_max)
            axes[2, k].set_title("|error| (HU)", fontsize=9)
    fig.colorbar(shown, ax=axes[2, :].tolist(), shrink=0.8, label="absolute error (HU)")
    save_figure(fig, path)


def _sr_training(curve_path: Path, path: Path) -> None:
    curve = pd.read_csv(curve_path)
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(curve["step"], curve["monitor_psnr_db"], label="SRDenseNet")
    ax.plot(curve["step"], curve["monitor_bicubic_psnr_db"], "--", label="bicubic")
    ax.set_xlabel("training step")
    ax.set_ylabel("PSNR (dB, normalised scale)")
    ax.set_title("SR pretraining: fixed monitoring patches from the training images", fontsize=9)
    ax.legend()
    save_figure(fig, path)
