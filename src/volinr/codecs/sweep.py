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
from volinr.codecs.base import CodecError, CodecSetting, check_volume, exact_float
from volinr.codecs.float_codecs import ZSTD_LEVEL
from volinr.codecs.registry import CODECS, decode, encode
from volinr.errors import InputError

log = logging.getLogger("volinr.codecs")

# About 0.01 .. 3 bits per voxel on 693_UNCR, each crossing 30..45 dB 8-bit PSNR (min..max
# window) except where the codec cannot go so low (JPEG-LS: NEAR <= 255; ZFP: per-block
# exponents). The 3D sweep keeps fewer points: a setting codes the whole volume.
LOSSY_SWEEP_2D: dict[str, tuple[float, ...]] = {
    "jpeg2000": (46, 50, 54, 58, 62, 66, 70, 80, 90, 110),
    "htj2k": (0.1, 0.03, 0.01, 0.003, 0.001, 3e-4, 1e-4, 3e-5, 1e-5),
    "jpegls": (255, 128, 64, 32, 16, 8, 4, 2, 1),
    "jpegxl": (15, 8, 4, 2, 1, 0.3, 0.1, 0.03, 0.01),
    "zfp": (16384, 8192, 2048, 512, 128, 32, 8, 2, 0.5),
    "sz3": (2048, 1024, 512, 256, 128, 64, 32, 8, 2, 0.5),
    "hevc": (46, 40, 34, 28, 22, 16, 10, 4, 0),
    "av1": (63, 55, 45, 35, 25, 15, 5, 1),
}
LOSSY_SWEEP_3D: dict[str, tuple[float, ...]] = {
    "jpeg2000": (46, 52, 58, 64, 70, 90),
    "jpeg2000_per_slice": (46, 52, 58, 64, 70, 90),
    "htj2k": (0.1, 0.03, 0.01, 0.001, 1e-4, 1e-5),
    "jpegls": (255, 64, 16, 4, 1),
    "jpegxl": (15, 4, 1, 0.3, 0.03),
    "zfp": (32768, 8192, 2048, 512, 32, 0.5),
    "sz3": (2048, 512, 256, 64, 8, 0.5),
    "hevc": (46, 40, 34, 28, 22, 16, 10, 4, 0),
    "av1": (63, 55, 45, 35, 25, 15, 5, 1),
}
# hevc's lossless setting refuses (and a sweep skips) data wider than 12 bits.
LOSSLESS_CODECS = ("zstd", "jpeg2000", "htj2k", "jpegls", "jpegxl", "hevc")
LOSSLESS_CODECS_3D = (*LOSSLESS_CODECS, "jpeg2000_per_slice")


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


def smallest_lossless(volume: np.ndarray) -> tuple[int, str]:
    """Bytes of ``volume`` (integer HU) under the best of the lossless codecs, and which one:
    the honest size of storing an image losslessly (e.g. the LR image of the ablation)."""
    volume = check_volume(volume)
    if volume.dtype.kind == "f" and not np.array_equal(volume, np.rint(volume)):
        # Not integer HU (e.g. a resampled NIfTI): zstd on the float32 bytes is lossless.
        raw = np.ascontiguousarray(volume, "<f4").tobytes()
        return len(imagecodecs.zstd_encode(raw, level=ZSTD_LEVEL)), "zstd (float32)"
    sizes = {}
    for name in LOSSLESS_CODECS:
        setting = CODECS[name].lossless_setting()
        try:
            sizes[name] = len(encode(volume, setting))
        except CodecError as err:
            log.info("lossless %s skipped: %s", name, err)
    if not sizes:
        raise InputError("no lossless codec could encode the image (is it integer-valued?)")
    best = min(sizes, key=sizes.get)
    return sizes[best], best
