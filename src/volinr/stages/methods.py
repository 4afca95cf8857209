"""Stages of the rate-distortion benchmark's methods.

``volinr rd`` runs one group of one method (a SIREN fit's weight formats, a codec's sweep):
each operating point is encoded into a file, the file is read back and decoded from its bytes
alone (plus the shared assets the method declares), and the reconstruction is evaluated with
the same metrics as every other method; the rates come from the file's size. The method's
paper point (the SIREN's float32 weights, the stored true LR) also gets the full record the
paper's tables read, its per-slice metrics, and, when asked, its reconstruction.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from volinr import evaluation, provenance
from volinr.errors import InputError
from volinr.io import load_image, save_array, write_csv, write_json
from volinr.methods.base import Image, Method, OperatingPoint, PaperView, PointSkipped
from volinr.outputs import atomic_path

log = logging.getLogger(__name__)


def run_codecs(args) -> None:
    from volinr import codecs

    volume, _ = load_image(args.input)
    evaluation.admit(volume, args.input)
    rows = codecs.run_sweep(volume, codecs.default_sweep(volume.ndim))
    if not rows:
        raise InputError(f"{args.input}: no codec setting could encode this image")
    write_csv(args.out, rows, provenance.record(args))


class ClaimFailed(Exception):
    """A point's decoded data breaks what the point claims (lossless, an error bound)."""


def array_sha256(array) -> str:
    """The fingerprint of an array's values (its dtype and shape included)."""
    import hashlib

    import numpy as np

    digest = hashlib.sha256(f"{array.dtype.str}{array.shape}".encode())
    digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()


def file_stem(point: OperatingPoint) -> str:
    return point.name.replace(" ", "_")


def run_rd(args) -> None:
    from volinr.methods import family
    from volinr.settings import section
    from volinr.stages.common import device_from_args

    try:
        cls = family(args.method)
    except KeyError as err:
        raise InputError(f"--method {args.method}: {err.args[0]}") from None
    missing = sorted(set(cls.sections) - set(args.settings))
    if missing:
        raise InputError(f"--settings: the {args.method} method needs the sections {missing}")
    # checked as the workflow's validation checks them: a hand run gets the same refusals
    args.settings = {
        name: section(name, given) if isinstance(given, dict) else given
        for name, given in args.settings.items()
    }
    if args.group not in cls.groups(args.settings, args.settings):
        raise InputError(f"--group {args.group}: not a group of {args.method} with these settings")
    # the files the group reads, by name (their paths are the workflow's; only names here)
    needed = sorted(set(cls.group_inputs(args.settings, args.settings, args.group)))
    missing = [name for name in needed if name not in args.inputs]
    if missing:
        raise InputError(
            f"--inputs: {args.method} {args.group} needs {', '.join(missing)} "
            f"(it reads {', '.join(needed)})"
        )
    for name, path in args.inputs.items():
        if not Path(path).is_file():
            raise InputError(f"{path}: the {args.method} input {name!r} does not exist")
    device = device_from_args(args) if cls.uses_torch else None
    if cls.multithreaded and not cls.uses_torch:
        from volinr.devices import set_threads

        set_threads(args.threads)
    method = cls(args.settings, args.group, args.inputs, device)
    voxels, meta = load_image(args.image)
    evaluation.admit(voxels, str(args.image))
    image = Image(voxels, meta, str(args.image))
    minmax, tissue = evaluation.windows(voxels, args.tissue_window, args.image)
    # the shared assets' bytes: reported apart, and amortised by the methods that say so
    shared_bytes = sum(
        Path(args.inputs[name]).stat().st_size for name in cls.shared_assets if name in args.inputs
    )
    block = provenance.record(args, device)
    rows, refused = [], []
    for point in method.points():
        try:
            row = _run_point(method, image, point, args, (minmax, tissue), shared_bytes, block)
        except ClaimFailed as err:
            log.warning("refusing %s %s: %s", method.group, point.name, err)
            refused.append({"point": point.name, "reason": str(err)})
            continue
        if row is not None:
            rows.append(row)
    if not rows:
        raise InputError(f"{args.image}: no point of {args.method} {args.group} could code it")
    write_json(
        args.out,
        {
            "family": cls.family,
            "kind": cls.kind,
            "group": args.group,
            # what the rows were measured on: tables refuse to set rows of two images together
            "image_sha256": array_sha256(voxels),
            "counts": cls.counts,
            "shared_assets": {name: args.inputs.get(name) for name in cls.shared_assets},
            "rows": rows,
            # points whose decoded data broke their own claim (lossless, an error bound)
            "refused_points": refused,
            "provenance": block,
        },
    )


def _run_point(
    method: Method,
    image: Image,
    point: OperatingPoint,
    args,
    windows: tuple[tuple[float, float], tuple[float, float]],
    shared_bytes: int,
    block: dict[str, Any],
) -> dict[str, Any] | None:
    minmax, tissue = windows
    try:
        start = time.perf_counter()
        data = method.encode(image, point)
        encode_seconds = time.perf_counter() - start
    except PointSkipped as err:
        log.warning("skipping %s %s: %s", method.group, point.name, err)
        return None
    path = Path(args.files_dir) / f"{file_stem(point)}{method.suffix}"
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
        # decoded from the bytes written, not from the encoder's memory
        stored = tmp.read_bytes()
        start = time.perf_counter()
        decoded = method.decode(stored, str(path), point, tuple(image.voxels.shape))
        decode_seconds = time.perf_counter() - start
        reconstruction = decoded.voxels
        evaluation.check_pair(image.voxels, reconstruction, image.path, str(path))
        max_error = evaluation.max_abs_error_hu(image.voxels, reconstruction)
        claim = method.claimed_max_error(point)
        if claim is not None and not max_error <= claim:
            # raised before the file is kept: its temporary goes, and no row is written
            kind = "lossless" if claim == 0 else f"an error bound of {claim:g}"
            raise ClaimFailed(
                f"it claims {kind} but its decoded data is off by up to {max_error:g} (the "
                f"image's values {float(image.voxels.min()):g}..{float(image.voxels.max()):g})"
            )
        # beside the file, not in its bytes; renamed into place before the file itself
        provenance.write_sidecar(path, block)
    quality = evaluation.quality(image.voxels, reconstruction, minmax, tissue)
    voxels = quality["voxels"]
    label = method.label(point)
    facts = method.record(image, point, stored)
    is_paper_point = point.name == method.paper_point
    row: dict[str, Any] = {
        **label,
        "family": method.family,
        "kind": method.kind,
        "group": method.group,
        "point": point.name,
        "file": str(path),
        "bytes": len(stored),
        "what_bytes_count": method.counts,
        **quality,
        "max_abs_error_hu": max_error,
        # what the values are: HU for CT read with its rescale; the tables say so when not
        "units": image.meta.get("units") or "unknown",
        "encode_seconds": encode_seconds,
        "decode_seconds": decode_seconds,
        **{k: v for k, v in facts.items() if k != "fit_record"},
    }
    rates = method.rates(len(stored), voxels, shared_bytes, args.sr_amortize_over, facts)
    row.update(rates)
    paper = None
    if is_paper_point:
        view = PaperView(point, quality, facts, rates, len(stored), shared_bytes, decoded, minmax)
        paper = method.paper_view(view)
    if is_paper_point and paper is not None:
        paper["decode_seconds"] = decode_seconds
        paper["units"] = row["units"]
        row["paper_view"] = evaluation.finish(paper, str(path))
        _keep_paper_outputs(method, point, image, decoded, minmax, args, paper, block)
    log.info(
        "%s %s %s: %d bytes, %.4f bits per voxel, %.2f dB",
        method.family,
        method.group,
        point.name,
        len(stored),
        row["bits_per_voxel"],
        row["psnr_8bit_minmax_db"],
    )
    return evaluation.finish(row, str(path))


def _keep_paper_outputs(method, point, image, decoded, minmax, args, paper, block) -> None:
    """The paper point's per-slice metrics and, when asked, its reconstruction (figures,
    export): ``<point>.slices.csv``, ``<point>.npy`` and each intermediate's ``.npy``."""
    stem = Path(args.files_dir) / file_stem(point)
    label = {key: paper[key] for key in ("method", "layers", "seed") if key in paper}
    rows = evaluation.per_slice_rows(image.voxels, decoded.voxels, minmax, label)
    write_csv(f"{stem}.slices.csv", rows, block)
    if not args.keep_reconstruction:
        return
    geometry = {k: v for k, v in image.meta.items() if k not in ("shape", "dtype", "sha256")}
    record = {"decoded_from": f"{stem}{method.suffix}", "provenance": block}
    save_array(f"{stem}.npy", decoded.voxels, geometry | decoded.meta | record)
    for name, array in decoded.intermediates.items():
        save_array(f"{stem}.{name}.npy", array, record)
