"""The method interface: every family registered and configurable, and the neural codec run
as the workflow runs it (``volinr rd``): real files, decoded to exactly what was measured."""

import json

import numpy as np
import pytest

from volinr import methods, settings
from volinr.cli import main
from volinr.data.phantom import synthetic_head_phantom
from volinr.errors import InputError
from volinr.io import save_array
from volinr.methods.neural_codec import LENGTH, _split
from volinr.metrics import psnr_native
from volinr.neural_codec import decode


def test_every_family_is_in_the_schema_and_every_schema_entry_is_a_family():
    schema = settings.schema()
    enum = schema["properties"]["rate_distortion"]["properties"]["methods"]["items"]["enum"]
    assert sorted(enum) == sorted(methods.families())
    for name, cls in methods.families().items():
        assert cls.kind and cls.counts, name
        for section in cls.sections:
            assert section in schema["properties"], (name, section)


def test_the_neural_codec_has_one_group_per_lambda_and_slices_only_for_volumes():
    cls = methods.family("neural_codec")
    section = settings.section(
        "neural_codec", {"lambdas": [0.01, 0.001], "slice_by_slice_lambdas": [0.001]}
    )
    as_slice = {"neural_codec": section, "dataset": {"kind": "slice"}}
    as_volume = {"neural_codec": section, "dataset": {"kind": "phantom"}}
    assert cls.groups(section, as_slice) == ["lambda0.01", "lambda0.001"]
    assert cls.groups(section, as_volume) == ["lambda0.01", "lambda0.001", "slices_lambda0.001"]


def _run_rd(tmp_path, image, kind, group, **changes):
    path = tmp_path / "image.npy"
    spacing = [2.0, 1.0, 1.0][-image.ndim :]
    save_array(path, image, {"spacing_mm": spacing, "source": "phantom"})
    section = settings.section("neural_codec", {"iterations": 8, "log_every": 4, **changes})
    sections = {"neural_codec": section, "dataset": {"kind": kind}}
    out = tmp_path / "rows.json"
    code = main(
        [
            "rd", "--method", "neural_codec", "--group", group, "--image", str(path),
            "--settings", json.dumps(sections), "--inputs", "{}",
            "--tissue-window", "-1024", "nan", "--files-dir", str(tmp_path / "files"),
            "--out", str(out), "--threads", "1",
        ]
    )  # fmt: skip
    assert code == 0
    return json.loads(out.read_text())["rows"][0]


def test_a_slice_is_written_decoded_from_its_file_and_measured_on_that(tmp_path):
    image = synthetic_head_phantom((4, 40, 40), seed=3).voxels[1].astype(np.int16)
    row = _run_rd(tmp_path, image, "slice", "lambda0.001", lambdas=[0.001])
    data = open(row["file"], "rb").read()
    assert row["bytes"] == len(data) and row["bits_per_voxel"] == 8 * len(data) / image.size
    decoded = decode(data, row["file"])
    assert decoded.dtype == image.dtype
    assert row["psnr_native_db"] == pytest.approx(psnr_native(image, decoded), abs=1e-9)
    assert row["method"] == "neural codec (2D)" and row["lambda"] == 0.001
    # the parts the row names add up to the file
    parts = row["parameter_bits"] + row["latent_bits"] + row["header_and_framing_bits"]
    assert parts == 8 * len(data)


def test_a_volume_coded_slice_by_slice_holds_one_stream_per_slice(tmp_path):
    volume = synthetic_head_phantom((4, 24, 24), seed=2).voxels.astype(np.int16)
    row = _run_rd(
        tmp_path,
        volume,
        "phantom",
        "slices_lambda0.001",
        lambdas=[0.001],
        slice_by_slice_lambdas=[0.001],
    )
    data = open(row["file"], "rb").read()
    parts = _split(data, row["file"], 4)
    decoded = np.stack([decode(part, row["file"]) for part in parts])
    assert decoded.shape == volume.shape
    assert row["psnr_native_db"] == pytest.approx(psnr_native(volume, decoded), abs=1e-9)
    assert row["method"] == "neural codec (2D, slice by slice)"
    # `volinr decompress` reads volinr's own slice-by-slice file too (it once said "bad magic")
    from volinr.cli import main

    out = tmp_path / "decompressed.npy"
    assert main(["decompress", "--container", row["file"], "--out", str(out)]) == 0
    np.testing.assert_array_equal(np.load(out), decoded)


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda d: d[:-1], "past the file's end"),
        (lambda d: d + b"\0", "bytes after the last"),
        (lambda d: d[:2], "ends before slice 0"),
    ],
)
def test_a_damaged_slice_by_slice_file_is_refused(damage, message):
    data = b"".join(LENGTH.pack(len(p)) + p for p in (b"abc", b"defg"))
    assert _split(data, "f.vnc", 2) == [b"abc", b"defg"]
    with pytest.raises(InputError, match=message):
        _split(damage(data), "f.vnc", 2)


def test_a_point_whose_decoded_data_breaks_its_claim_is_refused_with_the_reason(
    tmp_path, monkeypatch
):
    """int32 values beyond 2^24: a codec that rounds through float32 may decode them off by a
    few units; a 'lossless' row must then not be written."""
    import json
    from pathlib import Path

    from volinr.cli import main
    from volinr.io import save_array
    from volinr.methods import family
    from volinr.methods.classical import Classical
    from volinr.settings import section

    monkeypatch.chdir(tmp_path)
    image = (np.arange(16 * 16, dtype=np.int32).reshape(16, 16) * 3) + (1 << 24)
    save_array("image.npy", image, {"units": "HU"})
    real_decode = Classical.decode

    def off_by_two(self, data, source, point, shape):
        decoded = real_decode(self, data, source, point, shape)
        decoded.voxels = decoded.voxels + 2  # what a float32 round trip does up there
        return decoded

    monkeypatch.setattr(Classical, "decode", off_by_two)
    settings = json.dumps({n: section(n) for n in family("classical").sections})
    argv = ["rd", "--method", "classical", "--group", "zstd", "--image", "image.npy",
            "--settings", settings, "--files-dir", "files", "--out", "rows.json"]  # fmt: skip
    assert main(argv) == 2  # zstd's one point refused: no point could code it
    assert not Path("rows.json").exists() and not list(Path("files").glob("*"))

    # a group of several points: the one that breaks its claim is refused, the others kept
    # (before, removing its pending file failed the whole group with "No such file")
    def lossless_off_by_two(self, data, source, point, shape):
        decoded = real_decode(self, data, source, point, shape)
        if self.claimed_max_error(point) == 0:
            decoded.voxels = decoded.voxels + 2
        return decoded

    monkeypatch.setattr(Classical, "decode", lossless_off_by_two)
    save_array("ct.npy", np.random.default_rng(0).integers(-1024, 2000, (32, 32)), {"units": "HU"})
    argv[argv.index("zstd")] = "jpeg2000"
    argv[argv.index("image.npy")] = "ct.npy"
    assert main(argv) == 0
    group = json.loads(Path("rows.json").read_text())
    assert [r["point"] for r in group["refused_points"]] == ["lossless"]
    assert "claims lossless" in group["refused_points"][0]["reason"]
    assert group["rows"] and all(r["point"] != "lossless" for r in group["rows"])
    written = {p.name for p in Path("files").iterdir()}
    assert not any(name.startswith("lossless") for name in written)
    assert {Path(r["file"]).name for r in group["rows"]} <= written


def test_the_neural_codec_names_its_points_by_what_it_coded():
    """A 3D array coded with a slice-mode config was once labelled '2D'."""
    from volinr.methods import family
    from volinr.methods.base import Image, OperatingPoint
    from volinr.neural_codec import CodecSettings
    from volinr.settings import section

    cls = family("neural_codec")
    sections = {name: section(name) for name in cls.sections}
    sections["neural_codec"] = dict(sections["neural_codec"], iterations=2, log_every=1,
                                    warmup_candidates=1, lambdas=[0.01])  # fmt: skip
    assert sections["dataset"]["kind"] == "slice"
    method = cls(sections, "lambda0.01", {}, None)
    point = OperatingPoint("0.01", {"lambda": 0.01})
    volume = (np.arange(6 * 12 * 12).reshape(6, 12, 12) % 23).astype(np.int16)
    assert CodecSettings.from_section(sections["neural_codec"]).iterations == 2
    method.encode(Image(volume, {}, "v.npy"), point)
    assert method.label(point)["method"] == "neural codec (3D)"


@pytest.mark.parametrize(
    ("volume", "changes", "problem"),
    [
        (np.zeros((1, 16, 16), np.int16) + np.arange(16, dtype=np.int16), {}, "every axis needs"),
        (np.arange(256, dtype=np.int64).reshape(16, 16), {}, "cannot code dtype int64"),
        (np.arange(256, dtype=np.int16).reshape(16, 16), {"context_size": 32}, "at most 24"),
    ],
)
def test_what_the_neural_codec_cannot_code_is_bad_input_naming_the_image(volume, changes, problem):
    from volinr.errors import InputError
    from volinr.methods import family
    from volinr.methods.base import Image, OperatingPoint
    from volinr.settings import section

    cls = family("neural_codec")
    sections = {name: section(name) for name in cls.sections}
    sections["neural_codec"] = dict(sections["neural_codec"], iterations=2, **changes)
    method = cls(sections, "lambda0.002", {}, None)
    with pytest.raises(InputError, match=rf"v\.npy: the neural codec cannot code it: .*{problem}"):
        method.encode(Image(volume, {}, "v.npy"), OperatingPoint("0.002", {"lambda": 0.002}))
