"""Codec sweeps: every setting encoded, decoded and measured against the original."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence

import imagecodecs
import numpy as np
from tqdm import tqdm

from volinr import metrics
from volinr.codec_sweeps import (
    LOSSLESS_CODECS,
    LOSSLESS_CODECS_3D,
    LOSSY_SWEEP_2D,
    LOSSY_SWEEP_3D,
)
from volinr.codecs.base import CodecError, CodecSetting, check_volume, exact_float
from volinr.codecs.float_codecs import ZSTD_LEVEL
from volinr.codecs.registry import CODECS, decode, encode
from volinr.errors import InputError

log = logging.getLogger("volinr.codecs")


def default_sweep(ndim: int) -> list[CodecSetting]:
    """The lossless settings, then each lossy codec from low to high rate. A volume is swept
    as one codestream per codec, plus JPEG 2000 per slice for the comparison."""
    if ndim not in (2, 3):
        raise ValueError(f"codec sweeps are for 2D or 3D images, got ndim {ndim}")
    lossless = LOSSLESS_CODECS if ndim == 2 else LOSSLESS_CODECS_3D
    settings = [CODECS[name].lossless_setting() for name in lossless]
    for name, parameters in (LOSSY_SWEEP_2D if ndim == 2 else LOSSY_SWEEP_3D).items():
        settings += [CODECS[name].setting(parameter) for parameter in parameters]
    return settings


def max_abs_error(reference: np.ndarray, test: np.ndarray) -> float:
    """max |reference - test| in float64, a slice at a time (no float64 copy of a volume)."""
    reference, test = np.asarray(reference), np.asarray(test)
    if reference.ndim == 2:
        reference, test = reference[None], test[None]
    return max(
        float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))))
        for a, b in zip(reference, test, strict=True)
    )


def measure(
    volume: np.ndarray, decoded: np.ndarray, window: tuple[float, float]
) -> dict[str, float]:
    """Quality of ``decoded`` against ``volume`` (floats: see ``exact_float``), in float64."""
    peak = float(np.max(volume)) - float(np.min(volume))
    return {
        "psnr_8bit_minmax_db": metrics.psnr_8bit(volume, decoded, window),
        "psnr_native_db": metrics.psnr(volume, decoded, peak),
        "ssim": metrics.ssim(volume, decoded),
        "max_abs_error_hu": max_abs_error(volume, decoded),
    }


def run_sweep(
    volume: np.ndarray,
    settings: Sequence[CodecSetting],
    window: tuple[float, float] | None = None,
    progress: bool | None = None,
) -> list[dict]:
    """Encode, decode and measure ``volume`` at every setting: one row each.

    PSNR (8-bit) uses ``window`` or the volume's min..max. A setting that its codec library
    refuses or fails is logged and skipped; any other error (a decoded shape that differs, a
    malformed stream of our own) is raised.
    """
    volume = exact_float(check_volume(volume))
    window = metrics.minmax_window(volume) if window is None else window
    if progress is None:
        progress = os.isatty(2)
    rows = []
    for setting in tqdm(settings, desc="codecs", disable=not progress):
        try:
            start = time.perf_counter()
            data = encode(volume, setting)
            encode_seconds = time.perf_counter() - start
            start = time.perf_counter()
            decoded = decode(data, setting, volume.shape)
            decode_seconds = time.perf_counter() - start
        except CodecError as err:
            log.warning("skipping %s: %s", setting, err)
            continue
        rows.append(
            {
                "codec": setting.codec,
                "parameter": setting.parameter,
                "lossless": setting.lossless,
                "error_bound_hu": setting.error_bound_hu,
                "bytes": len(data),
                "bits_per_voxel": metrics.bits_per_voxel(len(data), volume.size),
                **measure(volume, decoded, window),
                "encode_seconds": encode_seconds,
                "decode_seconds": decode_seconds,
                "sample_mapping": CODECS[setting.codec].sample_mapping(volume, setting),
            }
        )
        log.info(
            "%s %s: %.4f bits per voxel, %.2f dB",
            setting.codec,
            "lossless" if setting.lossless else f"{setting.parameter:g}",
            rows[-1]["bits_per_voxel"],
            rows[-1]["psnr_8bit_minmax_db"],
        )
    return rows


FLOAT32_ZSTD = "zstd (float32)"  # for images that are not integer HU
# The raw values under zstd, in the narrowest of these that holds them exactly: what is left
# when no image codec can store the image losslessly (integers beyond their ranges, floats
# that float32 does not hold).
# narrowest first: a uint16 image above 32767 (which the 16-bit codecs take as int16 and
# refuse) was stored as float32, twice its bytes
RAW_ZSTD = {
    "zstd (int16)": "<i2",
    "zstd (uint16)": "<u2",
    FLOAT32_ZSTD: "<f4",
    "zstd (int32)": "<i4",
    "zstd (float64)": "<f8",
}


def _raw_format(volume: np.ndarray) -> str:
    """The first of RAW_ZSTD's layouts that stores ``volume``'s values exactly."""
    for name, dtype in RAW_ZSTD.items():
        integer = np.dtype(dtype).kind in "iu"
        if integer and not np.array_equal(volume, np.rint(volume)):
            continue
        info = np.iinfo(dtype) if integer else np.finfo(dtype)
        low, high = float(volume.min()), float(volume.max())
        if low < info.min or high > info.max:
            continue
        if np.array_equal(volume.astype(dtype).astype(np.float64), volume.astype(np.float64)):
            return name
    raise InputError("the image's values are not representable in float64")  # unreachable


def smallest_lossless_stream(volume: np.ndarray) -> tuple[str, bytes]:
    """``volume`` under the best of the lossless codecs: which one, and its stream. The honest
    size of storing an image losslessly (e.g. the LR image of the ablation);
    ``decode_lossless_stream`` reads it back exactly. An image no codec takes exactly (not
    integer HU, or integers beyond the codecs' ranges) is stored as its raw values under zstd,
    in the narrowest layout that holds them exactly."""
    volume = check_volume(volume)
    streams = {}
    if volume.dtype.kind in "iu" or np.array_equal(volume, np.rint(volume)):
        for name in LOSSLESS_CODECS:
            setting = CODECS[name].lossless_setting()
            try:
                streams[name] = encode(volume, setting)
            except CodecError as err:
                log.info("lossless %s skipped: %s", name, err)
    # the raw values under zstd are always a candidate: the smallest is the smallest
    name = _raw_format(volume)
    raw = np.ascontiguousarray(volume, RAW_ZSTD[name]).tobytes()
    streams[name] = imagecodecs.zstd_encode(raw, level=ZSTD_LEVEL)
    best = min(streams, key=lambda name: len(streams[name]))
    return best, streams[best]


def decode_lossless_stream(codec: str, data: bytes, shape: tuple[int, ...]) -> np.ndarray:
    """The values of ``shape`` from a stream of ``smallest_lossless_stream`` (float32, or
    float64 where the stream holds float64 or int32 values)."""
    if codec in RAW_ZSTD:
        dtype = np.dtype(RAW_ZSTD[codec])
        raw = imagecodecs.zstd_decode(data)
        expected = dtype.itemsize * int(np.prod(shape))
        if len(raw) != expected:
            raise ValueError(f"{codec}: {len(raw)} bytes decoded, expected {expected}")
        values = np.frombuffer(raw, dtype).reshape(shape)
        # float32 holds 16-bit integers exactly, not every int32 (picked where it does not)
        wide = dtype.itemsize == 8 or (dtype.kind in "iu" and dtype.itemsize >= 4)
        return values.astype(np.float64 if wide else np.float32)
    return decode(data, CODECS[codec].lossless_setting(), shape)


def smallest_lossless(volume: np.ndarray) -> tuple[int, str]:
    """Bytes of ``volume`` under the best of the lossless codecs, and which one."""
    codec, stream = smallest_lossless_stream(volume)
    return len(stream), codec
