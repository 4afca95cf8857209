"""The evaluation stage: quality and rates of one reconstruction against the original."""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np

from volinr import provenance
from volinr.errors import InputError
from volinr.io import (
    load_array,
    load_image,
    read_json_object,
    write_csv,
    write_json,
)

log = logging.getLogger(__name__)


SSIM_WINDOW = 7  # scikit-image's default window side


def _matching_pair(reference_path: str, reconstruction_path: str):
    """A reference and a reconstruction of the same shape (else an error naming both files)."""
    reference, meta = load_image(reference_path)
    reconstruction, recon_meta = load_image(reconstruction_path)
    if reconstruction.shape != reference.shape:
        raise InputError(
            f"{reconstruction_path}: shape {reconstruction.shape} differs from the "
            f"reference {reference_path} {reference.shape}"
        )
    if min(reference.shape[-2:]) < SSIM_WINDOW:
        # SSIM's 7x7 window must fit in every (axial) slice
        raise InputError(
            f"{reference_path}: slices of {reference.shape[-2]}x{reference.shape[-1]} are too "
            f"small for SSIM (its window is {SSIM_WINDOW}x{SSIM_WINDOW})"
        )
    return reference, reconstruction, meta, recon_meta


def run_evaluate(args) -> None:
    from volinr import metrics

    reference, reconstruction, ref_meta, recon_meta = _matching_pair(
        args.reference, args.reconstruction
    )
    minmax = metrics.minmax_window(reference)
    low, high = args.tissue_window
    # argparse refuses infinities; a NaN low end would make every image equal in this window
    if not math.isfinite(low) or math.isinf(high):
        raise InputError(
            f"--tissue-window {low:g} {high:g}: low must be a finite number, high a finite "
            "number or nan (the image maximum)"
        )
    tissue = metrics.tissue_window(reference, low, high)
    for name, (low, high) in (("min..max", minmax), ("tissue", tissue)):
        if high <= low:
            raise InputError(f"{args.reference}: the {name} window {low:g}..{high:g} is empty")
    voxels = int(reference.size)
    result = dict(args.label)
    result.update(
        reference=str(args.reference),
        reference_source=ref_meta.get("source"),
        reconstruction=str(args.reconstruction),
        voxels=voxels,
        window_minmax=list(minmax),
        window_tissue=list(tissue),
        psnr_8bit_minmax_db=metrics.psnr_8bit(reference, reconstruction, minmax),
        psnr_8bit_tissue_db=metrics.psnr_8bit(reference, reconstruction, tissue),
        psnr_native_db=metrics.psnr_native(reference, reconstruction),
        ssim=metrics.ssim(reference, reconstruction),
        padding_fraction=float(np.mean(reference < tissue[0])),
    )
    if args.lr_reference and args.lr_reconstruction:
        lr_reference, lr_reconstruction, _, _ = _matching_pair(
            args.lr_reference, args.lr_reconstruction
        )
        result["lr_psnr_8bit_minmax_db"] = metrics.psnr_8bit(
            lr_reference, lr_reconstruction, minmax
        )
    if args.sr_model and not Path(args.sr_model).is_file():
        raise InputError(f"{args.sr_model}: SR model not found")
    sr_bytes = Path(args.sr_model).stat().st_size if args.sr_model else 0
    result["sr_model_bytes"] = sr_bytes
    # The original as stored: 2 bytes a voxel (12/16-bit CT); the paper counts 1 byte (8-bit).
    original_16bit, original_8bit = 2 * voxels, voxels
    result.update(original_bytes_16bit=original_16bit, original_bytes_8bit=original_8bit)
    if args.stored_array:
        from volinr.codecs import smallest_lossless

        stored, _ = load_array(args.stored_array)
        stored_bytes, codec = smallest_lossless(stored)
        result.update(
            stored_bytes=stored_bytes,
            stored_codec=codec,  # the tables name it beside the bits per voxel it gives
            stored_what=f"{args.stored_array} coded losslessly ({codec}, the smallest)",
            bits_per_voxel=metrics.bits_per_voxel(stored_bytes, voxels),
            compression_rate_16bit=metrics.compression_rate(original_16bit, stored_bytes),
        )
        # the SR model the decoder needs (none for interpolation), counted as for containers
        amortized = stored_bytes + sr_bytes / args.sr_amortize_over
        result.update(
            bits_per_voxel_with_sr=metrics.bits_per_voxel(stored_bytes + sr_bytes, voxels),
            bits_per_voxel_with_sr_amortized=metrics.bits_per_voxel(amortized, voxels),
            sr_amortized_over=args.sr_amortize_over,
        )
    if args.fit_record:
        try:
            _add_fit_metrics(result, [read_json_object(p) for p in args.fit_record], sr_bytes)
        except (KeyError, TypeError) as err:
            raise InputError(f"{args.fit_record}: not a fit record ({err!r})") from None
    if args.container:
        _add_container_metrics(result, args, sr_bytes)
    if "decode_seconds" in recon_meta:
        result["decode_seconds"] = recon_meta["decode_seconds"]
    for key, value in result.items():
        if isinstance(value, float) and math.isnan(value):
            raise FloatingPointError(f"{args.reconstruction}: metric {key} is NaN")
    lossless = [key for key, value in result.items() if "psnr" in key and value == math.inf]
    if lossless:  # written as null (JSON has no infinity) and listed under infinite_values
        result["psnr_infinite_reason"] = f"MSE 0, identical to the original: {', '.join(lossless)}"
    result["provenance"] = provenance.record(args)
    if args.per_slice:
        rows = metrics.per_slice_metrics(reference, reconstruction, minmax)
        write_csv(args.per_slice, [dict(args.label) | row for row in rows], result["provenance"])
    write_json(args.out, result)


def _add_container_metrics(result: dict, args, sr_bytes: int) -> None:
    """Sizes from the container file's bytes: everything the decoder needs besides code and
    the shared SR model, which is counted in full, amortized over N volumes, and not at all."""
    from volinr import metrics

    size = Path(args.container).stat().st_size
    voxels = result["voxels"]
    amortized = sr_bytes / args.sr_amortize_over
    result.update(
        container=str(args.container),
        container_bytes=size,
        weights_bytes=size,
        bits_per_voxel=metrics.bits_per_voxel(size, voxels),
        bits_per_voxel_with_sr=metrics.bits_per_voxel(size + sr_bytes, voxels),
        bits_per_voxel_with_sr_amortized=metrics.bits_per_voxel(size + amortized, voxels),
        sr_amortized_over=args.sr_amortize_over,
        compression_rate_paper=metrics.compression_rate(result["original_bytes_8bit"], size),
        compression_rate_16bit=metrics.compression_rate(result["original_bytes_16bit"], size),
        compression_rate_16bit_with_sr=metrics.compression_rate(
            result["original_bytes_16bit"], size + sr_bytes
        ),
    )


def _add_fit_metrics(result: dict, records: list[dict], sr_bytes: int) -> None:
    """Timing, memory and sizes of the SIREN fit(s) a reconstruction comes from."""
    from volinr import metrics

    voxels, original_8bit = result["voxels"], result["original_bytes_8bit"]
    original_16bit = result["original_bytes_16bit"]
    weights = sum(r["weights_bytes"] for r in records)
    fit = records[0]
    result.update(
        iterations=fit["settings"]["iterations"],
        parameter_count=fit["parameter_count"],
        weights_bytes=weights,
        fit_best_psnr_db=fit["best_psnr_db"],
        fit_best_iteration=fit["best_iteration"],
        fit_final_loss=fit["final_loss"],
        train_seconds=fit["train_seconds"],
        compile_seconds=fit.get("compile_seconds", 0.0),
        seconds_per_50k_iterations_extrapolated=fit["seconds_per_50k_iterations_extrapolated"],
        peak_memory_kb=fit["peak_memory_bytes"] / 1024,
        memory_kind=fit["memory_kind"],
        device=(fit.get("provenance") or fit)["device"]["name"],
        # The paper's rate: 8-bit slice bytes / weights file bytes (SR model not counted).
        compression_rate_paper=metrics.compression_rate(original_8bit, weights),
        # Honest rates: 16-bit original / everything a decoder needs besides code.
        compression_rate_16bit=metrics.compression_rate(original_16bit, weights),
        compression_rate_16bit_with_sr=metrics.compression_rate(original_16bit, weights + sr_bytes),
        bits_per_voxel=metrics.bits_per_voxel(weights, voxels),
        bits_per_voxel_with_sr=metrics.bits_per_voxel(weights + sr_bytes, voxels),
    )
