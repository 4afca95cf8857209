import math

import pytest
import torch
import torch.nn.functional as F

from volinr.models import Siren, SRDenseNet


@pytest.mark.parametrize("layers, params", [(2, 17153), (3, 33665), (4, 50177)])
def test_siren_parameter_counts_match_the_paper(layers, params):
    assert Siren(3, 128, layers).parameter_count == params


def test_siren_initialisation_follows_the_reference_notebook():
    torch.manual_seed(0)
    model = Siren(3, 128, 3, omega_0=30.0)
    first = model.net[0].linear.weight
    hidden = model.net[1].linear.weight
    assert first.abs().max() <= 1 / 3 and first.abs().max() > 0.9 / 3
    bound = math.sqrt(6 / 128) / 30
    assert hidden.abs().max() <= bound and hidden.abs().max() > 0.9 * bound
    out = model(torch.rand(1000, 3) * 2 - 1)
    assert out.shape == (1000, 1) and torch.isfinite(out).all()


def test_srdensenet_output_shape_and_paper_size():
    model = SRDenseNet(blocks=2, layers_per_block=3, growth=8, bottleneck=16)
    assert model(torch.rand(2, 1, 12, 10)).shape == (2, 1, 48, 40)
    assert 2.5e6 < SRDenseNet().parameter_count < 2.8e6  # 8 x 8 blocks, growth 16, 256


def test_srdensenet_kaiming_init_is_applied():
    torch.manual_seed(0)
    conv = SRDenseNet(blocks=1, layers_per_block=2, growth=16, bottleneck=32).low_level[0]
    expected = math.sqrt(2 / (1 * 3 * 3))  # Kaiming normal, fan_in, ReLU gain
    assert abs(conv.weight.std().item() - expected) / expected < 0.3
    # PyTorch's default init would be uniform with std ~ 1/sqrt(3 * fan_in) = 0.19
    assert conv.weight.std().item() > 0.3


def test_global_residual_starts_as_bicubic():
    model = SRDenseNet(blocks=1, layers_per_block=2, growth=8, bottleneck=8, global_residual=True)
    x = torch.rand(1, 1, 8, 8)
    bicubic = F.interpolate(x, scale_factor=4, mode="bicubic", align_corners=False)
    torch.testing.assert_close(model(x), bicubic)
