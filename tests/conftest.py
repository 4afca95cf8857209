import numpy as np
import pytest
import torch


@pytest.fixture(autouse=True)
def _few_threads():
    # CI has 2 cores; keep tests from oversubscribing them.
    torch.set_num_threads(1)


@pytest.fixture
def rng():
    return np.random.default_rng(0)
