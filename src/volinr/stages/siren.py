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
    write_csv,
    write_json,
)
from volinr.stages.common import device_from_args

log = logging.getLogger(__name__)


def run_fit(args) -> None:
    from volinr.settings import section_from_args
    from volinr.siren_grid import save_siren
    from volinr.training.siren import FitSettings, fit_siren

    device = device_from_args(args)
    target, meta = load_image(args.target)
    section = section_from_args(args, "siren")
    settings = FitSettings.from_section(section, args.sine_layers, args.seed, section["iterations"])
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
            "snapshot_voxels_used": result.snapshot_voxels_used,
            "snapshot_psnr_db": result.snapshot_psnr_db,
            "final_psnr_db": result.final_psnr_db,
            "final_loss": float(result.loss[-1]),
            "psnr_definition": "8-bit PSNR in the fit target's own min..max window, unrounded; "
            "best_psnr_db on every voxel, the curve's evaluations on snapshot_voxels_used "
            "(0: every voxel)",
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
    from volinr.data.geometry import check_geometry
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
        # another grid's sidecar would give the output that grid's spacing and geometry
        if "shape" in like and tuple(like["shape"]) != shape:
            raise InputError(
                f"{args.like}: describes an image of shape {tuple(like['shape'])}, but the "
                f"output has shape {shape}; give the sidecar of an image on the output's grid"
            )
        # its spacing, orientation and positions become the output's: a NaN or an absurd size
        # is refused here, naming the file, not met as a numerical failure when writing
        check_geometry(args.like, like, shape, required=())
        meta = {k: v for k, v in like.items() if k not in ("shape", "dtype", "sha256")} | meta
    if shape != tuple(payload["grid_shape"]):
        meta["spacing_mm"] = [e / n for e, n in zip(extent, shape, strict=True)]
        check_geometry(f"{args.weights} (grid_extent {extent})", meta, shape, required=())
    meta["provenance"] = provenance.record(args, device)
    decoded = decode_siren(model, shape, tuple(payload["value_range"]), device, extent, chunk)
    save_array(args.out, decoded, meta)


def run_compress(args) -> None:
    from volinr.container import write_container
    from volinr.methods.siren import encode_siren_file

    target_shape = None
    if args.upsample != "none":
        if not args.reference:
            raise InputError(f"compress --upsample {args.upsample} needs --reference (its grid)")
        target_shape = load_image(args.reference)[0].shape
    data = encode_siren_file(
        args.weights,
        args.quantization,
        args.coder,
        args.upsample,
        target_shape,
        args.z_restore,
        args.sr_model,
    )
    provenance.write_sidecar(args.out, provenance.record(args))  # not in the rated bytes
    size = write_container(args.out, data)
    log.info(
        "%s -> %s: %d bytes (%s, %s)", args.weights, args.out, size, args.quantization, args.coder
    )


def run_decompress(args) -> None:
    """Rebuild the image from a container alone (plus the shared SR model a SIREN's names):
    a SIREN's (format version 1) or the neural codec's (version 2)."""
    from volinr.container import NEURAL_CODEC_VERSION, format_version
    from volinr.devices import synchronize
    from volinr.methods.siren import decode_siren_file

    device = device_from_args(args)
    start = time.perf_counter()
    try:
        data = Path(args.container).read_bytes()
    except OSError as err:
        raise InputError(f"{args.container}: cannot read ({err.strerror or err})") from None
    from volinr.methods.neural_codec import (
        decode_slices,
        slice_count,
        starts_like_slice_by_slice,
    )

    slices = slice_count(data) if format_version(data) is None else None
    if format_version(data) == NEURAL_CODEC_VERSION:
        from volinr.neural_codec import decode

        high = decode(data, str(args.container))
        how = {"format": "neural codec (container version 2)"}
    elif slices:  # volinr's own slice-by-slice file: one neural codec container a slice
        high = decode_slices(data, str(args.container), slices)
        how = {"format": f"neural codec, slice by slice ({slices} containers version 2)"}
    elif format_version(data) is None and starts_like_slice_by_slice(data):
        raise InputError(
            f"{args.container}: begins as a slice-by-slice neural codec file, but its slices' "
            "lengths do not add up to the file: truncated or damaged"
        )
    else:
        high, _, header = decode_siren_file(
            data, str(args.container), args.sr_model, device, args.chunk_voxels
        )
        how = {
            "format": "SIREN (container version 1)",
            "quantization": header["quantization"],
            "upsample": header.get("extra", {}).get("upsample", "none"),
        }
    synchronize(device)
    seconds = time.perf_counter() - start
    meta = {
        "decompressed_from": str(args.container),
        "container_bytes": Path(args.container).stat().st_size,
        **how,
        "decode_seconds": seconds,
        "provenance": provenance.record(args, device),
    }
    save_array(args.out, high, meta)
