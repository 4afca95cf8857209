"""Stages of the SIREN: fitting, decoding, and writing/reading a fitted SIREN as a container
file.
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path

from volinr import limits, provenance
from volinr.errors import InputError
from volinr.io import (
    load_image,
    read_json_object,
    save_array,
    sha256_file,
    write_csv,
    write_json,
)
from volinr.stages.common import device_from_args
from volinr.super_resolution import upsample_array

log = logging.getLogger(__name__)


def run_fit(args) -> None:
    from volinr.siren_grid import save_siren
    from volinr.training.siren import FitSettings, fit_siren

    device = device_from_args(args)
    target, meta = load_image(args.target)
    settings = FitSettings(
        sine_layers=args.sine_layers,
        iterations=args.iterations,
        width=args.width,
        omega0=args.omega0,
        learning_rate=args.learning_rate,
        batch_size=args.batch_size,
        eval_every=args.eval_every,
        seed=args.seed,
        compile=args.compile,
        step=args.step,
        precision=args.precision,
        checkpoint_every=args.checkpoint_every,
        divergence_retries=args.divergence_retries,
        divergence_lr_factor=args.divergence_lr_factor,
    )
    label = f"SIREN {args.sine_layers} layers, seed {args.seed}, on {Path(args.target).name}"
    spacing = meta.get("spacing_mm")
    # Beside the weights but not a declared output: Snakemake keeps it when a killed job's
    # outputs are removed, so the rerun continues from it.
    resume = Path(args.resume or Path(args.weights).with_suffix(".resume.pt"))
    for option in ("target", "weights", "record", "curve"):
        if resume.resolve() == Path(getattr(args, option)).resolve():
            # the checkpoint is removed when the fit is done: it cannot be a file kept after
            raise InputError(f"{resume}: the resume checkpoint cannot be the --{option} file")
    limits.check_fit(target.size, settings, device, label)
    result = fit_siren(
        target, settings, device, label=label, spacing_mm=spacing, resume_path=resume,
        replace_stale_resume=not args.resume,
    )  # fmt: skip
    weights_bytes = save_siren(args.weights, result)
    evaluations = {e["iteration"]: e for e in result.evaluations}
    rows = []
    for iteration, loss in enumerate(result.loss, start=1):
        evaluation = evaluations.get(iteration, {})
        rows.append(
            {
                "iteration": iteration,
                "train_loss": float(loss),
                "train_psnr_db": 10 * math.log10(4.0 / loss) if loss > 0 else math.inf,
                "eval_psnr_db": evaluation.get("psnr_db", ""),
            }
        )
    block = provenance.record(args, device)
    write_csv(args.curve, rows, block)
    write_json(
        args.record,
        {
            "target": str(args.target),
            "target_source": meta.get("source"),
            "target_shape": list(target.shape),
            "grid_extent": result.grid_extent,
            "coordinates": "voxel centres scaled by physical extent; longest axis spans (-1, 1)",
            "settings": vars(settings),
            "parameter_count": result.model.parameter_count,
            "weights_file": str(args.weights),
            "weights_bytes": weights_bytes,
            "best_psnr_db": result.best_psnr_db,
            "best_iteration": result.best_iteration,
            "final_psnr_db": result.final_psnr_db,
            "final_loss": float(result.loss[-1]),
            "psnr_definition": "8-bit PSNR in the fit target's own min..max window, unrounded",
            "intensity_scaling": "target min..max -> [-1, 1]",
            "value_range": list(result.value_range),
            "train_seconds": result.train_seconds,
            "first_iteration_seconds": result.first_iteration_seconds,
            "compile_seconds": result.compile_seconds,
            "compiled": bool(settings.compile and result.compile_seconds > 0),
            "step": result.step,
            "learning_rate_used": result.learning_rate,
            "divergence_retries_used": result.divergence_retries_used,
            "resumed_from_iteration": result.resumed_from_iteration,
            "seconds_per_iteration": result.seconds_per_iteration,
            "seconds_per_50k_iterations_extrapolated": result.seconds_per_iteration * 50000,
            "peak_memory_bytes": result.peak_memory_bytes,
            "memory_kind": result.memory_kind,
            "provenance": block,
        },
    )


def run_decode(args) -> None:
    from volinr.siren_grid import decode_siren, load_siren

    device = device_from_args(args)
    model, payload = load_siren(args.weights, device)
    shape = tuple(args.shape) if args.shape else tuple(payload["grid_shape"])
    if len(shape) != len(payload["grid_shape"]):
        raise InputError(
            f"{args.weights}: fitted on a {len(payload['grid_shape'])}D grid, cannot decode "
            f"onto shape {shape}"
        )
    extent = payload.get("grid_extent") or [float(n) for n in payload["grid_shape"]]
    width = model.config["hidden_features"]
    chunk = limits.plan_decode(shape, width, args.chunk_voxels, device, f"decoding {args.weights}")
    meta = {"decoded_from": str(args.weights), "grid": list(shape), "extent_mm": extent}
    if args.like:
        like = read_json_object(args.like)
        meta = {k: v for k, v in like.items() if k not in ("shape", "dtype", "sha256")} | meta
    if shape != tuple(payload["grid_shape"]):
        meta["spacing_mm"] = [e / n for e, n in zip(extent, shape, strict=True)]
    meta["provenance"] = provenance.record(args, device)
    decoded = decode_siren(model, shape, tuple(payload["value_range"]), device, extent, chunk)
    save_array(args.out, decoded, meta)


def run_compress(args) -> None:
    from volinr.container import write_container
    from volinr.siren_container import encode_container
    from volinr.siren_grid import load_siren

    model, payload = load_siren(args.weights)
    # The recipe a decoder follows after evaluating the SIREN on its own grid.
    extra = {"upsample": args.upsample}
    if args.upsample != "none":
        if not args.reference:
            raise InputError(f"compress --upsample {args.upsample} needs --reference (its grid)")
        reference, _ = load_image(args.reference)
        extra.update(target_shape=list(reference.shape), z_restore=args.z_restore)
    if args.upsample == "sr":
        if not args.sr_model:
            raise InputError("compress --upsample sr needs --sr-model (its sha256 is stored)")
        extra["sr_model_sha256"] = sha256_file(args.sr_model)
    try:
        data = encode_container(
            model.state_dict(),
            model.config,
            payload["grid_shape"],
            payload.get("grid_extent") or [float(n) for n in payload["grid_shape"]],
            payload["value_range"],
            args.quantization,
            args.coder,
            extra,
        )
    except ValueError as err:  # e.g. weights beyond the float16 range
        problem = f"cannot be stored as {args.quantization} ({err})"
        raise InputError(f"{args.weights}: {problem}") from None
    provenance.write_sidecar(args.out, provenance.record(args))  # not in the rated bytes
    size = write_container(args.out, data)
    log.info(
        "%s -> %s: %d bytes (%s, %s)", args.weights, args.out, size, args.quantization, args.coder
    )


def run_decompress(args) -> None:
    """Rebuild the image from a container alone (plus the shared SR model it names)."""
    from volinr.devices import synchronize
    from volinr.siren_container import siren_from_container
    from volinr.siren_grid import decode_siren

    device = device_from_args(args)
    start = time.perf_counter()
    model, header = siren_from_container(args.container, device)
    extra = header.get("extra", {})
    method = extra.get("upsample", "none")
    upsampled = {}
    if method != "none":
        # the restored volume, an intermediate of SR or of the slice-axis resize, and its copy
        voxels = math.prod(int(n) for n in extra["target_shape"])
        upsampled = {"upsampled output and its intermediates": 3 * voxels * 4}
    chunk = limits.plan_decode(
        header["grid_shape"],
        model.config["hidden_features"],
        args.chunk_voxels,
        device,
        f"decompressing {args.container}",
        upsampled,
    )
    low = decode_siren(
        model,
        header["grid_shape"],
        tuple(header["value_range"]),
        device,
        header["grid_extent"],
        chunk,
    )
    if method != "none":
        expected = extra.get("sr_model_sha256")
        if method == "sr" and (not args.sr_model or sha256_file(args.sr_model) != expected):
            raise InputError(
                f"{args.container}: needs the SR model with sha256 {expected}; "
                f"{args.sr_model or 'none'} was given"
            )
        low = upsample_array(
            low,
            extra["target_shape"],
            method,
            args.sr_model,
            device,
            extra.get("z_restore", "lanczos"),
        )
    synchronize(device)
    seconds = time.perf_counter() - start
    meta = {
        "decompressed_from": str(args.container),
        "container_bytes": Path(args.container).stat().st_size,
        "quantization": header["quantization"],
        "upsample": method,
        "decode_seconds": seconds,
        "provenance": provenance.record(args, device),
    }
    save_array(args.out, low, meta)
