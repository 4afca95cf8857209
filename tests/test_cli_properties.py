"""A property-based harness over the command line (issue 22): Hypothesis generates arrays of
every dtype, shape and range a user may bring (1x1, 3x5, one slice, constant, +-1e39, int32
above 2^24, int16 padded with -32768) and runs `volinr downsample`, `volinr codecs` and
`volinr rd` (classical codecs) on them, in process, as the CLI runs them. Invariants:

- the exit status is 0, 2 or 3 (no other, and no exception escapes: no traceback);
- every input byte is as it was, and after a failure nothing new is on disk;
- on success the numbers are re-computed by an oracle: the downsampled shape; each row's bytes
  are its file's size and its bits per voxel 8 x bytes / voxels; a row that says lossless
  decodes, through the method's decoder, to the original exactly (numpy).

CI runs a fixed, seeded profile (derandomized, ``EXAMPLES`` per target); ``make fuzz`` a
longer one (VOLINR_FUZZ_EXAMPLES). What a longer run finds becomes a regression test.

tests/test_cli_properties_files.py drives the other subcommands (prepare-volume, compress and
decompress, evaluate, export, rate-distortion, tables, suite-report) with the same invariants,
through ``check_cli`` and the strategies here.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from hypothesis.control import currently_in_test_context
from hypothesis.extra import numpy as hnp

from volinr.cli import main
from volinr.io import save_array

EXAMPLES = int(os.environ.get("VOLINR_FUZZ_EXAMPLES", "0")) or 15
PROFILE = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
ALLOWED_EXITS = {0, 2, 3}
DTYPES = ["uint8", "int8", "int16", "uint16", "int32", "float32", "float64"]


SHAPES = st.one_of(
    st.tuples(st.integers(7, 24), st.integers(7, 24)),
    st.tuples(st.integers(1, 4), st.integers(7, 16), st.integers(7, 16)),
    st.sampled_from([(1, 1), (3, 5), (1, 6, 7), (8, 8)]),
)
VOLUME_SHAPES = st.one_of(  # 3D only: the subcommands that read volumes
    st.tuples(st.integers(1, 4), st.integers(7, 12), st.integers(7, 12)),
    st.sampled_from([(1, 1, 1), (2, 3, 5), (1, 6, 7), (3, 8, 8)]),
)


@st.composite
def images(draw, shapes=SHAPES, dtypes=DTYPES) -> np.ndarray:
    """An image or a small volume of any dtype, with the ranges users bring."""
    dtype = np.dtype(draw(st.sampled_from(dtypes)))
    shape = draw(shapes)
    kind = draw(st.sampled_from(["ct", "ct", "any", "constant", "wide", "padded"]))
    if kind in ("ct", "padded"):  # CT-like values, within what the dtype holds
        low = -1024 if dtype.kind != "u" else 0
        high = 3071 if dtype.itemsize > 1 else 127
        elements = st.integers(max(low, -128 if dtype == np.int8 else low), high)
    elif dtype.kind == "f":
        bound = 1e39 if dtype.itemsize == 8 else float(np.finfo(np.float32).max)
        elements = st.floats(
            -bound, bound, allow_nan=False, allow_infinity=False, width=8 * dtype.itemsize
        )
    else:
        info = np.iinfo(dtype)
        elements = st.integers(int(info.min), int(info.max))
    array = draw(hnp.arrays(dtype, shape, elements=elements))
    if kind == "constant":
        array[...] = array.flat[0]
    elif kind == "wide" and dtype == np.int32:
        array = array // 2 + (1 << 24) + 1  # beyond float32's exact integers
    elif kind == "padded" and dtype == np.int16 and array.shape[-1] > 2:
        array[..., 0] = -32768  # outside the field of view
        array[..., -1] = -32768
    return array


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def _run_logged(folder: Path, argv: list[str]) -> tuple[int, str]:
    """The CLI in process, in ``folder``: its exit status (argparse's refusals included) and
    what it said (its log records and stderr)."""
    before = Path.cwd()
    os.chdir(folder)
    said = io.StringIO()
    handler = logging.StreamHandler(said)
    logger = logging.getLogger("volinr")
    logger.addHandler(handler)
    try:
        with contextlib.redirect_stderr(said):
            try:
                code = main(argv)
            except SystemExit as exit_:
                code = int(exit_.code)
    finally:
        logger.removeHandler(handler)
        os.chdir(before)
    return code, said.getvalue()


def check_cli(write_inputs, argv: list[str], oracle=None) -> tuple[int, str]:
    """Run ``argv`` in a fresh folder holding what ``write_inputs(folder)`` wrote, and check
    the invariants: exit status 0, 2 or 3 (an exception escaping main fails the test), every
    input file byte-identical afterwards, nothing new on disk after a failure, and on success
    ``oracle(folder)``. Returns the exit status and what the CLI said."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        write_inputs(folder)
        inputs = _files(folder)
        code, said = _run_logged(folder, argv)
        if currently_in_test_context():  # --hypothesis-show-statistics: how many got through
            event(f"{argv[0]}: exit {code}")
        assert code in ALLOWED_EXITS, f"exit {code}: {said[-2000:]}"
        after = _files(folder)
        assert {k: after.get(k) for k in inputs} == inputs, "an input changed"
        if code != 0:
            assert set(after) == set(inputs), f"left behind: {set(after) - set(inputs)}"
        elif oracle is not None:
            oracle(folder)
        return code, said


def _checked(argv_of, array: np.ndarray, oracle) -> None:
    check_cli(
        lambda folder: save_array(folder / "image.npy", array, {"units": "HU"}),
        argv_of(),
        lambda folder: oracle(folder, array),
    )


@PROFILE
@given(images())
def test_downsample(array):
    def oracle(folder, array):
        from volinr.resample import downsampled_shape

        out = np.load(folder / "lr.npy")
        assert out.shape == downsampled_shape(array.shape, 2)
        assert np.all(np.isfinite(out.astype(np.float64)))

    _checked(lambda: ["downsample", "--input", "image.npy", "--factor", "2", "--out", "lr.npy"],
             array, oracle)  # fmt: skip


def _rd_settings() -> str:
    from volinr.methods import family
    from volinr.settings import section

    return json.dumps({name: section(name) for name in family("classical").sections})


@PROFILE
@given(images(), st.sampled_from(["zstd", "jpeg2000", "jpegls"]))
def test_rd_classical(array, codec):
    def oracle(folder, array):
        from volinr.methods import family
        from volinr.settings import section

        record = json.loads((folder / "rows.json").read_text())
        method = family("classical")(
            {name: section(name) for name in family("classical").sections}, codec, {}, None
        )
        points = {point.name: point for point in method.points()}
        for row in record["rows"]:
            data = Path(row["file"]).read_bytes() if Path(row["file"]).is_absolute() else (
                folder / row["file"]).read_bytes()  # fmt: skip
            assert row["bytes"] == len(data)
            assert row["bits_per_voxel"] == pytest.approx(8 * len(data) / array.size)
            if row["point"] == "lossless":
                decoded = method.decode(data, row["file"], points["lossless"], array.shape)
                assert np.array_equal(decoded.voxels, array), "a lossless row is not lossless"

    argv = ["rd", "--method", "classical", "--group", codec, "--image", "image.npy",
            "--settings", _rd_settings(), "--files-dir", "files", "--out", "rows.json",
            "--threads", "1"]  # fmt: skip
    _checked(lambda: argv, array, oracle)


@PROFILE
@given(images())
def test_codecs_sweep(array):
    def oracle(folder, array):
        import pandas as pd

        table = pd.read_csv(folder / "sweep.csv")
        assert len(table) > 0
        numbers = table.select_dtypes("number")
        finite = np.isfinite(numbers.to_numpy(dtype=float))
        assert np.all(finite | numbers.isna().to_numpy() | np.isinf(numbers.to_numpy(float)))

    _checked(lambda: ["codecs", "--input", "image.npy", "--out", "sweep.csv"], array, oracle)
