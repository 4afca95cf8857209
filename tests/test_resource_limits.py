"""A fit or a decode that would not fit in memory is refused (or chunked) before it starts,
with the estimate in the message and no output left behind."""

import logging

import numpy as np
import pytest

from volinr import devices, limits
from volinr.cli import main
from volinr.io import save_array

WIDTH = 16


@pytest.fixture
def target(tmp_path):
    image = np.random.default_rng(0).normal(size=(24, 24)).astype(np.float32) * 100
    save_array(tmp_path / "target.npy", image, {"source": "test"})
    return tmp_path / "target.npy"


@pytest.fixture
def memory(monkeypatch):
    """Pretend that only ``n`` bytes are available."""

    def limit(n: int) -> None:
        monkeypatch.setattr(devices, "available_memory_bytes", lambda device: (n, "test limit"))

    return limit


def _fit(target, out, *extra: str) -> int:
    return main(
        ["fit", "--target", str(target), "--sine-layers", "2", "--width", str(WIDTH),
         "--iterations", "2", "--eval-every", "1", "--batch-size", "256",
         "--weights", str(out / "siren.pt"), "--record", str(out / "fit.json"),
         "--curve", str(out / "curve.csv"), "--device", "cpu", "--threads", "1", *extra]
    )  # fmt: skip


def _decode(weights, out, *extra: str) -> int:
    return main(
        ["decode", "--weights", str(weights), "--out", str(out), "--device", "cpu",
         "--threads", "1", *extra]
    )  # fmt: skip


def test_the_fit_estimate_grows_with_grid_batch_width_and_depth():
    parameters = limits.siren_parameters(128, 2)
    assert parameters == 17153  # the paper's 2-layer SIREN
    base = limits.estimate_fit_bytes(512 * 512, 65536, 128, 2)
    evaluation = 8192 * 128 * 4 * 3
    assert base == 512 * 512 * 28 + 65536 * 128 * 4 * (3 * 2 + 2) + evaluation + parameters * 20
    assert limits.estimate_fit_bytes(512 * 512 * 4, 65536, 128, 2) > base
    assert limits.estimate_fit_bytes(512 * 512, 2 * 65536, 128, 2) > base
    assert limits.estimate_fit_bytes(512 * 512, 65536, 256, 2) > base
    assert limits.estimate_fit_bytes(512 * 512, 65536, 128, 4) > base
    # the blocked step works through fixed blocks, not the whole batch at once
    assert limits.estimate_fit_bytes(512 * 512, 65536, 128, 2, "blocked", 2) < base / 4
    # a batch larger than the grid is the grid
    assert limits.estimate_fit_bytes(100, 65536, 16, 2) == limits.estimate_fit_bytes(
        100, 100, 16, 2
    )


def test_available_memory_comes_from_the_system_or_the_override(monkeypatch):
    import torch

    monkeypatch.delenv(devices.MEMORY_LIMIT_ENV, raising=False)
    available, source = devices.available_memory_bytes(torch.device("cpu"))
    assert available is not None and available > 0 and source
    monkeypatch.setenv(devices.MEMORY_LIMIT_ENV, "12345")
    assert devices.available_memory_bytes(torch.device("cpu")) == (12345, devices.MEMORY_LIMIT_ENV)


def test_a_fit_too_large_for_memory_is_refused_naming_its_estimate(
    tmp_path, target, memory, caplog
):
    out = tmp_path / "fit"
    parts = limits.fit_bytes(24 * 24, 256, WIDTH, 2, "blocked", 1)  # a CPU fit, one thread
    need = sum(parts.values())
    memory(need - 1)
    assert _fit(target, out) == 2
    message = caplog.records[-1].getMessage()
    assert message.startswith(
        f"SIREN 2 layers, seed 0, on target.npy: needs an estimated {limits.gb(need)} ("
    )
    assert (
        f"grid {limits.gb(24 * 24 * 28)}" in message
        and "activations of a 256-voxel batch" in message
    )
    assert f"more than the {limits.gb(need - 1)} available (test limit on cpu)" in message
    assert "lower siren.batch_size" in message
    assert not out.exists() or not list(out.iterdir())  # nothing written, no resume checkpoint
    memory(need)  # exactly enough: accepted
    assert _fit(target, out) == 0
    assert (out / "siren.pt").is_file()


def test_a_decode_too_large_for_memory_is_refused_and_a_normal_one_accepted(
    tmp_path, target, memory, caplog
):
    assert _fit(target, tmp_path) == 0
    weights = tmp_path / "siren.pt"
    memory(50_000_000)
    big = tmp_path / "big.npy"
    assert _decode(weights, big, "--shape", "4096", "4096") == 2
    message = caplog.records[-1].getMessage()
    output = 4096 * 4096 * 5  # float32 output and its finiteness mask
    chunk = limits.decode_chunk_bytes(1 << 18, WIDTH)
    assert message.startswith(
        f"decoding {weights} onto a 4096x4096 grid: needs an estimated "
        f"{limits.gb(output + chunk)} (output {limits.gb(output)}, a chunk of 262144 voxels "
        f"{limits.gb(chunk)}), more than the 0.05 GB available (test limit on cpu)"
    )
    assert not big.exists() and not big.with_suffix(".json").exists()
    # A decompress is checked the same way before it decodes anything.
    container = tmp_path / "siren.volinr"
    assert main(["compress", "--weights", str(weights), "--out", str(container)]) == 0
    memory(1000)
    rebuilt = tmp_path / "rebuilt.npy"
    assert main(["decompress", "--container", str(container), "--out", str(rebuilt)]) == 2
    assert "decompressing" in caplog.records[-1].getMessage() and not rebuilt.exists()
    # The fit's own grid fits: accepted.
    memory(50_000_000)
    small = tmp_path / "small.npy"
    assert _decode(weights, small) == 0
    assert np.load(small).shape == (24, 24)


def test_a_decode_whose_chunks_do_not_fit_runs_in_smaller_chunks(tmp_path, target, memory, caplog):
    assert _fit(target, tmp_path) == 0
    weights = tmp_path / "siren.pt"
    assert _decode(weights, tmp_path / "whole.npy", "--shape", "256", "256") == 0
    output = 256 * 256 * 5
    # room for the output and a chunk of 16384 voxels, not for one of all 65536
    memory(output + limits.decode_chunk_bytes(16384, WIDTH))
    with caplog.at_level(logging.WARNING):
        assert _decode(weights, tmp_path / "chunked.npy", "--shape", "256", "256") == 0
    assert "decoding in chunks of 16384 voxels" in caplog.text
    np.testing.assert_array_equal(
        np.load(tmp_path / "chunked.npy"), np.load(tmp_path / "whole.npy")
    )
