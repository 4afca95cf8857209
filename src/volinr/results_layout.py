"""Where a workflow run keeps its files, relative to its working directory: one place for the
rules (``workflow/rules/common.smk``) and for the methods that name their inputs
(``volinr.methods``). Imported while the workflow builds its DAG: no heavy imports."""

from __future__ import annotations

RESULTS = "results"
EVAL_IMAGE = f"{RESULTS}/data/eval.npy"  # the evaluated image (slice or volume)
LR_IMAGE = f"{RESULTS}/data/lr.npy"  # its Lanczos-downsampled copy
SR_MODEL = f"{RESULTS}/sr/srdensenet.pt"  # the SR network every SR decoder shares
DOWNLOAD_DIR = f"{RESULTS}/data/download"


def fit_dir(target: str, group: str) -> str:
    """A SIREN fit's folder: ``target`` lr or hr, ``group`` L{layers}_s{seed}."""
    return f"{RESULTS}/fits/{target}/{group}"


def fit_group(layers, seed) -> str:
    return f"L{layers}_s{seed}"
