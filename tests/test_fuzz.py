"""A bounded fuzz pass over the readers of untrusted files: valid small files, mutated (bytes
flipped, cut, inserted, deleted or overwritten), must read or fail with volinr's InputError,
never another exception and never a hang.

Reproducible (derandomize: the same examples every run) and bounded: 500 examples for each of
the 15 targets, about 15 s for the module on 2 cores. For a longer local run set
VOLINR_FUZZ_EXAMPLES: 5000 per target (2.5 minutes) passed when this module was written, after
the readers were fixed for what it found (pydicom value errors, an empty NIfTI, omega_0 = 0).
"""

import contextlib
import functools
import gzip
import os
import signal
import warnings

import nibabel as nib
import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydicom.uid import RLELossless

from test_volumes import write_series
from volinr.container import frame_container
from volinr.data.dicom_frames import read_dicom_frames
from volinr.data.dicom_series import read_dicom_series
from volinr.data.nifti import read_nifti
from volinr.errors import InputError
from volinr.models.siren import Siren
from volinr.siren_container import decode_container, encode_container

EXAMPLES = int(os.environ.get("VOLINR_FUZZ_EXAMPLES", "0")) or 500
SECONDS_PER_EXAMPLE = 10  # a reader still busy after this is taken to hang

FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,  # timings on a shared 2-core machine vary; hangs are caught below
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

# Values that make length and count fields lie: zero, all ones, sign bits, one past a byte.
INTERESTING = [b"\x00" * 4, b"\xff" * 4, b"\x7f\xff\xff\xff", b"\x80\x00\x00\x00", b"\x01\x01"]


@st.composite
def mutated(draw, original: bytes) -> bytes:
    data = bytearray(original)
    for _ in range(draw(st.integers(1, 3))):
        where = draw(st.integers(0, max(0, len(data) - 1)))
        kind = draw(st.sampled_from(["flip", "cut", "insert", "delete", "overwrite"]))
        if kind == "flip" and data:
            data[where] ^= draw(st.integers(1, 255))
        elif kind == "cut":
            del data[where:]
        elif kind == "insert":
            data[where:where] = draw(st.binary(min_size=1, max_size=16))
        elif kind == "delete":
            del data[where : where + draw(st.integers(1, 16))]
        else:
            value = draw(st.sampled_from(INTERESTING) | st.binary(min_size=1, max_size=8))
            data[where : where + len(value)] = value
    return bytes(data)


class Hang(BaseException):
    """Not an Exception, so that no reader's ``except Exception`` can swallow it."""


@contextlib.contextmanager
def time_limit(seconds: float):
    def interrupt(*_):
        raise Hang(f"a reader ran for more than {seconds} s")

    previous = signal.signal(signal.SIGALRM, interrupt)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def reads_or_refuses(read, *args) -> None:
    """The property: ``read`` returns, or raises InputError; anything else fails the test."""
    with time_limit(SECONDS_PER_EXAMPLE), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom and nibabel warn about odd values
        try:
            read(*args)
        except InputError:
            pass


# --- DICOM ----------------------------------------------------------------------------------

RAW = (np.arange(3 * 8 * 8).reshape(3, 8, 8) * 7 % 1500).astype(np.uint16)


class Series:
    """A 3-slice series: its folder, the file mutated and that file's bytes."""

    def __init__(self, folder, **kwargs):
        self.folder = folder
        self.target = write_series(folder, RAW, **kwargs)[1]
        self.original = self.target.read_bytes()

    def __repr__(self):  # what hypothesis prints of a failing example
        return f"Series({self.folder.name})"


@pytest.fixture(scope="module")
def series(tmp_path_factory):
    """Uncompressed and RLE-compressed series."""
    return {
        "plain": Series(tmp_path_factory.mktemp("plain")),
        "rle": Series(tmp_path_factory.mktemp("rle"), transfer_syntax=RLELossless),
    }


@pytest.mark.parametrize("kind", ["plain", "rle"])
@FUZZ
@given(data=st.data())
def test_dicom_series_reader(series, kind, data):
    chosen = series[kind]
    chosen.target.write_bytes(data.draw(mutated(chosen.original)))
    try:
        reads_or_refuses(read_dicom_series, chosen.folder)
    finally:
        chosen.target.write_bytes(chosen.original)


@pytest.mark.parametrize("kind", ["plain", "rle"])
@FUZZ
@given(data=st.data())
def test_single_image_reader_of_prepare(tmp_path_factory, series, kind, data):
    path = tmp_path_factory.getbasetemp() / f"single_{kind}.dcm"
    path.write_bytes(data.draw(mutated(series[kind].original)))
    reads_or_refuses(read_dicom_frames, str(path))


# --- NIfTI ----------------------------------------------------------------------------------


class Original(bytes):
    def __repr__(self):  # hypothesis prints the fixtures of a failing example
        return f"<{len(self)} bytes>"


@pytest.fixture(scope="module")
def nifti_bytes():
    image = nib.Nifti1Image(
        np.arange(6 * 5 * 4, dtype=np.int16).reshape(6, 5, 4), np.diag([-2.0, -2.0, 3.0, 1.0])
    )
    image.header.set_slope_inter(1.0, -1024.0)
    return Original(image.to_bytes())


@pytest.mark.parametrize("layout", ["nii", "nii.gz", "gzip of mutated nii"])
@FUZZ
@given(data=st.data())
def test_nifti_reader(tmp_path_factory, nifti_bytes, layout, data):
    if layout == "nii":
        content = data.draw(mutated(nifti_bytes))
    elif layout == "nii.gz":
        content = data.draw(mutated(gzip.compress(nifti_bytes, mtime=0)))
    else:  # the header damaged behind an intact gzip layer
        content = gzip.compress(data.draw(mutated(nifti_bytes)), mtime=0)
    suffix = "nii" if layout == "nii" else "nii.gz"
    path = tmp_path_factory.getbasetemp() / f"fuzz.{suffix}"
    path.write_bytes(content)
    reads_or_refuses(read_nifti, path)


# --- containers -----------------------------------------------------------------------------


@functools.cache
def _container(quantization: str, coder: str) -> bytes:
    torch.manual_seed(0)
    model = Siren(3, 8, 2)
    return encode_container(
        model.state_dict(), model.config, [4, 4, 4], [4.0, 4.0, 4.0], [-1024.0, 1000.0],
        quantization, coder,
    )  # fmt: skip


CONTAINERS = [("q8", "zstd"), ("float16", "lzma"), ("float32", "none"), ("q12", "zstd")]


@pytest.mark.parametrize("quantization, coder", CONTAINERS)
@FUZZ
@given(data=st.data())
def test_container_decoder_on_mutated_files(quantization, coder, data):
    """Mostly caught by the checksum, which is the point of it."""
    original = _container(quantization, coder)
    reads_or_refuses(decode_container, data.draw(mutated(original)), "fuzz.volinr")


@pytest.mark.parametrize("quantization, coder", CONTAINERS)
@FUZZ
@given(data=st.data())
def test_container_decoder_on_mutated_contents_with_a_valid_checksum(quantization, coder, data):
    """A header and payload damaged before framing: what the checksum cannot catch."""
    original = _container(quantization, coder)
    header_length = int.from_bytes(original[10:14], "little")
    header = original[14 : 14 + header_length]
    payload = original[22 + header_length : -32]
    if data.draw(st.booleans()):
        header = data.draw(mutated(header))
    else:
        payload = data.draw(mutated(payload))
    reads_or_refuses(decode_container, frame_container(header, payload), "fuzz.volinr")
