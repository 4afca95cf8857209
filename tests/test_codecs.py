import logging
import math

import numpy as np
import pytest

from volinr import codecs
from volinr.errors import InputError

LOSSY_CODECS = list(codecs.LOSSY_SWEEP_2D)
# The lossless settings that take any int16 HU (hevc's needs a range within 12 bits; its
# tests are in test_codecs_anchors.py).
INT16_LOSSLESS = [name for name in codecs.LOSSLESS_CODECS_3D if name != "hevc"]


def synthetic_ct(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    """Integer HU: smooth tissue (-1024..2000) inside a disc, noise, -3024 padding outside."""
    rng = np.random.default_rng(seed)
    *slices, rows, cols = shape
    y, x = np.mgrid[0:rows, 0:cols] / max(rows, cols)
    planes = []
    for index in range(slices[0] if slices else 1):
        smooth = 600 * np.sin(6 * x + 0.3 * index) * np.cos(4 * y) + 900 * np.exp(
            -((x - 0.5) ** 2 + (y - 0.4) ** 2) * 20
        )
        plane = np.clip(smooth + rng.normal(0, 25, (rows, cols)), -1024, 2000)
        plane[(x - 0.5) ** 2 + (y - 0.5) ** 2 > 0.22] = -3024  # outside the scan field
        planes.append(plane)
    volume = np.rint(np.stack(planes)).astype(np.float32)
    return volume if slices else volume[0]


@pytest.fixture(scope="module")
def image():
    return synthetic_ct((64, 64))


@pytest.fixture(scope="module")
def volume():
    return synthetic_ct((6, 48, 48), seed=1)


def roundtrip(array, setting):
    data = codecs.encode(array, setting)
    decoded = codecs.decode(data, setting, array.shape)
    assert decoded.shape == array.shape and decoded.dtype == np.float32
    return data, decoded


def test_synthetic_data_looks_like_ct(image):
    assert image.min() == -3024 and -1024 <= np.min(image[image > -3024]) and image.max() <= 2000
    assert np.array_equal(image, np.rint(image))


@pytest.mark.parametrize("name", INT16_LOSSLESS)
@pytest.mark.parametrize("which", ["image", "volume"])
def test_lossless_settings_reproduce_integer_hu(name, which, request):
    array = request.getfixturevalue(which)
    setting = codecs.CODECS[name].lossless_setting()
    assert setting.lossless and setting.error_bound_hu == 0.0
    _, decoded = roundtrip(array, setting)
    assert np.array_equal(decoded, array)


BOUNDED = [("jpegls", near) for near in (1, 7, 100, 255)] + [
    (name, bound) for name in ("zfp", "sz3") for bound in (0.5, 3, 100, 5000)
]


@pytest.mark.parametrize(("name", "parameter"), BOUNDED)
@pytest.mark.parametrize("which", ["image", "volume"])
def test_error_bounded_settings_keep_their_bound(name, parameter, which, request):
    array = request.getfixturevalue(which)
    setting = codecs.CODECS[name].setting(parameter)
    assert setting.error_bound_hu == parameter
    _, decoded = roundtrip(array, setting)
    assert np.max(np.abs(decoded.astype(np.float64) - array)) <= setting.error_bound_hu + 1e-3


def test_sweep_rows_count_the_whole_stream(image, volume):
    settings = [
        codecs.CODECS["jpegls"].setting(4),
        codecs.CODECS["jpegxl"].lossless_setting(),
        codecs.CODECS["zfp"].setting(10),
    ]
    for array in (image, volume):
        rows = codecs.run_sweep(array, settings, progress=False)
        assert [row["codec"] for row in rows] == ["jpegls", "jpegxl", "zfp"]
        for row, setting in zip(rows, settings, strict=True):
            assert row["bytes"] == len(codecs.encode(array, setting))
            assert row["bits_per_voxel"] == pytest.approx(8 * row["bytes"] / array.size)
            assert row["max_abs_error_hu"] <= (setting.error_bound_hu or 0) + 1e-3
            assert row["encode_seconds"] >= 0 and row["decode_seconds"] >= 0
            assert set(row) == {
                "codec",
                "parameter",
                "lossless",
                "error_bound_hu",
                "bytes",
                "bits_per_voxel",
                "psnr_8bit_minmax_db",
                "psnr_native_db",
                "ssim",
                "max_abs_error_hu",
                "encode_seconds",
                "decode_seconds",
                "sample_mapping",
            }
        lossless = rows[1]
        assert lossless["psnr_8bit_minmax_db"] == math.inf and lossless["ssim"] == 1.0


def test_the_window_is_the_given_one_or_min_max(image):
    setting = codecs.CODECS["sz3"].setting(200)
    decoded = codecs.decode(codecs.encode(image, setting), setting, image.shape)
    (default,) = codecs.run_sweep(image, [setting], progress=False)
    (narrow,) = codecs.run_sweep(image, [setting], window=(-100, 100), progress=False)
    minmax = codecs.metrics.psnr_8bit(image, decoded, (image.min(), image.max()))
    assert default["psnr_8bit_minmax_db"] == pytest.approx(minmax)
    assert narrow["psnr_8bit_minmax_db"] == pytest.approx(
        codecs.metrics.psnr_8bit(image, decoded, (-100, 100))
    )
    assert narrow["psnr_8bit_minmax_db"] != pytest.approx(minmax)


@pytest.fixture(scope="module")
def default_rows(image):
    return codecs.run_sweep(image, codecs.default_sweep(2), progress=False)


@pytest.mark.parametrize("name", LOSSY_CODECS)
def test_each_lossy_sweep_spans_rates_and_quality_rises_with_rate(name, default_rows):
    rows = sorted(
        (row for row in default_rows if row["codec"] == name and not row["lossless"]),
        key=lambda row: row["bits_per_voxel"],
    )
    assert 6 <= len(rows) <= 10
    rates = [row["bits_per_voxel"] for row in rows]
    assert rates[-1] / rates[0] > 5  # JPEG-LS (NEAR <= 255) has the narrowest span
    psnr = [row["psnr_8bit_minmax_db"] for row in rows]
    for lower, higher in zip(psnr, psnr[1:], strict=False):
        assert higher >= lower - 0.5, (name, psnr)
    assert psnr[-1] - psnr[0] > 15


def test_default_sweeps_hold_the_lossless_settings_and_modest_lossy_ones():
    for ndim, lossless in ((2, codecs.LOSSLESS_CODECS), (3, codecs.LOSSLESS_CODECS_3D)):
        sweep = codecs.default_sweep(ndim)
        assert {s.codec for s in sweep if s.lossless} == set(lossless)
        for name in LOSSY_CODECS:
            assert 5 <= sum(s.codec == name and not s.lossless for s in sweep) <= 10
        for setting in sweep:
            codecs.codec_for(setting)  # every default setting is valid
    with pytest.raises(ValueError, match="2D or 3D"):
        codecs.default_sweep(4)


def test_the_3d_default_sweep_runs(volume, caplog):
    with caplog.at_level(logging.WARNING, logger="volinr.codecs"):
        rows = codecs.run_sweep(volume, codecs.default_sweep(3), progress=False)
    # every setting gives a row, except hevc's lossless one on a range wider than 12 bits
    wide = volume.max() - volume.min() > 4095
    assert len(rows) == len(codecs.default_sweep(3)) - wide
    assert any(row["codec"] == "hevc" and row["lossless"] for row in rows) != wide
    assert ("within 12 bits" in caplog.text) == wide
    assert all(row["bits_per_voxel"] > 0 for row in rows)
    assert {"jpeg2000", "jpeg2000_per_slice", "hevc", "av1"} <= {row["codec"] for row in rows}


# --- framing and corrupted streams ---------------------------------------------------------


@pytest.mark.parametrize("count", [0, 1, 2, 5])
def test_slice_framing_round_trips(count):
    payloads = [bytes(range(index * 3)) for index in range(count)]
    framed = codecs.frame_slices(payloads)
    assert len(framed) == 4 + 4 * count + sum(map(len, payloads))
    assert [bytes(p) for p in codecs.unframe_slices(framed, count)] == payloads


@pytest.mark.parametrize("slices", [1, 2, 7])
@pytest.mark.parametrize("name", ["jpeg2000", "htj2k", "jpegls", "jpegxl"])
def test_image_codecs_round_trip_volumes_of_any_depth(name, slices):
    volume = synthetic_ct((slices, 24, 32), seed=slices)
    for variant in (name, f"{name}_per_slice"):
        setting = codecs.CODECS[variant].lossless_setting()
        data, decoded = roundtrip(volume, setting)
        assert np.array_equal(decoded, volume)
        body = data[2:] if codecs.CODECS[variant].unsigned else data
        if variant.endswith("_per_slice"):  # the framing is part of the stream
            assert len(codecs.unframe_slices(body, slices)) == slices
        else:  # one codestream after the mosaic geometry (5 one-byte varints here)
            assert list(body[:5]) == [slices, 24, 32, math.isqrt(slices - 1) + 1, slices]


def test_unsigned_codecs_store_their_offset_in_the_stream():
    # JPEG-LS takes uint16: the stream must carry the minimum it subtracted
    low = synthetic_ct((32, 32)) - 1000  # down to -4024
    for name in ("jpegls", "jpegxl"):
        _, decoded = roundtrip(low, codecs.CODECS[name].lossless_setting())
        assert np.array_equal(decoded, low)


def test_constant_slices_code(volume):
    padded = volume.copy()
    padded[0] = -3024  # an all-padding slice
    padded[1] = 5
    for name in INT16_LOSSLESS:
        _, decoded = roundtrip(padded, codecs.CODECS[name].lossless_setting())
        assert np.array_equal(decoded, padded)


def test_corrupted_or_mismatched_streams_raise(volume):
    setting = codecs.CODECS["jpeg2000_per_slice"].lossless_setting()
    data = codecs.encode(volume, setting)
    with pytest.raises(InputError, match="truncated or corrupted"):
        codecs.decode(data[:-10], setting, volume.shape)
    with pytest.raises(InputError, match="truncated or corrupted"):
        codecs.decode(data + b"\0", setting, volume.shape)
    with pytest.raises(InputError, match="holds 6 slices, expected 5"):
        codecs.decode(data, setting, (5, *volume.shape[1:]))
    with pytest.raises(InputError, match="too short"):
        codecs.decode(data[:3], setting, volume.shape)
    with pytest.raises(InputError, match="truncated header"):
        codecs.decode(data[:12], setting, volume.shape)
    with pytest.raises(ValueError, match="decoded shape"):
        codecs.decode(data, setting, (6, 48, 40))
    jpegls = codecs.CODECS["jpegls"].setting(2)
    with pytest.raises(InputError, match="no offset header"):
        codecs.decode(b"\1", jpegls, (4, 4))
    zstd = codecs.CODECS["zstd"].lossless_setting()
    packed = codecs.encode(volume, zstd)
    with pytest.raises(InputError, match="expected"):
        codecs.decode(packed, zstd, (5, 48, 48))
    with pytest.raises(codecs.CodecError, match="zstd: decode failed"):
        codecs.decode(packed[:-5], zstd, volume.shape)
    assert issubclass(codecs.CodecError, ValueError)


# --- settings, inputs and failures ---------------------------------------------------------


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        (codecs.CodecSetting("png", 1.0, False, None), "unknown codec"),
        (codecs.CodecSetting("jpegls", 256.0, False, 256.0), "NEAR must be an integer"),
        (codecs.CodecSetting("jpegls", 2.5, False, 2.5), "NEAR must be an integer"),
        (codecs.CodecSetting("jpegxl", 30.0, False, None), "distance"),
        (codecs.CodecSetting("sz3", -1.0, False, -1.0), "> 0"),
        (codecs.CodecSetting("zfp", None, True, 0.0), "no lossless mode"),
        (codecs.CodecSetting("zstd", 3.0, False, None), "lossless only"),
        (codecs.CodecSetting("jpeg2000", None, False, None), "finite parameter"),
        (codecs.CodecSetting("hevc", 52.0, False, None), "crf must be in 0..51"),
        (codecs.CodecSetting("hevc", -1.0, False, None), "crf must be in 0..51"),
        (codecs.CodecSetting("av1", 0.0, False, None), "crf must be an integer 1..63"),
        (codecs.CodecSetting("av1", 30.5, False, None), "crf must be an integer 1..63"),
        (codecs.CodecSetting("av1", None, True, 0.0), "no lossless mode"),
    ],
)
def test_invalid_settings_are_refused(setting, message, image):
    with pytest.raises(ValueError, match=message):
        codecs.encode(image, setting)


def test_fractional_hu_rounds_when_lossy_and_is_refused_when_lossless(image, caplog):
    fractional = image + 0.25
    lossy = codecs.CODECS["jpegls"].setting(3)
    _, decoded = roundtrip(fractional, lossy)
    assert np.max(np.abs(decoded - fractional)) <= 3.25 + 1e-3  # rounding, then NEAR
    lossless = codecs.CODECS["jpeg2000"].lossless_setting()
    with pytest.raises(codecs.CodecError, match="integer HU"):
        codecs.encode(fractional, lossless)
    with caplog.at_level(logging.WARNING, logger="volinr.codecs"):
        rows = codecs.run_sweep(fractional, [lossless, lossy], progress=False)
    assert [row["codec"] for row in rows] == ["jpegls"]
    assert "skipping" in caplog.text and "integer HU" in caplog.text


def test_values_outside_int16_are_refused_by_integer_codecs(image):
    with pytest.raises(codecs.CodecError, match="int16"):
        codecs.encode(image * 20, codecs.CODECS["zstd"].lossless_setting())
    _, decoded = roundtrip(image * 20, codecs.CODECS["sz3"].setting(1))  # floats are fine


def test_a_library_failure_skips_the_setting(image, monkeypatch, caplog):
    def refuse(*args, **kwargs):
        raise RuntimeError("the library says no")

    monkeypatch.setattr(codecs.imagecodecs, "sz3_encode", refuse)
    settings = [codecs.CODECS["sz3"].setting(10), codecs.CODECS["zfp"].setting(10)]
    with caplog.at_level(logging.WARNING, logger="volinr.codecs"):
        rows = codecs.run_sweep(image, settings, progress=False)
    assert [row["codec"] for row in rows] == ["zfp"]
    assert "the library says no" in caplog.text


def test_a_decoded_shape_mismatch_is_an_error(image, monkeypatch):
    monkeypatch.setattr(
        codecs.Zfp, "decode", lambda self, data, setting, shape: np.zeros((2, 2), np.float32)
    )
    with pytest.raises(ValueError, match="decoded shape"):
        codecs.run_sweep(image, [codecs.CODECS["zfp"].setting(10)], progress=False)


@pytest.mark.parametrize(
    "bad",
    [np.zeros(5, np.float32), np.zeros((2, 2, 2, 2), np.float32), np.full((4, 4), np.nan)],
)
def test_bad_inputs_are_refused(bad):
    with pytest.raises(ValueError):
        codecs.encode(bad, codecs.CODECS["sz3"].setting(1))
    with pytest.raises(ValueError):
        codecs.run_sweep(bad, [codecs.CODECS["sz3"].setting(1)], progress=False)


@pytest.mark.parametrize(
    "values",
    [
        np.array([[-40000, 5], [70000, 3]], dtype=np.int32),  # beyond int16 / uint16 codecs
        np.array([[0.1, 0.2], [1e-7, 3.0]], dtype=np.float64),  # float32 cannot hold these
        np.array([[0.5, 1.25], [2.0, 3.0]], dtype=np.float32),
        np.array([[0, 40000], [65535, 7]], dtype=np.uint16),  # above int16's range
        np.array([[16777217, 5], [0, -3]], dtype=np.int32),  # int32 float32 cannot hold
    ],
)
def test_the_smallest_lossless_store_is_lossless_whatever_the_values(values):
    from volinr.codecs import decode_lossless_stream, smallest_lossless_stream

    image = np.tile(values, (8, 8))
    codec, stream = smallest_lossless_stream(image)
    decoded = decode_lossless_stream(codec, stream, image.shape)
    assert np.array_equal(decoded.astype(np.float64), image.astype(np.float64)), codec


def test_the_smallest_lossless_store_is_no_larger_than_the_narrowest_raw_layout():
    """A uint16 image above 32767 (the 16-bit codecs refuse it) was stored as float32 under
    zstd, twice the bytes of its own uint16 values under zstd."""
    import imagecodecs

    from volinr.codecs import smallest_lossless_stream

    image = np.random.default_rng(0).integers(30000, 65536, (64, 64)).astype(np.uint16)
    codec, stream = smallest_lossless_stream(image.astype(np.float32))
    narrowest = imagecodecs.zstd_encode(image.astype("<u2").tobytes(), level=19)
    assert codec == "zstd (uint16)" and len(stream) <= len(narrowest)
