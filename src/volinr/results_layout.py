"""Where a workflow run keeps its files, relative to its working directory: one place for the
rules (``workflow/rules/common.smk``) and for the methods that name their inputs
(``volinr.methods``). A run's folder is the config's ``results_dir`` ("results"; a suite gives
each dataset its own, ``results/suite/<name>``). Imported while the workflow builds its DAG:
no heavy imports."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

DEFAULT_RESULTS = "results"


@dataclass(frozen=True)
class Layout:
    results: str = DEFAULT_RESULTS

    @classmethod
    def of(cls, config: Mapping[str, Any]) -> Layout:
        return cls(config.get("results_dir", DEFAULT_RESULTS))

    @property
    def eval_image(self) -> str:  # the evaluated image (slice or volume)
        return f"{self.results}/data/eval.npy"

    @property
    def lr_image(self) -> str:  # its Lanczos-downsampled copy
        return f"{self.results}/data/lr.npy"

    @property
    def sr_model(self) -> str:  # the SR network every SR decoder shares
        return f"{self.results}/sr/srdensenet.pt"

    @property
    def download_dir(self) -> str:
        return f"{self.results}/data/download"

    def fit_dir(self, target: str, group: str) -> str:
        """A SIREN fit's folder: ``target`` lr or hr, ``group`` L{layers}_s{seed}."""
        return f"{self.results}/fits/{target}/{group}"


def fit_group(layers, seed) -> str:
    return f"L{layers}_s{seed}"
