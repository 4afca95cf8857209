"""Stages that make the data: the evaluation image or volume, a download, the SR training set,
the Lanczos downsampling and the export of reconstructions (thin adapters: read inputs, call
``volinr.data``, write outputs).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

from volinr import provenance
from volinr.data.geometry import check_geometry
from volinr.errors import InputError
from volinr.io import (
    load_array,
    load_image,
    read_json_object,
    save_array,
    sidecar_path,
    write_json,
)
from volinr.outputs import atomic_path

log = logging.getLogger(__name__)


def run_prepare(args) -> None:
    from volinr.data.dicom_frames import read_frame

    frame = read_frame(args.source, args.frame)
    save_array(args.out, frame.pixels, frame.meta | {"provenance": provenance.record(args)})
    log.info("%s frame %d -> %s %s", args.source, args.frame, args.out, frame.pixels.shape)


def run_sr_dataset(args) -> None:
    from volinr.data.sr_dataset import build_training_set, split_record

    if not 0 < args.max_correlation <= 1:  # NaN or inf would let a copy of the image through
        raise InputError(f"--max-correlation {args.max_correlation:g}: must be in (0, 1]")
    start, stop = args.exclude_slices or (0, 1)
    if not 0 <= start < stop or args.margin < 0:
        raise InputError(
            f"--exclude-slices {start} {stop} --margin {args.margin}: need 0 <= START < STOP "
            "and a margin of 0 or more"
        )
    evaluation, eval_meta = load_array(args.eval)
    volume, volume_meta = load_array(args.volume) if args.volume else (None, {})
    found = build_training_set(
        evaluation,
        eval_meta.get("source", args.eval),
        args.source,
        volume,
        volume_meta.get("source", args.volume),
        args.exclude_slices,
        args.margin,
        args.max_correlation,
    )
    split = split_record(
        evaluation, eval_meta, found, args.max_correlation, args.margin if args.volume else None
    )
    split["provenance"] = provenance.record(args)
    with atomic_path(args.out) as tmp:
        with open(tmp, "wb") as handle:
            np.savez(handle, **found.images)
    write_json(args.split, split)
    log.info(
        "SR training set: %d images (%d slices excluded)",
        len(found.records),
        len(found.excluded_slices),
    )


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


def run_prepare_volume(args) -> None:
    from volinr.data.geometry import crop_slices
    from volinr.data.volume import nifti_in_folder, read_volume
    from volinr.resample import downsampled_shape

    spec = dict(args.spec)
    if spec.get("kind") == "nifti" and Path(spec.get("path", "")).is_dir():
        spec["path"] = str(nifti_in_folder(Path(spec["path"])))
    try:
        volume = read_volume(spec)
    except (TypeError, ValueError) as err:  # the spec's own values: kind, shape, policies
        raise InputError(f"--spec {json.dumps(args.spec)}: {err}") from None
    source = volume.meta.get("source") or spec.get("path") or spec.get("kind")
    check_geometry(source, volume.meta, volume.voxels.shape)  # every reader's, once more
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
    check_geometry(sidecar_path(args.input), meta, array.shape, required=())
    try:
        shape = downsampled_shape(array.shape, args.factor)
    except ValueError as err:
        raise InputError(f"{args.input}: {err}") from None
    # Per-slice positions and file lists describe the full-resolution grid only.
    dropped = ("shape", "dtype", "sha256", "slice_positions_mm", "origin_mm", "slice_files")
    meta = {k: v for k, v in meta.items() if k not in dropped}
    if meta.get("spacing_mm"):
        n = len(meta["spacing_mm"])
        meta["spacing_mm"] = [
            s * a / b
            for s, a, b in zip(meta["spacing_mm"], array.shape[-n:], shape[-n:], strict=True)
        ]
        check_geometry(f"{args.input} downsampled by {args.factor}", meta, shape, required=())
    small = lanczos_resize(array, shape)  # converted to float32 slab by slab
    # CT is stored as integers; the LR image is stored the same way (the ablation codes it
    # losslessly), so it is rounded: at most 0.5 HU, far below the downsampling's change.
    integer_input = array.dtype.kind in "iu" or bool(np.all(array == np.rint(array)))
    if integer_input:
        small = np.rint(small)
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


def run_export(args) -> None:
    from volinr.data.admission import float32_voxels
    from volinr.data.export import write_dicom_series, write_nifti

    reconstruction, _ = load_array(args.reconstruction)
    # the readers' admission: float64 beyond float32's range became Inf in the NIfTI
    reconstruction = float32_voxels(reconstruction, str(args.reconstruction))
    geometry = read_json_object(args.geometry)
    if reconstruction.ndim != 3 or list(reconstruction.shape) != geometry.get("shape"):
        raise InputError(
            f"{args.reconstruction}: shape {reconstruction.shape} does not match the original's "
            f"{geometry.get('shape')} ({args.geometry})"
        )
    # spacing, orientation and positions, before anything is written: a NaN once stopped
    # nibabel with a traceback, non-unit cosines once halved the voxel size the NIfTI said
    check_geometry(args.geometry, geometry, reconstruction.shape)
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
