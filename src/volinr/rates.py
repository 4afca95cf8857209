"""Rate accounting: what every bits-per-voxel and compression rate counts.

Every rate is taken from a real file's bytes over the voxels of the full-resolution original.
The shared SR model (a decoder needs it besides the file) is counted three ways: not at all,
in full, and amortized over ``amortize_over`` volumes that share it. The original is counted at
2 bytes a voxel (12/16-bit CT); the paper counts 1 byte (8-bit), and its "compression rate"
divides that by the bytes of the SIREN weights file.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from volinr.metrics import bits_per_voxel, compression_rate


def original_bytes(voxels: int) -> dict[str, int]:
    return {"original_bytes_16bit": 2 * voxels, "original_bytes_8bit": voxels}


def file_rates(
    file_bytes: int, voxels: int, sr_bytes: int, amortize_over: int
) -> dict[str, float | int]:
    """Rates of a file that holds everything the decoder needs besides code and the shared SR
    model (a container, a codec's stream, a stored LR image)."""
    originals = original_bytes(voxels)
    amortized = sr_bytes / amortize_over
    return {
        "bits_per_voxel": bits_per_voxel(file_bytes, voxels),
        "bits_per_voxel_with_sr": bits_per_voxel(file_bytes + sr_bytes, voxels),
        "bits_per_voxel_with_sr_amortized": bits_per_voxel(file_bytes + amortized, voxels),
        "sr_amortized_over": amortize_over,
        "compression_rate_paper": compression_rate(originals["original_bytes_8bit"], file_bytes),
        "compression_rate_16bit": compression_rate(originals["original_bytes_16bit"], file_bytes),
        "compression_rate_16bit_with_sr": compression_rate(
            originals["original_bytes_16bit"], file_bytes + sr_bytes
        ),
    }


def stored_rates(
    stored_bytes: int, voxels: int, sr_bytes: int, amortize_over: int
) -> dict[str, float | int]:
    """Rates of an image stored losslessly and upsampled by the decoder (the true-LR
    ablation): the SR model, where one is used, counted as for containers."""
    originals = original_bytes(voxels)
    amortized = stored_bytes + sr_bytes / amortize_over
    return {
        "bits_per_voxel": bits_per_voxel(stored_bytes, voxels),
        "compression_rate_16bit": compression_rate(originals["original_bytes_16bit"], stored_bytes),
        "bits_per_voxel_with_sr": bits_per_voxel(stored_bytes + sr_bytes, voxels),
        "bits_per_voxel_with_sr_amortized": bits_per_voxel(amortized, voxels),
        "sr_amortized_over": amortize_over,
    }


def fit_rates(records: Sequence[Mapping[str, Any]], voxels: int, sr_bytes: int) -> dict[str, Any]:
    """Timing, memory and sizes of the SIREN fit(s) a reconstruction comes from; the rates
    count the SIREN weights file as the fit saved it (the paper's convention)."""
    originals = original_bytes(voxels)
    original_8bit, original_16bit = (
        originals["original_bytes_8bit"],
        originals["original_bytes_16bit"],
    )
    sizes = [r["weights_bytes"] for r in records]
    if not all(type(size) is int and size > 0 for size in sizes):
        # a rate from no bytes (a division by zero) or negative ones is not a rate
        raise ValueError(f"weights_bytes {sizes}: a fit's weights file has a positive size")
    weights = sum(sizes)
    fit = records[0]
    return {
        "iterations": fit["settings"]["iterations"],
        "parameter_count": fit["parameter_count"],
        "weights_bytes": weights,
        "fit_best_psnr_db": fit["best_psnr_db"],
        "fit_best_iteration": fit["best_iteration"],
        "fit_final_loss": fit["final_loss"],
        "train_seconds": fit["train_seconds"],
        "compile_seconds": fit.get("compile_seconds", 0.0),
        "seconds_per_50k_iterations_extrapolated": fit["seconds_per_50k_iterations_extrapolated"],
        "peak_memory_kb": fit["peak_memory_bytes"] / 1024,
        "memory_kind": fit["memory_kind"],
        "device": (fit.get("provenance") or fit)["device"]["name"],
        # the paper's rate: 8-bit slice bytes / weights file bytes (SR model not counted)
        "compression_rate_paper": compression_rate(original_8bit, weights),
        # honest rates: 16-bit original / everything a decoder needs besides code
        "compression_rate_16bit": compression_rate(original_16bit, weights),
        "compression_rate_16bit_with_sr": compression_rate(original_16bit, weights + sr_bytes),
        "bits_per_voxel": bits_per_voxel(weights, voxels),
        "bits_per_voxel_with_sr": bits_per_voxel(weights + sr_bytes, voxels),
    }
