"""What every figure shares: a non-interactive backend, the provenance block written into each
PNG, saving atomically, the image window, and the inputs read from a run's results folder.
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

matplotlib.use("Agg")  # no display: figures are files
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from volinr import provenance  # noqa: E402
from volinr.io import load_array, read_json  # noqa: E402
from volinr.outputs import atomic_path  # noqa: E402

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


def save_figure(fig: plt.Figure, path: Path) -> None:
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


def db_label(psnr: float) -> str:
    """A PSNR for a title; infinite where the images are identical (MSE 0)."""
    return "∞ dB (lossless)" if psnr == np.inf else f"{psnr:.2f} dB"


LOSSLESS_MARK = "▲ at the top edge: PSNR ∞ (lossless)"


def mark_lossless(ax, x: pd.Series, y: pd.Series) -> bool:
    """Infinite PSNRs, which matplotlib would drop silently, as markers on the top edge."""
    infinite = y.astype(float) == np.inf
    if infinite.any():
        limits = ax.get_ylim()
        ax.plot(x[infinite], [limits[1]] * int(infinite.sum()), "^k", ms=7, clip_on=False)
        ax.set_ylim(limits)  # the marker must not move the edge it marks
    return bool(infinite.any())


def show_image(ax, array, window, title):
    ax.imshow(display_slice(array), cmap="gray", vmin=window[0], vmax=window[1])
    ax.set_title(title, fontsize=9)
    ax.set_axis_off()


def draw_curves(ax_psnr, ax_loss, curve: pd.DataFrame, label: str) -> None:
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


# The paper's two SIREN methods by the names the figures use, and where their paper point is.
PAPER_FAMILIES = {"ours": "siren_lr_sr", "baseline": "siren_hr"}
PAPER_POINT = "float32"


class FigureInputs:
    """Loads what the figures show from a results folder, on demand: the original, the
    tables, and the paper point of the SIREN methods' groups of the shown seed
    (``rd/<method>/L<layers>_s<seed>/float32*.npy``, written by ``volinr rd``)."""

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

    def group_dir(self, kind: str, layers: int) -> Path:
        return self.results / "rd" / PAPER_FAMILIES[kind] / self.run(layers)

    def reconstruction(self, kind: str, layers: int, part: str = "") -> np.ndarray:
        """The shown reconstruction (``part`` "lr": the SIREN's own LR grid before SR)."""
        suffix = f".{part}.npy" if part else ".npy"
        return load_array(self.group_dir(kind, layers) / f"{PAPER_POINT}{suffix}")[0]

    def curve(self, target: str, layers: int) -> pd.DataFrame:
        return pd.read_csv(self.results / f"fits/{target}/{self.run(layers)}/curve.csv")

    def psnr(self, kind: str, layers: int) -> float:
        """The 8-bit PSNR of the reconstruction shown (this seed's), not the tables' mean."""
        record = read_json(self.results / "rd" / PAPER_FAMILIES[kind] / f"{self.run(layers)}.json")
        view = next(row["paper_view"] for row in record["rows"] if "paper_view" in row)
        return view["psnr_8bit_minmax_db"]

    def per_slice_files(self, layers: list[int]) -> list[Path]:
        """Per-slice metrics of the shown SIREN reconstructions and of the true-LR ablation."""
        files = [
            self.group_dir(kind, n) / f"{PAPER_POINT}.slices.csv"
            for n in layers
            for kind in PAPER_FAMILIES
        ]
        return files + sorted((self.results / "rd/true_lr").glob("*/*.slices.csv"))
