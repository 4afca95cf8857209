"""Stages of the rate-distortion benchmark's methods."""

from __future__ import annotations

import logging

from volinr import provenance
from volinr.errors import InputError
from volinr.io import (
    load_image,
    write_csv,
)

log = logging.getLogger(__name__)


def run_codecs(args) -> None:
    from volinr import codecs

    volume, _ = load_image(args.input)
    rows = codecs.run_sweep(volume, codecs.default_sweep(volume.ndim))
    if not rows:
        raise InputError(f"{args.input}: no codec setting could encode this image")
    write_csv(args.out, rows, provenance.record(args))
