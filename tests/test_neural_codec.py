"""The neural codec end to end: files that decode to exactly what was evaluated, their rate,
damaged files, odd shapes, dtypes and bad input. Tiny images and tens of iterations."""

import zlib

import numpy as np
import pytest
import torch

from volinr.container import MAGIC
from volinr.data.phantom import synthetic_head_phantom
from volinr.errors import InputError
from volinr.neural_codec.bitstream import FORMAT_VERSION, unframe
from volinr.neural_codec.codec import decode, encode
from volinr.neural_codec.model import LatentCodecModel
from volinr.neural_codec.settings import CodecSettings

FAST = CodecSettings.make(iterations=40, log_every=10, levels=5)


def ct_slice(shape=(37, 53), seed=0) -> np.ndarray:
    """An int16 CT-like slice: a phantom cross-section inside -3024 padding."""
    rows, cols = shape
    volume = synthetic_head_phantom((5, rows, cols), seed=seed).voxels
    image = np.rint(volume[2]).astype(np.int16)
    image[:, : cols // 8] = -3024  # a scanner's outside-the-field padding
    return image


@pytest.fixture(scope="module")
def slice_2d():
    image = ct_slice()
    return image, encode(image, (0.7, 0.7), FAST, lam=1e-3, seed=0)


@pytest.fixture(scope="module")
def volume_3d():
    volume = synthetic_head_phantom((5, 17, 23), seed=1).voxels.astype(np.float32)
    return volume, encode(volume, (2.5, 1.0, 1.0), FAST, lam=1e-3, seed=0)


def test_slice_round_trip_is_bitwise_and_keeps_the_dtype(slice_2d):
    image, encoded = slice_2d
    decoded = decode(encoded.data, "slice.vnc")
    assert decoded.dtype == np.int16 and decoded.shape == image.shape
    assert np.array_equal(decoded, encoded.reconstruction)
    # it is a reconstruction of the image, not of something else
    error = np.abs(decoded.astype(float) - image).mean()
    assert error < 0.75 * np.abs(image - image.mean()).mean()
    assert decoded.min() >= image.min() and decoded.max() <= image.max()


def test_volume_round_trip_is_bitwise(volume_3d):
    volume, encoded = volume_3d
    decoded = decode(encoded.data, "volume.vnc")
    assert decoded.dtype == np.float32 and decoded.shape == (5, 17, 23)
    assert np.array_equal(decoded, encoded.reconstruction)
    assert encoded.record["macs_per_voxel"]["total"] > 0


def _round_trip_with(shape, seed, **option):
    """A phantom slice or volume coded with a non-default architecture ``option``: the
    decoder rebuilds that architecture from the file; returns the model and some latents."""
    image = synthetic_head_phantom((5, *shape[-2:]), seed=seed).voxels.astype(np.float32)
    image = image[2] if len(shape) == 2 else image
    settings = CodecSettings.make(iterations=30, levels=4, **option)
    encoded = encode(image, None, settings, lam=1e-3, seed=0)
    assert np.array_equal(decode(encoded.data, "option.vnc"), encoded.reconstruction)
    assert all(encoded.record["settings"][name] == value for name, value in option.items())
    model = LatentCodecModel(image.shape, settings)
    generator = torch.Generator().manual_seed(1)
    latents = [torch.randn(g, generator=generator) for g in model.grid_shapes]
    return encoded, model, latents


@pytest.mark.parametrize("shape", [(37, 53), (5, 17, 23)])
def test_the_synthesis_stabiliser_is_coded_and_decoded_bitwise(shape):
    encoded, model, latents = _round_trip_with(shape, 1, synthesis_stabiliser=True)
    # the file holds the stabiliser, and the synthesis uses it
    assert "synthesis.stabiliser.weight" in encoded.record["parameter_exponents"]
    with torch.no_grad():
        plain = model.synthesise(latents)
        model.stabiliser_weight.fill_(0.1)
        assert not torch.equal(plain, model.synthesise(latents))


@pytest.mark.parametrize("shape", [(37, 53), (5, 17, 23)])
def test_per_level_upsampling_filters_are_coded_and_decoded_bitwise(shape):
    _, model, latents = _round_trip_with(shape, 2, upsampling_per_level=True)
    # one filter a stage, and each stage uses its own
    assert model.upsampling_taps.shape == (3, 4)
    with torch.no_grad():
        outputs = [model.upsample(latents)]
        for level in range(3):
            model.upsampling_taps[level] += 0.05
            outputs.append(model.upsample(latents))
    # raising stage l's filter changes grid l+1's channel and the coarser ones, not finer ones
    for level in range(3):
        before, after = outputs[level], outputs[level + 1]
        assert torch.equal(before[0, : level + 1], after[0, : level + 1])
        assert not torch.equal(before[0, level + 1 :], after[0, level + 1 :])


@pytest.mark.parametrize("shape", [(37, 53), (5, 17, 23)])
def test_a_context_of_several_coarser_grids_is_coded_and_decoded_bitwise(shape):
    encoded, model, latents = _round_trip_with(shape, 3, context_coarser_levels=2)
    # grid i reads grids i+1 and i+2 at floor(p / 2) and floor(p / 4); fewer near the coarsest
    assert [model.coarser_count(level) for level in range(4)] == [2, 2, 1, 0]
    assert model.arm_weights[0].shape[1] == model.settings.context_size + 2
    rows = model.coarser_context(latents, 0)
    for j in (1, 2):
        index = np.ix_(*[np.arange(n) >> j for n in model.grid_shapes[0]])
        assert torch.equal(rows[j - 1], latents[j][index])
    # every coarser row moves the rate (its weight columns are read)
    with torch.no_grad():
        model.arm_weights[0].normal_(0, 0.3)
        bits = model.latent_bits_by_level(latents)[0]
        model.arm_weights[0][:, -1] += 0.5
        assert model.latent_bits_by_level(latents)[0] != bits


@pytest.mark.parametrize("shape", [(37, 53), (5, 17, 23)])
def test_the_entropy_models_stabiliser_is_coded_and_decoded_bitwise(shape):
    encoded, model, latents = _round_trip_with(shape, 4, arm_stabiliser=True)
    assert "arm.stabiliser.weight" in encoded.record["parameter_exponents"]
    header, _ = unframe(encoded.data, "x")
    assert header[0] & 0x80  # the extension byte holds it
    # the entropy model adds it: the rate moves with it
    latents = [torch.round(latent * 3) for latent in latents]
    with torch.no_grad():
        bits = model.latent_bits(latents)
        model.arm_stabiliser_weight.normal_(0, 0.3)
        assert model.latent_bits(latents) != bits
    with pytest.raises(ValueError, match="stabiliser has no blocked passes"):
        LatentCodecModel(shape, model.settings, blocked=True)


@pytest.mark.parametrize(
    ("shape", "sample_voxels"), [((37, 53), None), ((5, 17, 23), None), ((5, 17, 23), 300)]
)
def test_refined_networks_are_coded_and_decoded_bitwise(shape, sample_voxels, monkeypatch):
    """The refinement moves integers after the step search (it does on a real model:
    test_neural_codec_parts): the file must hold the moved ones, in 2D and 3D, whether it
    measured on the whole image or (a volume over the sample's voxels: the case of real CT
    volumes; a slice over 2^19 voxels takes the same path in 2D) on boxes of it."""
    from volinr.neural_codec import regions

    if sample_voxels:
        monkeypatch.setattr(regions, "REFINEMENT_SAMPLE_VOXELS", sample_voxels)
        assert regions.refinement_sample(LatentCodecModel(shape, CodecSettings.make())) is not None
    _round_trip_with(shape, 5, network_refinement_passes=1)


def test_estimated_bits_match_the_file(slice_2d, volume_3d):
    for _, encoded in (slice_2d, volume_3d):
        bits = encoded.record["bits"]
        estimated, coded = bits["estimated"]["total"], bits["actual"]["coded"]
        assert abs(coded - estimated) <= 0.03 * estimated + 32  # + the coder's last word
        assert bits["actual"]["payload"] == coded - bits["actual"]["trailing_zero_bits_dropped"]
        assert bits["actual"]["payload"] <= coded
        assert bits["actual"]["total"] == 8 * len(encoded.data)
        assert (
            bits["actual"]["payload"] + bits["actual"]["header"] + bits["actual"]["framing"]
            == bits["actual"]["total"]
        )


def test_record_describes_the_run(slice_2d):
    record = slice_2d[1].record
    assert record["iterations"] == FAST.iterations
    assert [p["iteration"] for p in record["curve"]] == [10, 20, 30, 40]
    assert {p["phase"] for p in record["curve"]} <= {"noise", "soft", "ste"}
    assert record["bits_per_voxel"] == pytest.approx(8 * len(slice_2d[1].data) / (37 * 53))
    assert set(record["seconds"]) == {"training", "quantisation", "coding", "total"}


def test_same_seed_same_bytes_other_seed_other_bytes(slice_2d):
    image, encoded = slice_2d
    assert encode(image, (0.7, 0.7), FAST, lam=1e-3, seed=0).data == encoded.data
    assert encode(image, (0.7, 0.7), FAST, lam=1e-3, seed=1).data != encoded.data


def test_a_larger_lambda_gives_a_smaller_file():
    image = ct_slice((32, 32), seed=3)
    settings = CodecSettings.make(iterations=60, log_every=20, levels=4)
    small = encode(image, None, settings, lam=1e-1).data
    large = encode(image, None, settings, lam=1e-5).data
    assert len(small) < len(large)


def test_constant_image_is_a_header_only_file():
    image = np.full((9, 11), -1000, dtype=np.int16)
    encoded = encode(image, None, FAST, lam=1e-3)
    assert encoded.record["constant"] and len(encoded.data) < 32
    decoded = decode(encoded.data, "flat.vnc")
    assert decoded.dtype == np.int16 and np.array_equal(decoded, image)


@pytest.mark.parametrize("dtype", [np.uint8, np.int32, np.float64])
def test_other_dtypes(dtype):
    image = (np.add.outer(np.arange(12), np.arange(10)) * 3).astype(dtype)
    encoded = encode(image, None, CodecSettings.make(iterations=10, levels=3), lam=1e-3)
    decoded = decode(encoded.data, "x.vnc")
    assert decoded.dtype == (np.float32 if dtype == np.float64 else dtype)
    assert np.array_equal(decoded, encoded.reconstruction)


# --- damaged files -------------------------------------------------------------------------


@pytest.mark.parametrize("where", [0, 9, 12, 20, -30, -10, -1])
def test_a_flipped_byte_is_refused(slice_2d, where):
    data = bytearray(slice_2d[1].data)
    data[where] ^= 0x10
    with pytest.raises(InputError, match="damaged.vnc"):
        decode(bytes(data), "damaged.vnc")


@pytest.mark.parametrize("keep", [0, 5, 10, 14, 40, -5, -1])
def test_a_truncated_file_is_refused(slice_2d, keep):
    data = slice_2d[1].data
    with pytest.raises(InputError, match="short.vnc: .*(truncated|bad magic)"):
        decode(data[:keep], "short.vnc")


def test_trailing_bytes_are_refused(slice_2d):
    with pytest.raises(InputError, match="long.vnc: has trailing bytes"):
        decode(slice_2d[1].data + b"\x00", "long.vnc")


@pytest.mark.parametrize("version", [1, 3])
def test_another_format_version_is_refused(slice_2d, version):
    data = bytearray(slice_2d[1].data)
    data[8:10] = version.to_bytes(2, "little")
    body = bytes(data[:-4])
    data[-4:] = zlib.crc32(body).to_bytes(4, "little")  # a well-formed file of that version
    with pytest.raises(InputError, match=f"v.vnc: container format version {version}"):
        decode(bytes(data), "v.vnc")


def test_a_consistent_but_corrupted_header_is_refused(slice_2d):
    """A file whose CRC was recomputed after damage (a crafted file) still fails a check."""
    data = slice_2d[1].data
    header, _ = unframe(data, "x")
    assert data[: len(MAGIC)] == MAGIC and int.from_bytes(data[8:10], "little") == FORMAT_VERSION
    start = data.index(header)
    crafted = bytearray(data)
    crafted[start] = 0xFE  # every flag but 3D: a constant image with an architecture
    crafted[-4:] = zlib.crc32(bytes(crafted[:-4])).to_bytes(4, "little")
    with pytest.raises(InputError, match="crafted.vnc: header: a constant image with arch"):
        decode(bytes(crafted), "crafted.vnc")


# --- bad input -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "image, message",
    [
        (np.full((8, 8), np.nan), "NaN"),
        (np.zeros(16), "2D slice or a 3D volume"),
        (np.zeros((2, 2, 2, 2)), "2D slice or a 3D volume"),
        (np.zeros((1, 40)), "every axis needs"),
        (np.zeros((8, 8), dtype=bool), "integer or float"),
        (np.zeros((8, 8), dtype=np.complex64), "integer or float"),
    ],
)
def test_bad_images_are_refused(image, message):
    with pytest.raises(ValueError, match=message):
        encode(image, None, FAST, lam=1e-3)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"lam": 0.0}, "lambda"),
        ({"lam": float("nan")}, "lambda"),
        ({"seed": -1}, "seed"),
        ({"spacing_mm": (1.0,)}, "spacing_mm"),
        ({"spacing_mm": (1.0, -2.0)}, "spacing_mm"),
    ],
)
def test_bad_arguments_are_refused(kwargs, message):
    arguments = {"spacing_mm": None, "settings": FAST, "lam": 1e-3, "seed": 0} | kwargs
    with pytest.raises(ValueError, match=message):
        encode(np.zeros((8, 8)), **arguments)


@pytest.mark.parametrize(
    "field, value",
    [
        ("levels", 0),
        ("context_size", 99),
        ("synthesis_widths", ()),
        ("activation", "tanh"),
        ("noise_fraction", 1.5),
        ("learning_rate", -1.0),
        ("iterations", 2.5),
        ("context_coarser", "yes"),
        ("upsampling_per_level", 1),
        ("context_coarser_levels", 0),
        ("arm_stabiliser", 1),
        ("context_coarser_levels", 12),
    ],
)
def test_bad_settings_are_refused(field, value):
    with pytest.raises(ValueError, match=f"invalid neural codec settings: {field}"):
        CodecSettings.make(**{field: value})


def test_per_level_filters_need_learned_upsampling():
    with pytest.raises(ValueError, match="upsampling_per_level needs learned_upsampling"):
        CodecSettings.make(learned_upsampling=False, upsampling_per_level=True)


def test_settings_round_trip_through_a_dict():
    settings = CodecSettings.make(synthesis_widths=(8, 4), iterations=5)
    assert CodecSettings.from_dict(settings.as_dict()) == settings
    with pytest.raises(ValueError, match="unknown neural codec settings: colour"):
        CodecSettings.from_dict({"colour": 1})


def test_a_constant_image_header_with_architecture_flags_is_refused():
    data = encode(np.full((6, 7), 5.0, np.float32), None, FAST, lam=1e-3).data
    header, _ = unframe(data, "x")
    start = data.index(header)
    crafted = bytearray(data)
    crafted[start] |= 1 << 5  # the stabiliser's flag on a header-only file
    crafted[-4:] = zlib.crc32(bytes(crafted[:-4])).to_bytes(4, "little")
    with pytest.raises(InputError, match="flat.vnc: header: a constant image with architecture"):
        decode(bytes(crafted), "flat.vnc")


def test_a_header_with_per_level_filters_but_fixed_upsampling_is_refused():
    data = encode(ct_slice(), None, CodecSettings.make(iterations=2, learned_upsampling=False),
                  lam=1e-3).data  # fmt: skip
    header, _ = unframe(data, "x")
    start = data.index(header)
    crafted = bytearray(data)
    crafted[start] |= 1 << 6  # per-level filters, with the learned-upsampling flag off
    crafted[-4:] = zlib.crc32(bytes(crafted[:-4])).to_bytes(4, "little")
    with pytest.raises(InputError, match="x.vnc: header: per-level upsampling filters without"):
        decode(bytes(crafted), "x.vnc")


def _crafted_header(data: bytes, change) -> bytes:
    """``data`` with its header replaced by ``change(header)`` and its CRC recomputed."""
    header, _ = unframe(data, "x")
    start = data.index(header)
    crafted = bytearray(data)
    crafted[start : start + len(header)] = change(bytearray(header))
    crafted[-4:] = zlib.crc32(bytes(crafted[:-4])).to_bytes(4, "little")
    return bytes(crafted)


def test_a_header_reading_several_coarser_grids_is_checked():
    settings = CodecSettings.make(iterations=2, levels=4, context_coarser_levels=3)
    data = encode(ct_slice(), None, settings, lam=1e-3).data
    header, _ = unframe(data, "x")
    # flag bit 7, and an extension byte after the synthesis widths: flags, dtype, the shape's two
    # one-byte varints, the value range, 7 architecture bytes, then the widths
    count_at = 1 + 1 + 2 + 8 + 7 + header[18]
    assert header[0] & 0x84 == 0x84 and header[count_at] == 3

    def without_coarser(h):
        h[0] &= ~0x04
        return h

    def count(value):
        def change(h):
            h[count_at] = value
            return h

        return change

    with pytest.raises(InputError, match="c.vnc: header: several coarser grids read without"):
        decode(_crafted_header(data, without_coarser), "c.vnc")
    for value, message in [
        (0, "coarser grids read 0 outside"),
        (12, "coarser grids read 12 outside"),
        (1, "an extension byte that changes nothing"),
        (0x23, "unknown extension flags 0x23"),
    ]:
        with pytest.raises(InputError, match=f"c.vnc: header: {message}"):
            decode(_crafted_header(data, count(value)), "c.vnc")
