"""The SR network never trains on the evaluation image nor on a re-encoding of it."""

from pathlib import Path

import numpy as np
import yaml

from volinr.data.dicom_frames import correlation_with, read_dicom_frames, read_frame
from volinr.io import sha256_array

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = yaml.safe_load((ROOT / "workflow/schemas/config.schema.yaml").read_text())


def test_default_training_sources_are_not_the_evaluation_slice():
    evaluation = read_frame(
        SCHEMA["properties"]["evaluation_image"]["properties"]["source"]["default"]
    ).pixels
    threshold = SCHEMA["properties"]["max_training_correlation"]["default"]
    sources = SCHEMA["properties"]["sr_training_sources"]["default"]
    config = yaml.safe_load((ROOT / "config/config.yaml").read_text())
    sources = config.get("sr_training_sources", sources)
    frames = [f for s in sources for f in read_dicom_frames(s)]
    assert len(frames) >= 8
    for frame in frames:
        assert frame.sha256 != sha256_array(evaluation)
        assert not np.array_equal(frame.pixels, evaluation)
        # Correlation, not only hashes: a re-encoding (other transfer syntax) scores > 0.99.
        assert abs(correlation_with(evaluation, frame.pixels)) < threshold, frame.source


def test_default_split_is_the_shipped_checkpoints(tmp_path):
    """The default run reuses the committed SR model only if its training split is this one, bit
    for bit: a reader change that moves one value's last bit retrains it (found once, by a
    fresh-clone run). The split is built as the workflow builds it, through the CLI."""
    import json
    import subprocess
    import sys

    from volinr.super_resolution import load_sr_checkpoint

    config = yaml.safe_load((ROOT / "config/config.yaml").read_text())
    props = SCHEMA["properties"]
    image = config.get("evaluation_image", {})
    source = image.get("source", props["evaluation_image"]["properties"]["source"]["default"])
    frame = image.get("frame", props["evaluation_image"]["properties"]["frame"]["default"])
    sources = config.get("sr_training_sources", props["sr_training_sources"]["default"])
    correlation = config.get(
        "max_training_correlation", props["max_training_correlation"]["default"]
    )
    volinr = [sys.executable, "-m", "volinr"]
    subprocess.run(
        [*volinr, "prepare", "--source", source, "--frame", str(frame)]
        + ["--out", tmp_path / "eval.npy"],
        check=True,
    )
    subprocess.run(
        [*volinr, "sr-dataset", "--eval", tmp_path / "eval.npy"]
        + [a for s in sources for a in ("--source", s)]
        + ["--max-correlation", str(correlation)]
        + ["--out", tmp_path / "training.npz", "--split", tmp_path / "split.json"],
        check=True,
    )
    split = json.loads((tmp_path / "split.json").read_text())
    _, payload = load_sr_checkpoint(ROOT / config["sr"]["checkpoint"])
    shipped = payload["training"]["split"]
    assert split["evaluation"]["sha256"] == shipped["evaluation"]["sha256"]
    assert [r["sha256"] for r in split["training"]] == [r["sha256"] for r in shipped["training"]]
