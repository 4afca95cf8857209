"""The fair classical anchors: one codestream per volume for the 2D codecs (mosaic), HEVC at
12 bits and AV1 at 10 bits with their stated sample mappings, and errors in float64."""

import math

import numpy as np
import pytest

from volinr import codecs
from volinr.codecs import mosaic, video
from volinr.codecs.av1 import temporal_units
from volinr.codecs.streams import ByteReader, put_signed_varint, put_varint
from volinr.data.phantom import synthetic_head_phantom
from volinr.errors import InputError

IMAGE_CODECS = ["jpeg2000", "htj2k", "jpegls", "jpegxl"]


@pytest.fixture(scope="module")
def phantom():
    """13 slices: a 4x4 mosaic grid with 3 unused tiles."""
    return synthetic_head_phantom((13, 64, 64), seed=3).voxels


@pytest.fixture(scope="module")
def real_slice():
    from volinr.data.dicom_frames import read_frame

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


# --- video codecs: the stated sample mapping -----------------------------------------------


@pytest.mark.parametrize("bits", [10, 12])
def test_the_sample_mapping_is_an_offset_within_range_and_a_stated_scale_beyond(bits):
    top = (1 << bits) - 1
    exact = np.array([-1024.0, -1024.0 + top, -1007.0])
    mapping = video.SampleMapping.of(exact, bits)
    assert not mapping.scaled and mapping.describe() == f"uint{bits} = HU - (-1024)"
    assert np.array_equal(mapping.to_hu(mapping.to_samples(exact)), exact)
    wide = np.array([-3024.0, 1468.0, 0.0, 1000.5])  # the embedded slice's range
    mapping = video.SampleMapping.of(wide, bits)
    step = 4492 / top
    assert mapping.scaled and mapping.step_hu == pytest.approx(step)
    assert f"{step:.3f} HU" in mapping.describe() and "4492 HU" in mapping.describe()
    error = np.abs(mapping.to_hu(mapping.to_samples(wide)) - wide)
    assert error.max() <= step / 2 + 1e-3 and error.max() > 0
    assert mapping.to_hu(mapping.to_samples(wide)).min() == -3024  # nothing clipped
    assert mapping.to_hu(mapping.to_samples(wide)).max() == pytest.approx(1468)


def test_signed_varints_round_trip():
    for value in (0, 1, -1, 63, -64, 4095, -3024, -(2**40), 2**40):
        assert ByteReader(put_signed_varint(value), "t").signed_varint() == value


# --- HEVC ----------------------------------------------------------------------------------


def hevc(parameter=None):
    codec = codecs.CODECS["hevc"]
    return codec.lossless_setting() if parameter is None else codec.setting(parameter)


@pytest.mark.parametrize("which", ["slice", "volume"])
def test_hevc_decodes_from_its_bytes_alone(which, real_slice, phantom):
    array = real_slice if which == "slice" else phantom
    setting = hevc(22)
    data = codecs.encode(array, setting)
    fresh = codecs.Hevc()  # a new decoder: nothing carried over from the encoder
    decoded = fresh.decode(bytes(data), setting, array.shape)
    assert decoded.shape == array.shape and decoded.dtype == np.float32
    window = (float(array.min()), float(array.max()))
    assert codecs.metrics.psnr_8bit(array, decoded, window) > 35
    with pytest.raises(InputError, match="header says shape"):
        fresh.decode(data, setting, (array.shape[0] + 1, *array.shape[1:]))
    if which == "volume":  # frames lost to truncation are noticed (a truncated intra frame
        # decodes partially, as a truncated JPEG 2000 codestream does: integrity is the
        # container's sha256's job)
        with pytest.raises(InputError, match="decodes to"):
            fresh.decode(data[: len(data) // 3], setting, array.shape)


@pytest.mark.parametrize("shape", [(5, 40, 48), (1, 64, 64), (3, 70, 66)])
def test_hevc_lossless_is_exact_within_12_bits(shape):
    volume = narrow_volume(shape)
    assert volume.max() - volume.min() == 4024
    data = codecs.encode(volume, hevc())
    assert np.array_equal(codecs.decode(data, hevc(), shape), volume)
    assert np.array_equal(
        codecs.decode(codecs.encode(volume[0], hevc()), hevc(), shape[1:]), volume[0]
    )


def test_hevc_lossless_refuses_a_range_wider_than_12_bits(real_slice, caplog):
    with pytest.raises(codecs.CodecError, match="within 12 bits; this image spans 4492 HU"):
        codecs.encode(real_slice, hevc())
    edge = np.zeros((64, 64), np.float32)
    edge[0, 0] = 4095  # exactly 12 bits: exact
    assert np.array_equal(codecs.decode(codecs.encode(edge, hevc()), hevc(), edge.shape), edge)
    edge[0, 0] = 4096
    with pytest.raises(codecs.CodecError, match="spans 4096 HU"):
        codecs.encode(edge, hevc())
    rows = codecs.run_sweep(real_slice, [hevc(), hevc(10)], progress=False)
    assert [row["lossless"] for row in rows] == [False]
    assert "skipping" in caplog.text


def test_hevc_states_its_mapping_and_the_metrics_count_its_error(real_slice):
    (row,) = codecs.run_sweep(real_slice, [hevc(0)], progress=False)
    assert row["sample_mapping"].startswith("uint12 = round((HU - (-3024)) x 4095/4492)")
    assert "step 1.097 HU" in row["sample_mapping"]
    assert row["max_abs_error_hu"] > 0 and math.isfinite(row["psnr_native_db"])
    # a range far beyond 12 bits: coarse, stated, and the error is what the metrics show
    wide = real_slice.astype(np.float64) * 100
    (row,) = codecs.run_sweep(wide, [hevc(0)], progress=False)
    step = (wide.max() - wide.min()) / 4095
    assert f"step {step:.3f} HU" in row["sample_mapping"]
    decoded = codecs.decode(codecs.encode(wide, hevc(0)), hevc(0), wide.shape)
    assert row["max_abs_error_hu"] == pytest.approx(np.max(np.abs(decoded - wide)), rel=1e-6)
    assert row["max_abs_error_hu"] >= step / 2 * 0.5


@pytest.mark.parametrize("shape", [(8, 64, 64), (64, 64), (4, 96, 80)])
def test_hevc_bytes_are_deterministic(shape):
    volume = narrow_volume(shape if len(shape) == 3 else (1, *shape), seed=2)
    array = volume if len(shape) == 3 else volume[0]
    streams = {codecs.encode(array, hevc(28)) for _ in range(4)}
    assert len(streams) == 1


def test_hevc_pads_small_frames_and_crops_them_back():
    volume = narrow_volume((3, 9, 20))
    data = codecs.encode(volume, hevc())
    assert np.array_equal(codecs.decode(data, hevc(), volume.shape), volume)


# --- AV1 -----------------------------------------------------------------------------------


def av1(parameter):
    return codecs.CODECS["av1"].setting(parameter)


def test_av1_round_trips_from_bytes_alone_with_its_10_bit_mapping_stated(real_slice, phantom):
    for array in (real_slice, phantom):
        data = codecs.encode(array, av1(20))
        assert {codecs.encode(array, av1(20)) for _ in range(2)} == {data}  # deterministic
        decoded = codecs.Av1().decode(bytes(data), av1(20), array.shape)
        window = (float(array.min()), float(array.max()))
        assert codecs.metrics.psnr_8bit(array, decoded, window) > 35
    (row,) = codecs.run_sweep(real_slice, [av1(1)], progress=False)
    assert row["sample_mapping"].startswith("uint10 = round((HU - (-3024)) x 1023/4492)")
    assert row["max_abs_error_hu"] > 0


def test_av1_streams_split_into_one_temporal_unit_per_frame(phantom):
    data = codecs.encode(phantom, av1(40))
    body = data[len(put_varint(13) + put_varint(64) * 2) :]
    reader = ByteReader(body, "t")
    reader.signed_varint(), reader.varint()  # the mapping
    units = temporal_units(bytes(reader.rest()))
    assert len(units) == phantom.shape[0]
    with pytest.raises(InputError, match="av1 stream"):
        temporal_units(bytes([0x12, 0x00, 0x32, 0x7F, 1, 2]))  # an OBU longer than the stream
    with pytest.raises(InputError, match="corrupted OBU header"):
        temporal_units(bytes([0x92, 0x00]))


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
