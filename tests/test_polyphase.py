"""The codec's 2x polyphase upsampling (``neural_codec.polyphase``): the filter it claims, a
gradient that checks against finite differences, and values that do not depend on the block
they are computed in."""

import pytest
import torch
import torch.nn.functional as F

from volinr.neural_codec.polyphase import PolyphaseUpsample


def reference_upsample(x, taps, dim, length):
    """The filter written the obvious way: replicate padding, a 1D convolution per phase over
    every row along ``dim``, the phases interleaved."""
    zero = taps.new_zeros(1)
    kernel = torch.stack([torch.cat([taps, zero]), torch.cat([zero, taps.flip(0)])])
    moved = x.movedim(dim, -1)
    n = moved.shape[-1]
    rows = F.pad(moved.reshape(-1, 1, n), (2, 2), mode="replicate")
    phases = F.conv1d(rows, kernel[:, None])  # (rows, 2, n)
    interleaved = phases.transpose(1, 2).reshape(*moved.shape[:-1], 2 * n)[..., :length]
    return interleaved.movedim(-1, dim)


CASES = [((1, 3, 7, 5), 2), ((1, 3, 7, 5), 3), ((1, 2, 4, 6, 5), 2), ((1, 2, 4, 6, 5), 4)]


@pytest.mark.parametrize(("shape", "dim"), CASES)
@pytest.mark.parametrize("odd", [False, True])
def test_polyphase_upsampling_is_the_filter_and_its_gradient_checks(shape, dim, odd):
    torch.manual_seed(0)
    x = torch.randn(*shape, dtype=torch.float64, requires_grad=True)
    taps = torch.randn(4, dtype=torch.float64, requires_grad=True)
    length = 2 * shape[dim] - int(odd)
    out = PolyphaseUpsample.apply(x, taps, dim, length)
    assert out.shape[dim] == length
    assert torch.allclose(out, reference_upsample(x, taps, dim, length))
    assert torch.autograd.gradcheck(
        lambda a, t: PolyphaseUpsample.apply(a, t, dim, length), (x, taps)
    )


@pytest.mark.parametrize("dim", [2, 3])
def test_polyphase_values_do_not_depend_on_the_block(dim):
    """A block's upsampled interior equals the whole grid's to the last bit (float32, odd
    extents whose vectorised loops end in different places): block-by-block decoding relies
    on it."""
    torch.manual_seed(1)
    x = torch.randn(1, 3, 37, 53)
    taps = torch.randn(4)
    whole = PolyphaseUpsample.apply(x, taps, dim, 2 * x.shape[dim])
    start, stop = 5, 5 + 19  # the block, and 2 samples of margin each side for the filter
    block = x.narrow(dim, start - 2, stop - start + 4)
    upsampled = PolyphaseUpsample.apply(block, taps, dim, 2 * block.shape[dim])
    interior = upsampled.narrow(dim, 4, 2 * (stop - start))
    assert torch.equal(interior, whole.narrow(dim, 2 * start, 2 * (stop - start)))
