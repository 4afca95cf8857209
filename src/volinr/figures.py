"""The paper's figures, drawn from the pipeline's outputs (matplotlib + seaborn).

Images are shown through the tissue window of the tables (padding outside the scanner's field
of view would otherwise take most of the grey levels); a 3D volume shows its middle slice.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from volinr import provenance  # noqa: E402
from volinr.io import load_array, read_json
from volinr.outputs import atomic_path

log = logging.getLogger(__name__)
_PROVENANCE: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar(
    "provenance", default=None
)
PNG_KEY = "Provenance"  # the PNG text chunk holding the provenance block (JSON)


@contextlib.contextmanager
def recording(block: dict[str, Any]) -> Iterator[None]:
    """Figures saved inside carry ``block`` (else one without settings)."""
    token = _PROVENANCE.set(block)
    try:
        yield
    finally:
        _PROVENANCE.reset(token)


def display_slice(array: np.ndarray) -> np.ndarray:
    return array[array.shape[0] // 2] if array.ndim == 3 else array


def _save(fig: plt.Figure, path: Path) -> None:
    block = _PROVENANCE.get() or provenance.record(None)
    with atomic_path(path) as tmp:
        fig.savefig(
            tmp,
            dpi=110,
            bbox_inches="tight",
            format="png",
            metadata={PNG_KEY: json.dumps(block)},
        )
    plt.close(fig)


def _db(psnr: float) -> str:
    """A PSNR for a title; infinite where the images are identical (MSE 0)."""
    return "∞ dB (lossless)" if psnr == np.inf else f"{psnr:.2f} dB"


LOSSLESS_MARK = "▲ at the top edge: PSNR ∞ (lossless)"


def _mark_lossless(ax, x: pd.Series, y: pd.Series) -> bool:
    """Infinite PSNRs, which matplotlib would drop silently, as markers on the top edge."""
    infinite = y.astype(float) == np.inf
    if infinite.any():
        limits = ax.get_ylim()
        ax.plot(x[infinite], [limits[1]] * int(infinite.sum()), "^k", ms=7, clip_on=False)
        ax.set_ylim(limits)  # the marker must not move the edge it marks
    return bool(infinite.any())


def _image(ax, array, window, title):
    ax.imshow(display_slice(array), cmap="gray", vmin=window[0], vmax=window[1])
    ax.set_title(title, fontsize=9)
    ax.set_axis_off()


def _curves(ax_psnr, ax_loss, curve: pd.DataFrame, label: str) -> None:
    evaluated = curve[pd.to_numeric(curve["eval_psnr_db"], errors="coerce").notna()]
    ax_psnr.plot(curve["iteration"], curve["train_psnr_db"], lw=0.6, alpha=0.5, label="batch")
    ax_psnr.plot(
        evaluated["iteration"],
        evaluated["eval_psnr_db"].astype(float),
        "o-",
        ms=2,
        label="full image",
    )
    best = evaluated["eval_psnr_db"].astype(float).max()
    ax_psnr.set_title(f"PSNR during training ({label}; best {best:.2f} dB)", fontsize=9)
    ax_psnr.set_xlabel("iteration")
    ax_psnr.set_ylabel("PSNR (dB, own min..max window)")
    ax_psnr.legend(fontsize=7)
    ax_loss.semilogy(curve["iteration"], curve["train_loss"], lw=0.8)
    ax_loss.set_title(f"MSE loss (final {curve['train_loss'].iloc[-1]:.3g})", fontsize=9)
    ax_loss.set_xlabel("iteration")


class FigureInputs:
    """Loads what the figures show from a results folder, on demand."""

    def __init__(self, results: Path, tables_dir: Path, seed: int):
        self.results, self.seed = results, seed
        self.hr, self.hr_meta = load_array(results / "data/eval.npy")
        self.lr, _ = load_array(results / "data/lr.npy")
        self.ours_table = pd.read_csv(tables_dir / "table4_ours.csv").set_index("layers")
        self.base_table = pd.read_csv(tables_dir / "table5_baseline.csv").set_index("layers")
        # Display through a tissue window: padding (e.g. -3024 HU) would take most grey levels.
        self.window = (max(float(self.hr.min()), -1024.0), float(self.hr.max()))

    def array(self, relative: str) -> np.ndarray:
        return load_array(self.results / relative)[0]

    def run(self, layers: int) -> str:
        return f"L{layers}_s{self.seed}"

    def curve(self, target: str, layers: int) -> pd.DataFrame:
        return pd.read_csv(self.results / f"fits/{target}/{self.run(layers)}/curve.csv")

    def psnr(self, kind: str, layers: int) -> float:
        """The 8-bit PSNR of the reconstruction shown (this seed's), not the tables' mean."""
        return read_json(self.results / f"metrics/{kind}/{self.run(layers)}.json")[
            "psnr_8bit_minmax_db"
        ]


def lr_fit_figure(inputs: FigureInputs, layers: int, path: Path) -> None:
    """Figures 4-6: the LR slice, its SIREN reconstruction, PSNR and loss curves."""
    lr_hat = inputs.array(f"recon/ours/{inputs.run(layers)}/lr.npy")
    fig, axes = plt.subplots(1, 4, figsize=(16, 4))
    _image(axes[0], inputs.lr, inputs.window, f"original LR {inputs.lr.shape}")
    _image(axes[1], lr_hat, inputs.window, f"SIREN ({layers} layers) on LR")
    _curves(axes[2], axes[3], inputs.curve("lr", layers), f"{layers} layers on LR")
    _save(fig, path)


def pipeline_figure(inputs: FigureInputs, layers: int, path: Path) -> None:
    """Figures 7-9: original HR, original LR, reconstructed LR, reconstructed HR."""
    run = inputs.run(layers)
    lr_hat = inputs.array(f"recon/ours/{run}/lr.npy")
    hr_hat = inputs.array(f"recon/ours/{run}/hr.npy")
    psnr = inputs.psnr("ours", layers)
    fig, axes = plt.subplots(1, 4, figsize=(16, 4.4))
    _image(axes[0], inputs.hr, inputs.window, f"original HR {inputs.hr.shape}")
    _image(axes[1], inputs.lr, inputs.window, "original LR (Lanczos x4)")
    _image(axes[2], lr_hat, inputs.window, f"reconstructed LR (SIREN, {layers} layers)")
    title = f"reconstructed HR (SRDenseNet), seed {inputs.seed}: {_db(psnr)}"
    _image(axes[3], hr_hat, inputs.window, title)
    _save(fig, path)


def baseline_figure(inputs: FigureInputs, layers: int, path: Path) -> None:
    """Figures 10-12: the SIREN fitted on the full-resolution slice."""
    hr_hat = inputs.array(f"recon/baseline/{inputs.run(layers)}/hr.npy")
    psnr = inputs.psnr("baseline", layers)
    fig, axes = plt.subplots(1, 4, figsize=(16, 4))
    _image(axes[0], inputs.hr, inputs.window, "original HR")
    title = f"SIREN ({layers} layers) on HR, seed {inputs.seed}: {_db(psnr)}"
    _image(axes[1], hr_hat, inputs.window, title)
    _curves(axes[2], axes[3], inputs.curve("hr", layers), f"{layers} layers on HR")
    _save(fig, path)


def bars_figure(inputs: FigureInputs, path: Path) -> None:
    _bars(inputs.ours_table, inputs.base_table, path)


def comparison_figure(inputs: FigureInputs, layers: list[int], path: Path) -> None:
    ours = {n: inputs.array(f"recon/ours/{inputs.run(n)}/hr.npy") for n in layers}
    baseline = {n: inputs.array(f"recon/baseline/{inputs.run(n)}/hr.npy") for n in layers}
    titles = {
        (kind, n): f"{name}, {n} layers, seed {inputs.seed}\n{_db(inputs.psnr(kind, n))}"
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
    _save(grid.figure, path)


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
        _image(axes[0, k], image, window, title)
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
        _image(axes[1, k], image[zoom], zoom_window, "zoom")
        axes[2, k].set_axis_off()
        if k:
            shown = axes[2, k].imshow(errors[k - 1], cmap="magma", vmin=0, vmax=error_max)
            axes[2, k].set_title("|error| (HU)", fontsize=9)
    fig.colorbar(shown, ax=axes[2, :].tolist(), shrink=0.8, label="absolute error (HU)")
    _save(fig, path)


def _sr_training(curve_path: Path, path: Path) -> None:
    curve = pd.read_csv(curve_path)
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(curve["step"], curve["monitor_psnr_db"], label="SRDenseNet")
    ax.plot(curve["step"], curve["monitor_bicubic_psnr_db"], "--", label="bicubic")
    ax.set_xlabel("training step")
    ax.set_ylabel("PSNR (dB, normalised scale)")
    ax.set_title("SR pretraining: fixed monitoring patches from the training images", fontsize=9)
    ax.legend()
    _save(fig, path)


def per_slice_figure(inputs: FigureInputs, layers: list[int], path: Path) -> None:
    """Volumes: PSNR and SSIM of every axial slice, for each method."""
    files = [
        inputs.results / f"metrics/{kind}/{inputs.run(n)}.slices.csv"
        for n in layers
        for kind in ("ours", "baseline")
    ]
    files += sorted((inputs.results / "metrics/reference").glob("*.slices.csv"))
    frames = []
    for file in files:
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
    if _mark_lossless(axes[0], lossless["slice"], lossless["psnr_8bit_db"]):
        title += f"\n{LOSSLESS_MARK}"
    axes[0].set_title(title, fontsize=9)
    _save(fig, path)


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
        rows.append((f"ours, {n} layers", inputs.array(f"recon/ours/{inputs.run(n)}/hr.npy")))
        rows.append(
            (f"SIREN on HR, {n} layers", inputs.array(f"recon/baseline/{inputs.run(n)}/hr.npy"))
        )
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
    _save(fig, path)


RD_MARKERS = {"siren": "o", "lr + upsampling": "s", "codec": ".", "published": "*"}


def rate_distortion_figure(table: pd.DataFrame, amortize_over: int, path: Path) -> None:
    """PSNR (8-bit, native) and SSIM against bits per voxel: codecs as curves, SIREN points
    with 95% intervals over seeds (filled: SR model not counted; hollow: SR amortized over
    ``amortize_over`` volumes), LR + upsampling, and the paper's published points."""
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
            color, marker = palette[method], RD_MARKERS[family]
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
                ms=6,
                color=color,
                label=method,
                capsize=2,
                ls="-" if family == "siren" else "",
            )
            if family == "siren" and group["bits_per_voxel_with_sr_amortized"].notna().any():
                shifted = group["bits_per_voxel_with_sr_amortized"]
                if not np.allclose(shifted, group["bits_per_voxel"]):
                    ax.plot(shifted, group[column], marker, ms=6, mfc="none", color=color)
        ax.set_xscale("log")
        ax.set_xlabel("bits per voxel (log)")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3, which="both")
        infinite_psnr |= _mark_lossless(ax, table["bits_per_voxel"], table[column])
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5))
    fig.suptitle(
        "Rate-distortion from real files. Hollow: the SR model's bytes amortized over "
        f"{amortize_over} volumes; x: lossless codec settings; stars: the paper's published "
        "points" + (f"; {LOSSLESS_MARK}" if infinite_psnr else ""),
        fontsize=10,
    )
    _save(fig, path)
