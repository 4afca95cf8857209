"""The evaluation stage: quality and rates of one reconstruction against the original."""

from __future__ import annotations

import logging
from pathlib import Path

from volinr import evaluation, provenance, rates
from volinr.errors import InputError
from volinr.io import (
    load_array,
    load_image,
    read_json_object,
    write_csv,
    write_json,
)

log = logging.getLogger(__name__)


def _load_pair(reference_path: str, reconstruction_path: str):
    """A reference and a reconstruction of the same shape (else an error naming both files)."""
    reference, meta = load_image(reference_path)
    reconstruction, recon_meta = load_image(reconstruction_path)
    evaluation.check_pair(reference, reconstruction, reference_path, reconstruction_path)
    return reference, reconstruction, meta, recon_meta


def run_evaluate(args) -> None:
    """Quality and rates of one reconstruction, by hand (the workflow's method jobs measure
    every point the same way in-process, with ``volinr.evaluation`` and ``volinr.rates``)."""
    from volinr import metrics

    reference, reconstruction, ref_meta, recon_meta = _load_pair(
        args.reference, args.reconstruction
    )
    minmax, tissue = evaluation.windows(reference, args.tissue_window, args.reference)
    result = dict(args.label)
    result.update(
        reference=str(args.reference),
        reference_source=ref_meta.get("source"),
        reconstruction=str(args.reconstruction),
        **evaluation.quality(reference, reconstruction, minmax, tissue),
    )
    voxels = result["voxels"]
    if args.lr_reference and args.lr_reconstruction:
        lr_reference, lr_reconstruction, _, _ = _load_pair(
            args.lr_reference, args.lr_reconstruction
        )
        result["lr_psnr_8bit_minmax_db"] = metrics.psnr_8bit(
            lr_reference, lr_reconstruction, minmax
        )
    if args.sr_model and not Path(args.sr_model).is_file():
        raise InputError(f"{args.sr_model}: SR model not found")
    sr_bytes = Path(args.sr_model).stat().st_size if args.sr_model else 0
    result["sr_model_bytes"] = sr_bytes
    result.update(rates.original_bytes(voxels))
    if args.stored_array:
        from volinr.codecs import smallest_lossless

        stored, _ = load_array(args.stored_array)
        stored_bytes, codec = smallest_lossless(stored)
        result.update(
            stored_bytes=stored_bytes,
            stored_codec=codec,  # the tables name it beside the bits per voxel it gives
            stored_what=f"{args.stored_array} coded losslessly ({codec}, the smallest)",
            **rates.stored_rates(stored_bytes, voxels, sr_bytes, args.sr_amortize_over),
        )
    if args.fit_record:
        try:
            records = [read_json_object(p) for p in args.fit_record]
            result.update(rates.fit_rates(records, voxels, sr_bytes))
        except (KeyError, TypeError, ValueError) as err:
            raise InputError(f"{args.fit_record}: not a fit record ({err})") from None
    if args.container:
        container = Path(args.container)
        if not container.exists():
            raise InputError(f"{container}: No such file or directory")
        if not container.is_file():
            raise InputError(f"{container}: not a file (the container whose bytes are counted)")
        size = container.stat().st_size
        if size == 0:
            raise InputError(f"{container}: empty (a container holds at least its header)")
        result.update(
            container=str(args.container),
            container_bytes=size,
            weights_bytes=size,
            **rates.file_rates(size, voxels, sr_bytes, args.sr_amortize_over),
        )
    if "decode_seconds" in recon_meta:
        result["decode_seconds"] = recon_meta["decode_seconds"]
    # as rd's rows: what an infinite 8-bit PSNR's reason points to
    result["max_abs_error_hu"] = evaluation.max_abs_error_hu(reference, reconstruction)
    evaluation.finish(result, args.reconstruction)
    result["provenance"] = provenance.record(args)
    if args.per_slice:
        rows = evaluation.per_slice_rows(reference, reconstruction, minmax, args.label)
        write_csv(args.per_slice, rows, result["provenance"])
    write_json(args.out, result)
