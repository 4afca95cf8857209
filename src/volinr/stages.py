"""The pipeline's stages: read inputs, call the modules, write outputs atomically.

Each ``run_*`` function is one ``volinr`` subcommand (see ``volinr.cli``) and one Snakemake rule.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
import shutil
import time
from pathlib import Path

import numpy as np

from volinr import limits, provenance
from volinr.errors import InputError
from volinr.io import load_array, load_image, read_json_object, save_array, sha256_file, write_json
from volinr.outputs import atomic_path
from volinr.super_resolution import upsample_array

log = logging.getLogger(__name__)


def _device(args):
    from volinr.devices import resolve_device, set_threads

    set_threads(args.threads)
    try:
        return resolve_device(args.device)
    except RuntimeError as err:
        raise InputError(f"--device {args.device}: {err}") from None


def write_csv(path: str | Path, rows: list[dict], block: dict) -> None:
    """Rows as CSV, with the provenance ``block`` beside it (``<path>.provenance``)."""
    if not rows:
        raise ValueError(f"no rows to write to {path}")
    provenance.write_sidecar(path, block)
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


# --- data ----------------------------------------------------------------------------------


def run_prepare(args) -> None:
    from volinr.data.dicom_frames import read_frame

    frame = read_frame(args.source, args.frame)
    save_array(args.out, frame.pixels, frame.meta | {"provenance": provenance.record(args)})
    log.info("%s frame %d -> %s %s", args.source, args.frame, args.out, frame.pixels.shape)


def run_sr_dataset(args) -> None:
    from volinr.data.dicom_frames import correlation_with, read_dicom_frames
    from volinr.io import sha256_array

    if not 0 < args.max_correlation <= 1:  # NaN or inf would let a copy of the image through
        raise InputError(f"--max-correlation {args.max_correlation:g}: must be in (0, 1]")
    start, stop = args.exclude_slices or (0, 1)
    if not 0 <= start < stop or args.margin < 0:
        raise InputError(
            f"--exclude-slices {start} {stop} --margin {args.margin}: need 0 <= START < STOP "
            "and a margin of 0 or more"
        )
    evaluation, eval_meta = load_array(args.eval)
    evaluation = evaluation.astype(np.float32)
    eval_planes = evaluation[None] if evaluation.ndim == 2 else evaluation
    eval_hashes = {sha256_array(plane) for plane in eval_planes}
    # The correlation check compares against the slice itself, or slices spread through a volume.
    probe_index = np.unique(np.linspace(0, len(eval_planes) - 1, min(5, len(eval_planes))).round())
    probes = [eval_planes[int(i)] for i in probe_index]
    images, records = {}, []

    def add(pixels: np.ndarray, record: dict, check_correlation: bool) -> None:
        where = f"{record['source']} {'frame' if 'frame' in record else 'slice'} "
        where += str(record.get("frame", record.get("slice")))
        record["sha256"] = sha256_array(pixels)
        if record["sha256"] in eval_hashes:
            raise InputError(f"{where}: SR training image equals an evaluated slice")
        if check_correlation:
            correlation = max(correlation_with(probe, pixels) for probe in probes)
            record["correlation_with_eval"] = round(correlation, 6)
            # A training image may be neither the evaluation image nor a re-encoding of it.
            if abs(correlation) > args.max_correlation:
                raise InputError(
                    f"{where}: SR training image matches the evaluation image "
                    f"{eval_meta.get('source', args.eval)} (correlation {correlation:.4f} > "
                    f"{args.max_correlation}); remove it from the training sources"
                )
        images[f"image_{len(records)}"] = pixels
        records.append(record)

    for source in args.source:
        for frame in read_dicom_frames(source):
            record = {"source": source, "frame": frame.frame, "shape": list(frame.pixels.shape)}
            add(frame.pixels, record | {"modality": frame.meta["modality"]}, True)
    excluded: list[int] = []
    if args.volume:
        volume, volume_meta = load_array(args.volume)
        if volume.ndim != 3:
            raise InputError(f"{args.volume}: SR training slices need a volume, got {volume.shape}")
        if args.exclude_slices:
            # the evaluated slab and `margin` neighbours each side never train the network
            start, stop = args.exclude_slices
            excluded = list(
                range(max(0, start - args.margin), min(len(volume), stop + args.margin))
            )
        for index in sorted(set(range(len(volume))) - set(excluded)):
            record = {"source": volume_meta.get("source", args.volume), "slice": index}
            add(
                volume[index].astype(np.float32),
                record | {"shape": list(volume[index].shape)},
                False,
            )
    if not records:
        raise InputError(
            f"{args.volume or args.eval}: no SR training images are left (sources: "
            f"{args.source or 'none'}; excluded slices {excluded[:1]}..{excluded[-1:]})"
        )
    split = {
        "evaluation": {
            "source": eval_meta.get("source"),
            "frame": eval_meta.get("frame"),
            "slices": eval_meta.get("evaluation_slices"),
            "shape": list(evaluation.shape),
            "sha256": sha256_array(evaluation),
        },
        "training": records,
        "max_correlation": args.max_correlation,
        "excluded_slices": excluded,
        "margin_slices": args.margin if args.volume else None,
        "rule": "no training image equals an evaluated slice (sha256); DICOM frames correlating "
        "with the evaluation image above max_correlation after resizing are refused; slices of "
        "the evaluated volume train only outside the evaluated slab and its margin",
        "provenance": provenance.record(args),
    }
    with atomic_path(args.out) as tmp:
        with open(tmp, "wb") as handle:
            np.savez(handle, **images)
    write_json(args.split, split)
    log.info("SR training set: %d images (%d slices excluded)", len(records), len(excluded))


def run_download(args) -> None:
    from volinr.data.download import fetch_dataset

    sha256s = list(args.sha256) + [""] * (len(args.url) - len(args.sha256))
    if len(sha256s) != len(args.url):
        raise InputError(f"{len(args.sha256)} checksums given for {len(args.url)} URLs")
    manifest = fetch_dataset(
        args.url,
        sha256s,
        args.out_dir,
        args.downloads_dir,
        max_member_bytes=args.max_member_bytes,
    )
    write_json(args.manifest, manifest | {"provenance": provenance.record(args)})


def _nifti_in(folder: Path) -> Path:
    """The one NIfTI file of a (downloaded) folder."""
    found = sorted(p for p in folder.rglob("*") if p.name.endswith((".nii", ".nii.gz")))
    if len(found) != 1:
        names = ", ".join(p.name for p in found) or "none"
        raise InputError(f"{folder}: expected exactly one .nii or .nii.gz file, found {names}")
    return found[0]


def run_prepare_volume(args) -> None:
    from volinr.data.geometry import crop_slices
    from volinr.data.volume import read_volume
    from volinr.resample import downsampled_shape

    spec = dict(args.spec)
    if spec.get("kind") == "nifti" and Path(spec.get("path", "")).is_dir():
        spec["path"] = str(_nifti_in(Path(spec["path"])))
    try:
        volume = read_volume(spec)
    except (TypeError, ValueError) as err:  # the spec's own values: kind, shape, policies
        raise InputError(f"--spec {json.dumps(args.spec)}: {err}") from None
    source = volume.meta.get("source") or spec.get("path") or spec.get("kind")
    slices = len(volume.voxels)
    start, stop = args.evaluation_slices or (0, slices)
    if not 0 <= start < stop <= slices:
        raise InputError(f"{source}: evaluation slices {start}..{stop} outside 0..{slices}")
    evaluated = crop_slices(volume, start, stop)
    try:
        downsampled_shape(evaluated.voxels.shape, args.factor)
    except ValueError as err:
        raise InputError(f"{source}: {err}") from None
    block = {"provenance": provenance.record(args)}
    save_array(args.volume_out, volume.voxels, volume.meta | block)
    if args.out:
        meta = evaluated.meta | {"evaluation_slices": [start, stop], "slab_of": args.volume_out}
        save_array(args.out, evaluated.voxels, meta | block)
    log.info("%s: volume %s, evaluated slices %d..%d", source, volume.voxels.shape, start, stop)


def run_downsample(args) -> None:
    from volinr.resample import downsampled_shape, lanczos_resize

    array, meta = load_image(args.input)
    try:
        shape = downsampled_shape(array.shape, args.factor)
    except ValueError as err:
        raise InputError(f"{args.input}: {err}") from None
    small = lanczos_resize(array, shape)  # converted to float32 slab by slab
    # CT is stored as integers; the LR image is stored the same way (the ablation codes it
    # losslessly), so it is rounded: at most 0.5 HU, far below the downsampling's change.
    integer_input = array.dtype.kind in "iu" or bool(np.all(array == np.rint(array)))
    if integer_input:
        small = np.rint(small)
    # Per-slice positions and file lists describe the full-resolution grid only.
    dropped = ("shape", "dtype", "sha256", "slice_positions_mm", "origin_mm", "slice_files")
    meta = {k: v for k, v in meta.items() if k not in dropped}
    if meta.get("spacing_mm"):
        n = len(meta["spacing_mm"])
        meta["spacing_mm"] = [
            s * a / b
            for s, a, b in zip(meta["spacing_mm"], array.shape[-n:], shape[-n:], strict=True)
        ]
    meta.update(
        downsampling={
            "method": "lanczos3 (Pillow, antialiased, separable)",
            "factor": args.factor,
            "from_shape": list(array.shape),
            "rounded_to_integers": integer_input,
        },
        provenance=provenance.record(args),
    )
    save_array(args.out, small, meta)


# --- super-resolution pretraining ----------------------------------------------------------


def _training_images(path: str) -> list[np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as data:
            return [data[f"image_{i}"] for i in range(len(data.files))]
    except (OSError, ValueError, KeyError) as err:
        raise InputError(f"{path}: not a readable SR training set ({err})") from None


def _reuse_reason(args, split: dict) -> str | None:
    """Why the committed checkpoint cannot be reused (None: it can)."""
    from volinr.super_resolution import load_sr_checkpoint

    if args.retrain:
        return "retraining was asked for"
    if not args.pretrained:
        return "no pretrained checkpoint is configured"
    path = Path(args.pretrained)
    if not path.is_file():
        return f"{path} does not exist"
    seen = sha256_file(path)
    if seen != args.pretrained_sha256:
        return f"{path} has sha256 {seen}, the config expects {args.pretrained_sha256 or 'none'}"
    _, payload = load_sr_checkpoint(path)
    wanted = dict(args.model, scale=args.factor)
    if "training" not in payload:
        return f"{path} has no training record"
    if payload["config"] != wanted:
        return f"{path} holds architecture {payload['config']}, the config asks for {wanted}"
    trained_on = [r["sha256"] for r in payload["training"]["split"]["training"]]
    if trained_on != [r["sha256"] for r in split["training"]]:
        return f"{path} was trained on other images than this run's training split"
    if split["evaluation"]["sha256"] in trained_on:
        return f"{path} was trained on this run's evaluation image"
    if payload["training"]["settings"] != args.settings:
        return f"{path} was trained with other settings than the config's"
    return None


def _sr_settings(args):
    """The SR training settings and architecture of the command line, checked before any work."""
    from volinr.checkpoints import architecture_shapes
    from volinr.models.srdensenet import SRDenseNet
    from volinr.training.sr import SRTrainingSettings

    try:
        settings = SRTrainingSettings(**args.settings)
        architecture_shapes(SRDenseNet, dict(args.model, scale=args.factor), 10_000)
    except (TypeError, ValueError) as err:
        raise InputError(f"--settings {args.settings} / --model {args.model}: {err}") from None
    bad = [
        f"{name} {value!r}"
        for name, value in vars(settings).items()
        if isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or value < 0
        or (value == 0 and name not in ("max_seconds", "seed"))
    ]
    if bad:
        raise InputError(f"--settings: {', '.join(bad)} (each must be a finite positive number)")
    return settings


def _read_split(path: str) -> dict:
    """The split JSON of ``sr-dataset``: the sha256 of every training and evaluated image."""
    split = read_json_object(path)
    try:
        [record["sha256"] for record in split["training"]]
        split["evaluation"]["sha256"]
    except (KeyError, TypeError) as err:
        raise InputError(f"{path}: not a split written by sr-dataset (no {err})") from None
    return split


def run_pretrain_sr(args) -> None:
    from volinr.super_resolution import save_sr_checkpoint
    from volinr.training.sr import PatchPairs, settings_dict, train_srdensenet_retrying

    # What to do on divergence is not a training setting: it changes nothing in a run that
    # converges, so it stays out of the settings a committed checkpoint is matched against.
    args.settings = dict(args.settings)
    retries = int(args.settings.pop("divergence_retries", 0))
    lr_factor = float(args.settings.pop("divergence_lr_factor", 0.5))
    settings = _sr_settings(args)
    split = _read_split(args.split)
    reason = _reuse_reason(args, split)
    if reason is None:
        from volinr.super_resolution import load_sr_checkpoint

        log.info("reusing the pretrained checkpoint %s (sha256 verified)", args.pretrained)
        _, payload = load_sr_checkpoint(args.pretrained)
        with atomic_path(args.out) as tmp:
            shutil.copyfile(args.pretrained, tmp)
        write_csv(args.curve, payload["curve"], provenance.record(args))
        return
    log.info("training SRDenseNet: %s", reason)
    device = _device(args)
    pairs = PatchPairs.from_hr_images(_training_images(args.training), args.factor)
    run = train_srdensenet_retrying(
        pairs, args.model, settings, device,
        divergence_retries=retries, divergence_lr_factor=lr_factor,
    )  # fmt: skip
    model, curve = run.model, run.curve
    training = {
        "settings": settings_dict(settings),
        "split": split,
        "steps_done": curve[-1]["step"],
        "seconds": curve[-1]["seconds"],
        "divergence_retries": retries,
        "divergence_lr_factor": lr_factor,
        "divergence_retries_used": run.divergence_retries_used,
        "learning_rate_used": run.learning_rate,
        "channels_last": run.execution.channels_last,
        "precision": run.execution.precision,
        "provenance": provenance.record(args, device),
    }
    save_sr_checkpoint(args.out, model, training, curve)
    write_csv(args.curve, curve, training["provenance"])


def run_publish_sr(args) -> None:
    from volinr.super_resolution import load_sr_checkpoint

    _, payload = load_sr_checkpoint(args.checkpoint)
    out_dir = Path(args.out_dir)
    target = out_dir / f"{args.name}.pt"
    block = provenance.record(args)
    provenance.write_sidecar(out_dir / f"{args.name}.curve.csv", block)
    with atomic_path(target) as tmp:
        shutil.copyfile(args.checkpoint, tmp)
        # the copy is renamed into place with the other outputs, at the end
        sha256, size = sha256_file(tmp), tmp.stat().st_size
    with atomic_path(out_dir / f"{args.name}.curve.csv") as tmp:
        shutil.copyfile(args.curve, tmp)
    if args.log:
        with atomic_path(out_dir / f"{args.name}.log") as tmp:
            shutil.copyfile(args.log, tmp)
    last = payload["curve"][-1]
    write_json(
        out_dir / f"{args.name}.json",
        {
            "file": target.name,
            "sha256": sha256,
            "bytes": size,
            "architecture": payload["config"],
            "training": {k: v for k, v in payload["training"].items() if k != "split"},
            "training_split": payload["training"]["split"],
            "final_monitor": last,
            "provenance": block,
        },
    )
    log.info("published %s (sha256 %s)", target, sha256)


# --- SIREN fits and reconstruction ---------------------------------------------------------


def run_fit(args) -> None:
    from volinr.siren_grid import save_siren
    from volinr.training.siren import FitSettings, fit_siren

    device = _device(args)
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

    device = _device(args)
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


def run_upsample(args) -> None:
    low, _ = load_image(args.input)
    reference, reference_meta = load_image(args.reference)
    device = _device(args) if args.method == "sr" else None
    start = time.perf_counter()
    high = upsample_array(low, reference.shape, args.method, args.sr_model, device, args.z_restore)
    seconds = time.perf_counter() - start
    geometry = {k: v for k, v in reference_meta.items() if k not in ("shape", "dtype", "sha256")}
    save_array(
        args.out,
        high,
        geometry
        | {
            "upsampled_from": str(args.input),
            "method": args.method,
            "z_restore": args.z_restore if args.method == "sr" and low.ndim == 3 else None,
            "sr_model": args.sr_model or None,
            "decode_seconds": seconds,
            "provenance": provenance.record(args, device),
        },
    )


def run_compress(args) -> None:
    from volinr.container import encode_container, write_container
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
    from volinr.container import siren_from_container
    from volinr.devices import synchronize
    from volinr.siren_grid import decode_siren

    device = _device(args)
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


def run_export(args) -> None:
    from volinr.data.export import write_dicom_series, write_nifti

    reconstruction, _ = load_array(args.reconstruction)
    geometry = read_json_object(args.geometry)
    if reconstruction.ndim != 3 or list(reconstruction.shape) != geometry.get("shape"):
        raise InputError(
            f"{args.reconstruction}: shape {reconstruction.shape} does not match the original's "
            f"{geometry.get('shape')} ({args.geometry})"
        )
    dicom = Path(args.dicom)
    if dicom.is_dir() and any(dicom.iterdir()):
        raise InputError(f"{dicom}: the DICOM output folder exists and is not empty")
    block = provenance.record(args)
    provenance.write_sidecar(args.nifti, block)
    provenance.write_sidecar(args.dicom, block)
    try:
        write_nifti(args.nifti, reconstruction, geometry)
        written = write_dicom_series(
            dicom, reconstruction, geometry, args.description, derived_from=args.reconstruction
        )
    except (KeyError, TypeError, ValueError) as err:  # the geometry's fields
        raise InputError(f"{args.geometry}: geometry unusable for the export ({err!r})") from None
    log.info("exported %s: %s and %d DICOM files", args.reconstruction, args.nifti, len(written))


# --- evaluation ----------------------------------------------------------------------------


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


# --- aggregation ---------------------------------------------------------------------------


def run_tables(args) -> None:
    from volinr import tables

    metrics = tables.load_metrics(args.metrics)
    published = tables.load_published(args.published)
    if args.mode == "volume":
        published = tables.published_for_volume(published)
    built = tables.build_tables(metrics, published)
    block = provenance.record(args)
    notes = tables.notes_for(metrics) + tables.infinity_notes(built.values())
    tables.write_tables(built, notes, args.out_dir, args.mode, block)


def run_codecs(args) -> None:
    from volinr import codecs

    volume, _ = load_image(args.input)
    rows = codecs.run_sweep(volume, codecs.default_sweep(volume.ndim))
    if not rows:
        raise InputError(f"{args.input}: no codec setting could encode this image")
    write_csv(args.out, rows, provenance.record(args))


def run_rate_distortion(args) -> None:
    import pandas as pd

    from volinr import figures, tables

    metrics = tables.load_metrics(args.metrics)
    containers = metrics[metrics["method"].str.endswith(" container")]
    references = metrics[metrics["method"].str.startswith("true LR + ")]
    if containers.empty:
        raise InputError(f"{args.metrics[0]}...: no container metrics among the inputs")
    codecs = None
    if args.codecs:
        try:
            codecs = pd.read_csv(args.codecs)
        except (OSError, ValueError) as err:
            raise InputError(f"{args.codecs}: unreadable codec sweep ({err})") from None
    published = None if args.mode == "volume" else tables.load_published(args.published)
    table = tables.rate_distortion_table(containers, references, codecs, published)
    built = {"table_rate_distortion": table}
    if codecs is not None:
        built["table_vs_jpeg2000"] = tables.versus_codec(table, "jpeg2000")
    notes = [tables.RD_NOTE, tables.PSNR_NOTE.format(tissue="(see Table 4)")]
    notes += tables.infinity_notes(built.values())
    block = provenance.record(args)
    tables.write_tables(built, notes, args.out_dir, args.mode, block)
    with figures.recording(block):
        figures.rate_distortion_figure(table, args.sr_amortize_over, Path(args.figure))


def run_figure(args) -> None:
    from volinr import figures

    with figures.recording(provenance.record(args)):
        _draw_figure(args, figures)


def _draw_figure(args, figures) -> None:
    out = Path(args.out)
    if args.kind == "sr-training":
        figures.sr_training_figure(Path(args.results) / "sr/training_curve.csv", out)
        return
    inputs = figures.FigureInputs(Path(args.results), Path(args.tables_dir), args.seed)
    if args.kind == "bars":
        figures.bars_figure(inputs, out)
    elif args.kind == "comparison":
        figures.comparison_figure(inputs, args.layers, out)
    elif args.kind == "per-slice":
        figures.per_slice_figure(inputs, args.layers, out)
    elif args.kind == "orthogonal":
        figures.orthogonal_figure(inputs, args.layers, out)
    else:
        draw = {
            "lr-fit": figures.lr_fit_figure,
            "pipeline": figures.pipeline_figure,
            "baseline": figures.baseline_figure,
        }[args.kind]
        draw(inputs, args.layers[0], out)


def run_summary(args) -> None:
    from volinr import summary

    text = summary.build_summary(Path(args.tables_dir), Path(args.results))
    with atomic_path(args.out) as tmp:
        tmp.write_text(text + provenance.markdown_footer(provenance.record(args)))
    if args.readme:
        sections = {"results": text}
        if args.benchmark:
            # each benchmark's Markdown under its file name, in the order given
            parts = [
                f"### `{Path(path).name}`\n\n{Path(path).read_text()}" for path in args.benchmark
            ]
            sections["performance"] = "\n".join(parts)
        summary.splice_sections(Path(args.readme), sections)


# --- benchmarks ----------------------------------------------------------------------------


def run_bench(args) -> None:
    from volinr import bench

    device = _device(args)
    targets = bench.SMOKE_TARGETS if args.smoke else bench.TARGETS
    if args.targets:
        unknown = sorted(set(args.targets) - set(targets))
        if unknown:
            raise InputError(f"unknown benchmark targets {unknown}; known: {sorted(targets)}")
        targets = {name: targets[name] for name in args.targets}
    load_before = os.getloadavg()[0]  # other work on the machine skews every timing
    table = bench.run_benchmark(targets, args.layers, args.iterations, args.variants, device)
    command = (
        f"volinr bench --layers {' '.join(map(str, args.layers))} --iterations {args.iterations}"
        f" --variants {' '.join(args.variants)}{' --smoke' if args.smoke else ''}"
        f"{' --targets ' + ' '.join(args.targets) if args.targets else ''}"
        f" --threads {args.threads} --device {args.device}"
    )
    meta = bench.benchmark_meta(device, args.iterations, command)
    meta["load_average_1min"] = {"before": load_before, "after": os.getloadavg()[0]}
    bench.write_results(table, meta, Path(args.out_dir), args.stem)


def run_bench_sr(args) -> None:
    from volinr import bench_sr

    device = _device(args)
    checkpoint = args.checkpoint or None
    load_before = os.getloadavg()[0]
    table = bench_sr.run_sr_benchmark(
        device, args.steps, args.patch, args.batch, args.slice_size, checkpoint=checkpoint
    )
    command = (
        f"volinr bench-sr --steps {args.steps} --patch {args.patch} --batch {args.batch} "
        f"--slice-size {args.slice_size}{' --checkpoint ' + args.checkpoint if checkpoint else ''}"
        f" --threads {args.threads} --device {args.device}"
    )
    meta = bench_sr.sr_benchmark_meta(
        device, args.steps, args.patch, args.batch, args.slice_size, command, checkpoint
    )
    meta["load_average_1min"] = {"before": load_before, "after": os.getloadavg()[0]}
    bench_sr.write_sr_results(table, meta, Path(args.out_dir), args.stem)
