"""Which settings each classical codec is swept at: the classical method's operating points.

Standard library only: the workflow reads these while it builds the DAG (one job per codec).
"""

from __future__ import annotations

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


def sweep_codecs(ndim: int) -> list[str]:
    """Every codec of the sweep for a 2D slice or a 3D volume, lossless ones first."""
    lossless = LOSSLESS_CODECS if ndim == 2 else LOSSLESS_CODECS_3D
    lossy = LOSSY_SWEEP_2D if ndim == 2 else LOSSY_SWEEP_3D
    return list(dict.fromkeys([*lossless, *lossy]))
