"""Neural codec files crafted to pass the container's checks (valid CRCs) but not to be an
image: ``volinr decompress`` refuses each, exit 2 naming the file, and writes nothing."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest

from volinr.cli import main
from volinr.neural_codec import codec
from volinr.neural_codec.architecture import architecture_of
from volinr.neural_codec.bitstream import Header, TensorCoding, frame, pack_header
from volinr.neural_codec.parameter_coding import QuantisedParameter, with_best_scale
from volinr.neural_codec.settings import CodecSettings


def _overflowing_file(output_dtype: str) -> bytes:
    """Synthesis weights alternating +16383 / -16000 at exponent 0: every voxel overflows to
    NaN (cast to int16, NaN became 0 and the file decoded with exit 0)."""
    settings = CodecSettings.make(levels=2, synthesis_widths=[64, 64, 64, 64],
                                  residual_channels=8, residual_layers=4, arm_layers=0,
                                  context_size=0)  # fmt: skip
    shape = (16, 16)
    model = codec._empty_model(shape, settings)
    parameters = []
    for name, tensor in model.coded_parameters().items():
        n = tensor.numel()
        values = np.where(np.arange(n) % 2 == 0, 16383, -16000).astype(np.int64)
        if name.startswith("arm."):
            values = np.zeros(n, np.int64)
        parameters.append(with_best_scale(QuantisedParameter(name, tuple(tensor.shape), 0, values)))
    grids = [np.ones(g, np.int32) for g in model.grid_shapes]
    payload, width, _, _ = codec._code(grids, parameters, model)
    codings = tuple(TensorCoding(p.exponent, p.scale_index, p.width_bits) for p in parameters)
    header = Header(shape, output_dtype, (-1000.0, 1000.0), architecture_of(settings), codings,
                    width)  # fmt: skip
    return frame(pack_header(header), payload)


def _constant(shape) -> bytes:
    settings = CodecSettings.make(iterations=2, log_every=1, warmup_candidates=1)
    return codec.encode(np.full(shape, 5, np.int16), None, settings, 1e-3).data  # header only


def _slices(*parts: bytes) -> bytes:
    return b"".join(struct.pack("<I", len(part)) + part for part in parts)


CASES = {
    "overflowing synthesis, int16": (lambda: _overflowing_file("int16"), "NaN or Inf"),
    "overflowing synthesis, float32": (lambda: _overflowing_file("float32"), "NaN or Inf"),
    "slices of two shapes": (
        lambda: _slices(_constant((16, 16)), _constant((8, 8))),
        "slice 1 decodes to a 8x8 int16 image where slice 0 is 16x16",
    ),
    "a slice-by-slice file cut short": (
        lambda: _slices(_constant((16, 16)), _constant((16, 16)))[:-3],
        "truncated or damaged",
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_crafted_codec_file_is_refused_naming_it(case, tmp_path, monkeypatch, caplog):
    monkeypatch.chdir(tmp_path)
    build, message = CASES[case]
    Path("crafted.vnc").write_bytes(build())
    argv = ["decompress", "--container", "crafted.vnc", "--out", "out.npy", "--device", "cpu"]
    assert main(argv) == 2
    assert "crafted.vnc: " in caplog.text and message in caplog.text
    assert sorted(p.name for p in tmp_path.iterdir()) == ["crafted.vnc"]
