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
