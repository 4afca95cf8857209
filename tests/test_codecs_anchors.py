"""The fair classical anchors: one codestream per volume for the 2D codecs (mosaic), and
errors in float64."""

import math

import numpy as np
import pytest

from volinr import codecs
from volinr.codecs import mosaic
from volinr.codecs.streams import ByteReader, put_varint
from volinr.io import InputError
from volinr.volumes import synthetic_head_phantom

IMAGE_CODECS = ["jpeg2000", "htj2k", "jpegls", "jpegxl"]


@pytest.fixture(scope="module")
def phantom():
    """13 slices: a 4x4 mosaic grid with 3 unused tiles."""
    return synthetic_head_phantom((13, 64, 64), seed=3).voxels


@pytest.fixture(scope="module")
def real_slice():
    from volinr.sources import read_frame

    return read_frame("pydicom-data:693_UNCR.dcm").pixels  # -3024..1468 HU


def narrow_volume(shape=(5, 40, 48), seed=0) -> np.ndarray:
    """Integer HU spanning less than 12 bits (-1024..3000)."""
    rng = np.random.default_rng(seed)
    z, y, x = np.mgrid[0 : shape[0], 0 : shape[1], 0 : shape[2]]
    smooth = 1200 * np.sin(x / 7 + z / 3) * np.cos(y / 9) + 600
    noisy = smooth + rng.normal(0, 20, shape)
    volume = np.rint(np.clip(noisy, -1024, 3000)).astype(np.float32)
    volume[0, 0, 0], volume[-1, -1, -1] = -1024, 3000
    return volume


# --- the mosaic ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("count", "grid"), [(1, (1, 1)), (2, (1, 2)), (4, (2, 2)), (5, (2, 3)), (10, (3, 4))]
)
def test_the_grid_is_near_square(count, grid):
    assert mosaic.near_square_grid(count) == grid


def test_tiling_round_trips_and_fills_unused_tiles_with_the_constant():
    slab = np.arange(7 * 3 * 2, dtype=np.int16).reshape(7, 3, 2)
    image = mosaic.tile(slab, grid_cols=3, fill=-5)
    assert image.shape == (9, 6)
    assert np.array_equal(image[0:3, 2:4], slab[1])  # row-major: slice 1 is top middle
    assert np.all(image[6:9, 2:6] == -5)  # the two unused tiles
    assert np.array_equal(mosaic.untile(image, 7, 3, 2), slab)


def test_a_volume_beyond_the_limits_is_split_into_equal_slabs(monkeypatch):
    geometry = mosaic.plan((100, 64, 64), max_side=1 << 30, codec="x")
    assert (geometry.codestreams, geometry.grid_cols) == (1, 10)
    monkeypatch.setattr(mosaic, "MAX_PIXELS_PER_CODESTREAM", 30 * 64 * 64)
    geometry = mosaic.plan((100, 64, 64), max_side=1 << 30, codec="x")
    # at most 30 tiles (5 x 6) a codestream: 4 codestreams of 25 slices
    assert (geometry.codestreams, geometry.slab_slices) == (4, 25)
    geometry = mosaic.plan((100, 64, 64), max_side=64 * 3, codec="x")  # 3 x 3 tiles at most
    assert geometry.slab_slices <= 9 and geometry.codestreams == math.ceil(100 / 9)
    with pytest.raises(codecs.CodecError, match="exceeds the codec's limits"):
        mosaic.plan((3, 64, 64), max_side=63, codec="jpegxl")


@pytest.mark.parametrize("name", IMAGE_CODECS)
def test_mosaic_round_trip_is_exact_for_lossless_codecs(name, phantom, monkeypatch):
    setting = codecs.CODECS[name].lossless_setting()
    for max_pixels in (mosaic.MAX_PIXELS_PER_CODESTREAM, 5 * 64 * 64):  # 1 and 3 codestreams
        monkeypatch.setattr(mosaic, "MAX_PIXELS_PER_CODESTREAM", max_pixels)
        data = codecs.encode(phantom, setting)
        assert np.array_equal(codecs.decode(data, setting, phantom.shape), phantom)


def test_jpegls_keeps_its_bound_on_a_mosaic(phantom):
    setting = codecs.CODECS["jpegls"].setting(6)
    decoded = codecs.decode(codecs.encode(phantom, setting), setting, phantom.shape)
    assert 0 < np.max(np.abs(decoded.astype(np.float64) - phantom)) <= 6


def test_one_codestream_removes_the_per_slice_headers(phantom):
    """JPEG 2000 at its lowest settings: per slice, the rate is mostly headers (>= 150 bytes a
    slice); one codestream for the volume is several times smaller and reaches a lower floor."""
    rows = codecs.run_sweep(
        phantom,
        [
            codecs.CODECS[name].setting(level)
            for name in ("jpeg2000", "jpeg2000_per_slice")
            for level in (46, 50, 52)
        ],
        progress=False,
    )
    rate = {(row["codec"], row["parameter"]): row["bytes"] for row in rows}
    slices = phantom.shape[0]
    assert rate["jpeg2000_per_slice", 46] >= 150 * slices
    for level in (46, 50, 52):
        assert rate["jpeg2000", level] < rate["jpeg2000_per_slice", level] / 2
    floor = {
        name: min(row["bits_per_voxel"] for row in rows if row["codec"] == name)
        for name in ("jpeg2000", "jpeg2000_per_slice")
    }
    assert floor["jpeg2000"] < floor["jpeg2000_per_slice"] / 4


def header_fields(data: bytes) -> list[int]:
    reader = ByteReader(data, "test")
    return [reader.varint() for _ in range(5)]


def with_header(fields, rest: bytes) -> bytes:
    return b"".join(put_varint(value) for value in fields) + rest


def test_a_damaged_or_inconsistent_mosaic_geometry_is_refused(phantom):
    setting = codecs.CODECS["jpeg2000"].lossless_setting()
    data = codecs.encode(phantom, setting)
    fields = header_fields(data)
    assert fields == [13, 64, 64, 4, 13]
    rest = data[5:]
    cases = [
        (with_header([12, 64, 64, 4, 13], rest), "mosaic header says shape"),
        (with_header([13, 64, 64, 4, 0], rest), "0 slices per codestream"),
        (with_header([13, 64, 64, 4, 14], rest), "14 slices per codestream"),
        (with_header([13, 64, 64, 14, 13], rest), "14 grid columns"),
        (with_header([13, 64, 64, 5, 13], rest), "inconsistent or corrupted"),
        (with_header([13, 64, 64, 4, 7], rest), r"codestream \d of 2 does not decode"),
        (data[:3], "truncated header"),
        (data[:5], "the last codestream is missing"),
        (bytes([0x80] * 12), "runs on"),
    ]
    for damaged, message in cases:
        with pytest.raises(InputError, match=message):
            codecs.decode(damaged, setting, phantom.shape)


def test_a_split_volume_refuses_a_lost_codestream(phantom, monkeypatch):
    monkeypatch.setattr(mosaic, "MAX_PIXELS_PER_CODESTREAM", 6 * 64 * 64)  # 2 x 3 tiles
    setting = codecs.CODECS["jpegls"].lossless_setting()
    data = codecs.encode(phantom, setting)
    body = data[2:]  # after JPEG-LS's offset
    reader = ByteReader(body, "t")
    fields = [reader.varint() for _ in range(5)]
    first, second = reader.varint(), reader.varint()
    assert fields == [13, 64, 64, 3, 5]  # 3 codestreams of 5, 5 and 3 slices
    truncated = data[: 2 + reader.position + first + second // 2]
    with pytest.raises(InputError, match="promises"):
        codecs.decode(truncated, setting, phantom.shape)


# --- errors in float64 ---------------------------------------------------------------------


def test_sweep_errors_are_computed_without_integer_overflow():
    rng = np.random.default_rng(0)
    ct = np.rint(rng.normal(0, 300, (48, 48))).astype(np.int16)
    ct[:6] = -32768  # padding at the int16 minimum: max - min = 35,000 overflows int16
    settings = [codecs.CODECS["sz3"].setting(50), codecs.CODECS["jpeg2000"].setting(70)]
    as_int16 = codecs.run_sweep(ct, settings, progress=False)
    as_float64 = codecs.run_sweep(ct.astype(np.float64), settings, progress=False)
    for a, b in zip(as_int16, as_float64, strict=True):
        for key in ("psnr_8bit_minmax_db", "psnr_native_db", "ssim", "max_abs_error_hu"):
            assert a[key] == pytest.approx(b[key], rel=1e-9), key
    big = (rng.integers(-(2**30), 2**30, (32, 32))).astype(np.int32)
    (row,) = codecs.run_sweep(big, [codecs.CODECS["sz3"].setting(1000)], progress=False)
    assert math.isfinite(row["psnr_native_db"]) and row["psnr_native_db"] > 0
    assert codecs.exact_float(big).dtype == np.float64  # not merged by a float32 cast
    assert codecs.exact_float(ct).dtype == np.float32
