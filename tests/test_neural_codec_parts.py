"""The neural codec's pieces: geometry and decoding order, upsampling, the Laplace model and
its integer tables, the integer entropy model against the float one, the header."""

import copy
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from volinr.errors import InputError
from volinr.neural_codec import laplace
from volinr.neural_codec.architecture import (
    architecture_of,
    coded_tensor_count,
    integer_entropy_model,
)
from volinr.neural_codec.bitstream import (
    Header,
    TensorCoding,
    frame,
    pack_header,
    unframe,
    unpack_header,
    write_varint,
)
from volinr.neural_codec.blocked import SmallConvolution
from volinr.neural_codec.geometry import (
    LevelSchedule,
    causal_offsets,
    level_shapes,
    wavefront_weights,
)
from volinr.neural_codec.latent_coding import (
    IntegerEntropyModel,
    IntegerLayer,
    latent_symbols,
    level_indices,
)
from volinr.neural_codec.model import LatentCodecModel
from volinr.neural_codec.network_quantisation import quantise_network
from volinr.neural_codec.rounding import soft_round, soft_round_conditional_mean
from volinr.neural_codec.settings import CodecSettings

# --- geometry ------------------------------------------------------------------------------


def test_level_shapes_halve_with_ceiling_and_stop_at_one_sample():
    assert level_shapes((37, 53), 7) == [
        (37, 53),
        (19, 27),
        (10, 14),
        (5, 7),
        (3, 4),
        (2, 2),
        (1, 1),
    ]
    assert level_shapes((5, 17, 23), 9)[-1] == (1, 1, 1)
    assert len(level_shapes((5, 17, 23), 9)) == 6
    assert level_shapes((512, 512), 3) == [(512, 512), (256, 256), (128, 128)]


@pytest.mark.parametrize("ndim, size", [(2, 4), (2, 12), (2, 24), (3, 13), (3, 20)])
def test_context_is_causal_nearest_first(ndim, size):
    offsets = causal_offsets(ndim, size)
    assert offsets.shape == (size, ndim) and len({tuple(o) for o in offsets}) == size
    for o in offsets:
        first = o[np.flatnonzero(o)[0]]
        assert first < 0  # earlier in raster order
    distances = (offsets**2).sum(axis=1)
    assert np.all(np.diff(distances) >= 0)


def test_causal_half_of_a_5x5_window_decodes_in_3i_plus_j_steps():
    offsets = causal_offsets(2, 12)
    assert np.array_equal(wavefront_weights(offsets), [3, 1])
    schedule = LevelSchedule((512, 512), offsets)
    assert len(schedule.starts) - 1 == 3 * 511 + 511 + 1


@pytest.mark.parametrize(
    "shape, size", [((9, 13), 12), ((7, 11), 24), ((4, 6, 5), 13), ((3, 5, 7), 20)]
)
def test_every_neighbour_is_decoded_at_an_earlier_step(shape, size):
    offsets = causal_offsets(len(shape), size)
    schedule = LevelSchedule(shape, offsets)
    step_of = np.empty(int(np.prod(shape)), dtype=np.int64)
    for step in range(len(schedule.starts) - 1):
        step_of[schedule.order[schedule.starts[step] : schedule.starts[step + 1]]] = step
    assert sorted(schedule.order.tolist()) == list(range(int(np.prod(shape))))
    grid = np.indices(shape).reshape(len(shape), -1).T
    for position, step in zip(grid, step_of, strict=True):
        for offset in offsets:
            neighbour = position + offset
            if np.all(neighbour >= 0) and np.all(neighbour < shape):
                assert step_of[np.ravel_multi_index(tuple(neighbour), shape)] < step


# --- model ---------------------------------------------------------------------------------


def test_bicubic_upsampling_equals_torch_bicubic():
    model = LatentCodecModel((20, 26), CodecSettings.make(levels=2))
    coarse = torch.randn(10, 13)
    stack = model.upsample([torch.zeros(20, 26), coarse])
    expected = F.interpolate(coarse[None, None], scale_factor=2, mode="bicubic")
    assert torch.allclose(stack[0, 1], expected[0, 0], atol=1e-5)


def test_upsampling_crops_odd_sizes_and_keeps_3d_shapes():
    model = LatentCodecModel((5, 17, 23), CodecSettings.make(levels=4))
    latents = [torch.randn(g) for g in model.grid_shapes]
    assert model.upsample(latents).shape == (1, 4, 5, 17, 23)
    assert model.synthesise(latents).shape == (5, 17, 23)


def test_causal_context_gradient_matches_a_masked_convolution():
    """The written-out context gather and its backward equal autograd through a masked conv."""
    torch.manual_seed(0)
    model = LatentCodecModel((9, 12), CodecSettings.make(levels=2, context_size=12))
    assert model.arm_weights[0].shape[1] == 13  # two grids: one coarser grid to read
    grid = torch.randn(9, 12, dtype=torch.float64, requires_grad=True)
    latents = [grid, torch.randn(5, 6, dtype=torch.float64)]
    model = model.double()
    for w in model.arm_weights:
        torch.nn.init.normal_(w)
    mu, log_scale = model.laplace_parameters(latents, 0)
    (mu.sin() + log_scale.cos()).sum().backward()
    grad = grid.grad.clone()

    reference = grid.detach().clone().requires_grad_(True)
    ordered = [tuple(int(v) for v in o) for o in model.context_offsets]
    context = torch.stack(
        [
            torch.roll(F.pad(reference, (3, 3, 3, 3)), (-a, -b), (0, 1))[3:-3, 3:-3]
            for a, b in ordered
        ]
    ).reshape(len(ordered), -1)
    coarse = model.coarser_context(latents, 0).reshape(1, -1)
    h = model.arm_weights[0] @ torch.cat([context, coarse]) + model.arm_biases[0][:, None]
    h2 = model.arm_weights[1] @ F.relu(h) + model.arm_biases[1][:, None] + F.relu(h)
    out = model.arm_weights[2] @ F.relu(h2) + model.arm_biases[2][:, None]
    assert torch.allclose(out[0], mu) and torch.allclose(out[1], log_scale)
    (out[0].sin() + out[1].cos()).sum().backward()
    assert torch.allclose(reference.grad, grad)


def test_soft_round_tends_to_rounding_and_its_conditional_mean_inverts_it():
    x = torch.linspace(-3, 3, 101, dtype=torch.float64)
    inside = x[(x - x.round()).abs() < 0.45]
    assert torch.allclose(soft_round(inside, 1e-3), torch.round(inside), atol=1e-6)
    assert torch.allclose(soft_round(x, 100.0), x, atol=1e-3)
    assert torch.allclose(
        soft_round_conditional_mean(soft_round(x, 0.3) + 0.5, 0.3) - 0.5, x, atol=1e-6
    )


def test_mac_count_of_the_synthesis():
    settings = CodecSettings.make(
        levels=3,
        synthesis_widths=(8,),
        residual_channels=2,
        residual_layers=1,
        context_size=12,
        arm_layers=2,
        arm_width=12,
        context_coarser_levels=2,
    )
    macs = LatentCodecModel((16, 16), settings).macs_per_voxel()
    assert macs["synthesis"] == 3 * 8 + 8 * 2 + 9 * 2 * 2 + 2
    # the entropy model per grid: 12 neighbours and the coarser grids it reads (2, 1, 0 of
    # the 16x16, 8x8 and 4x4 grids), then 2 residual layers of 12 and the 2 outputs
    entropy = sum(n * (inputs * 12 + 12 * 12 + 12 * 2) for n, inputs in [(256, 14), (64, 13)])
    entropy += 16 * (12 * 12 + 12 * 12 + 12 * 2)
    assert macs["entropy_model"] == pytest.approx(entropy / 256)
    assert macs["total"] == pytest.approx(
        macs["upsampling"] + macs["synthesis"] + macs["entropy_model"]
    )


@pytest.mark.parametrize(
    "settings",
    [
        CodecSettings.make(),
        CodecSettings.make(learned_upsampling=False, residual_layers=0, arm_layers=0),
        CodecSettings.make(synthesis_widths=(4, 4, 4), residual_layers=3, arm_layers=3),
    ],
)
def test_coded_tensor_count_matches_the_model(settings):
    model = LatentCodecModel((8, 8), settings)
    assert coded_tensor_count(architecture_of(settings), 2) == len(model.coded_parameters())


# --- Laplace model and integer tables --------------------------------------------------------


def test_laplace_bits_equal_the_cdf_difference():
    y = torch.tensor([-7.0, -1.0, 0.0, 0.3, 1.0, 2.0, 4.0], dtype=torch.float64)
    mu = torch.tensor([0.2, -0.4, 0.1, 0.0, 1.4, -3.0, 0.0], dtype=torch.float64)
    log_scale = torch.tensor([0.0, -1.0, -4.0, 1.0, 0.5, 2.0, 0.0], dtype=torch.float64)
    b = torch.exp(log_scale)

    def cdf(x):
        return torch.where(
            x < mu, 0.5 * torch.exp((x - mu) / b), 1 - 0.5 * torch.exp(-(x - mu) / b)
        )

    expected = -torch.log2(cdf(y + 0.5) - cdf(y - 0.5))
    assert torch.allclose(laplace.laplace_bits(y, mu, log_scale), expected, rtol=1e-9)
    # in the tail the bits grow linearly, 1 / (b ln 2) a unit, up to the coder's floor
    far = laplace.laplace_bits(torch.tensor([10.0, 15.0]), torch.zeros(2), torch.zeros(2))
    assert (far[1] - far[0]).item() == pytest.approx(5 / math.log(2), rel=1e-4)


def test_integer_table_is_a_close_laplace_and_never_negative():
    table = laplace.latent_table(12)
    assert table.shape == (17 * 160, 25) and table.min() >= 0
    assert np.all(table == np.round(table))  # integers, exact in float64
    row = 8 * 160 + 80  # fraction 0, log b = 1/32
    b = math.exp(float(laplace.latent_log_scale(80)))
    d = np.arange(-12, 13)
    exact = np.where(
        d == 0, 1 - np.exp(-0.5 / b), 0.5 * np.exp(-(np.abs(d) - 0.5) / b) * (1 - np.exp(-1 / b))
    )
    assert np.allclose(table[row, laplace.zigzag(d)] / 2**32, exact, atol=3e-9)
    assert np.all(np.diff(table[row]) <= 0)  # zig-zag order: likeliest first at fraction 0


def test_zigzag_orders_symbols_by_distance_from_zero():
    d = np.arange(-5, 6)
    assert sorted(laplace.zigzag(d).tolist()) == list(range(11))
    assert laplace.zigzag(np.array([0, -1, 1, -2, 2])).tolist() == [0, 1, 2, 3, 4]
    assert np.array_equal(laplace.unzigzag(laplace.zigzag(d)), d)


def test_parameter_pmf_is_symmetric():
    pmf = laplace.parameter_pmf(20, 50)
    assert np.array_equal(pmf, pmf[::-1]) and pmf.argmax() == 50


# --- integer entropy model -----------------------------------------------------------------


def _trained_like_model(shape=(24, 20), coarser_levels=1, stabiliser=False):
    torch.manual_seed(1)
    settings = CodecSettings.make(
        levels=3, context_coarser_levels=coarser_levels, arm_stabiliser=stabiliser
    )
    model = LatentCodecModel(shape, settings)
    with torch.no_grad():
        for w in model.arm_weights:
            w.normal_(0, 0.4)
        for b in model.arm_biases:
            b.normal_(0, 0.4)
    latents = [torch.round(torch.randn(g) * 3) for g in model.grid_shapes]
    return model, settings, latents


@pytest.mark.parametrize(("coarser_levels", "stabiliser"), [(1, False), (2, False), (2, True)])
def test_integer_entropy_model_follows_the_float_one(coarser_levels, stabiliser):
    model, settings, latents = _trained_like_model(
        coarser_levels=coarser_levels, stabiliser=stabiliser
    )
    if stabiliser:
        with torch.no_grad():
            model.arm_stabiliser_weight.normal_(0, 0.4)
    target = torch.rand(model.shape)
    parameters = quantise_network(model, latents, target, lam=1e-3)
    arm = integer_entropy_model(parameters, settings)
    grids = [g.numpy().astype(np.int64) for g in latents]
    indices = level_indices(model.grid_shapes, model.context_offsets, coarser_levels)
    rows, deltas = latent_symbols(grids, indices, arm)
    for level, index in enumerate(indices):
        mu, log_scale = model.laplace_parameters(latents, level)
        order = torch.from_numpy(index.schedule.order)
        mu, log_scale = mu.detach()[order].double(), log_scale.detach()[order].double()
        rounded = grids[level].reshape(-1)[index.schedule.order] - deltas[level]
        fraction = (rows[level] // 160 - 8) / 16
        assert np.abs(rounded + fraction - mu.numpy()).max() <= 1 / 32 + 1e-3
        scale = laplace.LOG_SCALE_MIN + (rows[level] % 160 + 0.5) / 16
        inside = (log_scale > -5) & (log_scale < 5)
        assert np.abs(scale - log_scale.numpy())[inside.numpy()].max() <= 1 / 32 + 1e-3


# --- header and framing --------------------------------------------------------------------


def test_header_round_trip():
    settings = CodecSettings.make(
        synthesis_widths=(12, 6), activation="gelu", context_coarser=False
    )
    count = coded_tensor_count(architecture_of(settings), 3)
    header = Header(
        (93, 64, 64),
        "int16",
        (-1024.0, 3071.0),
        architecture_of(settings),
        tuple(TensorCoding(i % 25, i % 64, i % 15) for i in range(count)),
        37,
    )
    packed = pack_header(header)
    assert len(packed) < 2 * count + 40
    assert unpack_header(packed, "h", coded_tensor_count) == header
    with pytest.raises(InputError, match="h: header: 1 unread bytes"):
        unpack_header(packed + b"\x00", "h", coded_tensor_count)
    with pytest.raises(InputError, match="h: header: truncated"):
        unpack_header(packed[:-1], "h", coded_tensor_count)


def test_framing_round_trip_and_varints():
    assert write_varint(0) == b"\x00" and write_varint(300) == b"\xac\x02"
    data = frame(b"head", b"payload")
    assert unframe(data, "f") == (b"head", b"payload")
    assert len(data) == 8 + 2 + 1 + 1 + 4 + 7 + 4


@pytest.mark.parametrize("activation", ["relu", "gelu"])
@pytest.mark.parametrize("shape", [(37, 53), (5, 17, 23)])
def test_blocked_training_step_equals_plain_autograd(activation, shape, monkeypatch):
    """The written-out MLP passes (small blocks, to cross block edges) give autograd's loss and
    gradients."""
    monkeypatch.setattr("volinr.neural_codec.blocked.BLOCK_COLUMNS", 256)
    torch.manual_seed(0)
    settings = CodecSettings.make(levels=4, activation=activation)
    blocked = LatentCodecModel(shape, settings, blocked=True).double()
    with torch.no_grad():
        for p in blocked.parameters():
            p.add_(torch.randn_like(p) * 0.3)
    plain = copy.deepcopy(blocked)
    plain.blocked = False
    target = torch.rand(shape, dtype=torch.float64)

    def loss(model):
        latents = model.scaled_latents()
        mse = ((model.synthesise(latents) - target) ** 2).mean()
        return mse + 1e-3 * model.latent_bits(latents)

    blocked_loss, plain_loss = loss(blocked), loss(plain)
    blocked_loss.backward()
    plain_loss.backward()
    assert blocked_loss.item() == pytest.approx(plain_loss.item(), rel=1e-12)
    for a, b in zip(blocked.parameters(), plain.parameters(), strict=True):
        assert torch.allclose(a.grad, b.grad, rtol=1e-9, atol=1e-12)


def test_rate_gradient_stops_at_the_coders_floor():
    y = torch.tensor([0.0, 300.0], dtype=torch.float64, requires_grad=True)
    mu = torch.zeros(2, dtype=torch.float64)
    log_scale = torch.full((2,), -3.0, dtype=torch.float64)
    bits = laplace.laplace_bits(y, mu, log_scale)
    assert bits[1].item() == laplace.MAX_SYMBOL_BITS
    bits.sum().backward()
    assert y.grad[1].item() == 0.0


def test_integer_entropy_model_float_and_int64_paths_agree():
    """The float64 shortcut gives the int64 arithmetic's integers exactly."""
    rng = np.random.default_rng(3)
    layers = [
        IntegerLayer(rng.integers(-3000, 3000, (12, 13)), 12, rng.integers(-999, 999, 12), 9),
        IntegerLayer(rng.integers(-3000, 3000, (12, 12)), 11, rng.integers(-999, 999, 12), 10),
        IntegerLayer(rng.integers(-3000, 3000, (2, 12)), 13, rng.integers(-999, 999, 2), 8),
    ]
    model = IntegerEntropyModel(layers, context_size=12)
    assert model.exact_in_float and not model.clamped
    context = rng.integers(-1023, 1024, (5000, 13))
    fast = model(context)
    model.exact_in_float = False
    slow = model(context)
    assert np.array_equal(fast[0], slow[0]) and np.array_equal(fast[1], slow[1])
    coarsest = model(context[:, :12])  # the coarsest grid: no coarser column
    model.exact_in_float = True
    assert np.array_equal(model(context[:, :12])[0], coarsest[0])


@pytest.mark.parametrize("width", [3, 8, 9, 300])
def test_symbols_round_trip_through_the_short_table_and_its_escape(width):
    import constriction

    from volinr.neural_codec.latent_coding import _SymbolCoder

    rng = np.random.default_rng(width)
    deltas = np.concatenate([rng.integers(-width, width + 1, 300), [width, -width, 0]])
    rows = rng.integers(0, 17 * 160, deltas.size)
    coder = _SymbolCoder(width)
    assert (coder.tail is None) == (2 * width + 1 <= laplace.SHORT_SYMBOLS)
    encoder = constriction.stream.queue.RangeEncoder()
    for chunk in np.array_split(np.arange(deltas.size), 7):
        coder.encode(encoder, laplace.zigzag(deltas[chunk]), rows[chunk])
    decoder = constriction.stream.queue.RangeDecoder(encoder.get_compressed())
    decoded = [coder.decode(decoder, rows[c]) for c in np.array_split(np.arange(deltas.size), 7)]
    assert np.array_equal(laplace.unzigzag(np.concatenate(decoded)), deltas)


@pytest.mark.parametrize("shape", [(2, 9, 11), (3, 5, 6, 7)])
def test_small_convolution_equals_torch_and_its_gradient_checks(shape):
    from volinr.neural_codec.blocked import SmallConvolution

    torch.manual_seed(0)
    x = torch.randn(*shape, dtype=torch.float64, requires_grad=True)
    ndim = len(shape) - 1
    weight = torch.randn(4, shape[0], *([3] * ndim), dtype=torch.float64, requires_grad=True)
    bias = torch.randn(4, dtype=torch.float64, requires_grad=True)
    conv = F.conv2d if ndim == 2 else F.conv3d
    assert torch.allclose(SmallConvolution.apply(x, weight, bias), conv(x[None], weight, bias)[0])
    assert torch.autograd.gradcheck(SmallConvolution.apply, (x, weight, bias))


# --- synthesis stages and the quantisation search's cache ----------------------------------


def _written_out_synthesis(model, latents):
    """The synthesis as one expression (the stages' reference): upsampling, 1x1 layers,
    residual 3x3 convolutions, output layer, clamp."""
    act = F.gelu if model.settings.activation == "gelu" else F.relu
    features = model.upsample(latents).reshape(len(latents), -1)
    pairs = list(zip(model.synthesis_weights, model.synthesis_biases, strict=True))
    for i, (w, b) in enumerate(pairs):
        features = torch.addmm(b[:, None], w, features)
        if i < len(pairs) - 1:
            features = act(features)
    z = features.reshape(1, -1, *model.shape)
    for i, (w, b) in enumerate(zip(model.residual_weights, model.residual_biases, strict=True)):
        inner = F.pad(z if i == 0 else act(z), (1, 1) * model.ndim, mode="replicate")
        z = z + SmallConvolution.apply(inner[0], w, b)[None]
    out = torch.addmm(model.output_bias[:, None], model.output_weight, z.reshape(z.shape[1], -1))
    return out.reshape(model.shape).clamp(0.0, 1.0)


def _busy_model(shape, activation="relu"):
    torch.manual_seed(3)
    model = LatentCodecModel(shape, CodecSettings.make(levels=3, activation=activation))
    with torch.no_grad():
        for tensor in model.coded_parameters().values():
            tensor.add_(torch.randn_like(tensor) * 0.2)  # residual filters no longer zero
    latents = [torch.round(torch.randn(g) * 2) for g in model.grid_shapes]
    return model, latents


@pytest.mark.parametrize("activation", ["relu", "gelu"])
@pytest.mark.parametrize("shape", [(23, 18), (5, 9, 12)])
def test_synthesis_stages_compute_the_written_out_synthesis_to_the_bit(activation, shape):
    model, latents = _busy_model(shape, activation)
    with torch.no_grad():
        expected = _written_out_synthesis(model, latents)
        assert torch.equal(model.synthesise(latents), expected)
        stages = model.synthesis_stages()
        for start in range(len(stages)):  # what the search does: resume from a stage's input
            state = latents
            for _, stage in stages[:start]:
                state = stage(state)
            for _, stage in stages[start:]:
                state = stage(state)
            assert torch.equal(state, expected)
    named = [n for names, _ in stages for n in names]
    coded = [n for n in model.coded_parameters() if not n.startswith("arm.")]
    assert named == coded  # every synthesis tensor in one stage, in file order


def test_quantisation_search_with_the_cache_chooses_what_the_whole_synthesis_chooses():
    model, latents = _busy_model((29, 31))
    target = torch.rand(model.shape)
    uncached = copy.deepcopy(model)
    names = tuple(n for n in uncached.coded_parameters() if not n.startswith("arm."))
    # one stage that reads every tensor: each candidate runs the whole synthesis afresh
    uncached.synthesis_stages = lambda: [(names, lambda lat: _written_out_synthesis(uncached, lat))]
    cached_choice = quantise_network(model, latents, target, lam=1e-3)
    whole_choice = quantise_network(uncached, latents, target, lam=1e-3)
    assert [(p.name, p.exponent) for p in cached_choice] == [
        (p.name, p.exponent) for p in whole_choice
    ]
    assert len({p.exponent for p in cached_choice}) > 1  # the search did choose
    for a, b in zip(cached_choice, whole_choice, strict=True):
        assert np.array_equal(a.integers, b.integers)


def test_the_step_search_does_not_stop_on_finer_steps_that_give_the_same_values():
    """A bias of 0.52 is 0.5 at steps 2^-1 to 2^-4; counting those as misses stopped the
    search at 0.5 (a 10,000-iteration point lost 17 dB). It must reach a step that holds it."""
    from volinr.neural_codec.model import LatentCodecModel
    from volinr.neural_codec.network_quantisation import quantise_network

    torch.manual_seed(0)
    settings = CodecSettings.make(levels=3)
    model = LatentCodecModel((16, 16), settings, output_bias=0.52)
    latents = [torch.round(torch.randn(g) * 2) for g in model.grid_shapes]
    with torch.no_grad():
        target = model.synthesise(latents).clone()
    chosen = {p.name: p for p in quantise_network(model, latents, target, lam=1e-6)}
    bias = float(chosen["output.bias"].values())
    assert abs(bias - 0.52) < 0.01, bias


def test_the_step_search_passes_worse_finer_steps_until_no_finer_step_can_win():
    """Costs are not monotone in the step: an output layer's [0.58, 0.33] at step 1 ([1, 0])
    beat steps 1/2 to 1/8, and a search that stopped after three worse steps kept it (a
    default-run point lost 4.8 dB). Here that cost landscape, made up: the search must reach
    the fine steps, and stop once their bits alone exceed the best cost."""
    from volinr.neural_codec.network_quantisation import candidate_exponents, search_step

    original = torch.tensor([0.58, 0.33])
    tried = []

    def other_term(values):
        tried.append(values.clone())
        if torch.equal(values, torch.tensor([1.0, 0.0])):
            return 0.05
        return 10 * float((values - original).abs().max())

    best = search_step("output.weight", original, other_term, cost_per_bit=1e-4)
    assert best.exponent >= 6
    assert torch.allclose(best.values(), original, atol=0.01)
    # the first call is the bound (the float values); it stopped well before the last step
    assert torch.equal(tried[0], original)
    assert len(tried) - 1 < len(candidate_exponents("output.weight")) - 5


def test_the_refinement_moves_integers_several_steps_and_never_raises_the_cost():
    """A made-up landscape: the cost is the distance to values two and three steps away from
    the quantised ones, and bits are nearly free; the greedy pass must walk each integer there
    (several steps in one direction), report how many moved, and never end above its start."""
    from volinr.neural_codec.network_quantisation import refine_integers
    from volinr.neural_codec.parameter_coding import quantise

    start = quantise("synthesis.0.weight", torch.tensor([0.0, 1.0, 2.0, 3.0]), exponent=0)
    goal = torch.tensor([2.0, 1.0, -1.0, 3.0])

    def other_term(values):
        return float(((values - goal) ** 2).sum())

    refined, moved = refine_integers(start, other_term, cost_per_bit=1e-6)
    assert refined.integers.tolist() == [2, 1, -1, 3]
    assert moved == 2

    def cost(p, per_bit=1e-6):
        from volinr.neural_codec.parameter_coding import parameter_bits

        return other_term(p.values()) + per_bit * parameter_bits(p)

    assert cost(refined) < cost(start)
    # where bits are dear, the pass trades values for bits, and still only downhill
    dear, _ = refine_integers(start, other_term, cost_per_bit=10.0)
    assert cost(dear, 10.0) < cost(start, 10.0)
    assert np.abs(dear.integers).sum() < np.abs(start.integers).sum()


def _refined_whole_cost(model, latents, target, passes, plans=None, refinement_plans=None):
    """Quantise a copy of the model with ``passes`` refinement passes; the whole image's coded
    cost (MSE + 1e-3 bits per voxel, every tensor as coded) and the chosen tensors."""
    from volinr.neural_codec.parameter_coding import parameter_bits

    trial = copy.deepcopy(model)
    chosen = quantise_network(
        trial, latents, target, 1e-3, plans, refinement_passes=passes,
        refinement_plans=refinement_plans,
    )  # fmt: skip
    for p, tensor in zip(chosen, trial.coded_parameters().values(), strict=True):
        assert torch.equal(p.values(), tensor)  # the tensors coded are the ones left in it
    with torch.no_grad():
        mse = torch.mean((trial.synthesise(latents) - target) ** 2).item()
        bits = trial.latent_bits(latents).item() + sum(parameter_bits(p) for p in chosen)
    return mse + 1e-3 * bits / target.numel(), chosen


def _random_model(shape, seed, **settings):
    torch.manual_seed(seed)
    model = LatentCodecModel(shape, CodecSettings.make(**settings), output_bias=0.4)
    return model, [torch.round(torch.randn(g) * 2) for g in model.grid_shapes]


def test_the_refinement_lowers_the_coded_cost_of_a_real_model():
    """On a small trained-from-random model: the whole coded cost (MSE + lambda bits, every
    tensor as coded) with one refinement pass is at most the cost without, and the refined
    tensors are the ones left in the model."""
    model, latents = _random_model((24, 24), 3, levels=3)
    target = torch.rand(24, 24)
    plain, plain_chosen = _refined_whole_cost(model, latents, target, 0)
    refined, refined_chosen = _refined_whole_cost(model, latents, target, 1)
    assert refined < plain
    assert any(
        not np.array_equal(a.integers, b.integers)
        for a, b in zip(plain_chosen, refined_chosen, strict=True)
    )


def test_the_refinement_on_blocks_lowers_the_cost_it_measures_on_them(monkeypatch):
    """A volume decoded block by block: the passes measure on the blocks (here every block, so
    their cost is the whole volume's) and must lower it."""
    from volinr.neural_codec import regions

    monkeypatch.setitem(regions.DECODING_BLOCK_EDGE, 3, 8)
    small = dict(levels=3, synthesis_widths=(4,), arm_width=4, arm_layers=1, residual_layers=1)
    model, latents = _random_model((5, 9, 11), 3, **small)
    target = torch.rand(model.shape)
    plans = regions.decoding_plans(model)
    assert plans is not None and len(plans) > 1
    refined, _ = _refined_whole_cost(model, latents, target, 1, plans, plans)
    assert refined < _refined_whole_cost(model, latents, target, 0, plans, plans)[0]


def test_the_refinement_samples_boxes_spread_over_a_large_image(monkeypatch):
    """Up to REFINEMENT_SAMPLE_VOXELS the refinement measures on the whole image; beyond, on
    one box in each octant (3D) or ninth (2D), disjoint, inside the image, about that many
    voxels in all, a thin axis spanned by one box."""
    from volinr.neural_codec import regions

    assert regions.refinement_sample(LatentCodecModel((5, 17, 23), CodecSettings.make())) is None
    monkeypatch.setattr(regions, "REFINEMENT_SAMPLE_VOXELS", 8 * 8**3)
    for shape, thirds in (((64, 64, 64), 2), ((60, 90), 3)):
        plans = regions.refinement_sample(LatentCodecModel(shape, CodecSettings.make(levels=3)))
        boxes = [plan.block for plan in plans]
        assert len(boxes) == thirds ** len(shape)
        assert sum(box.voxels for box in boxes) <= regions.REFINEMENT_SAMPLE_VOXELS
        corners = [list(zip(box.start, box.stop, shape, strict=True)) for box in boxes]
        assert all(0 <= a < b <= n for corner in corners for a, b, n in corner)
        cells = {tuple((a + b) // 2 * thirds // n for a, b, n in corner) for corner in corners}
        assert len(cells) == len(boxes)  # one box a cell of the lattice: spread, not piled up

    # a slab thinner than a box's edge: one box along it, the others grown to keep the budget
    # (the 20x512x512 real CT measured 128,000 of its 524,288 voxels before)
    plans = regions.refinement_sample(LatentCodecModel((3, 64, 64), CodecSettings.make(levels=3)))
    boxes = [plan.block for plan in plans]
    assert len(boxes) == 4 and all((box.start[0], box.stop[0]) == (0, 3) for box in boxes)
    total = sum(box.voxels for box in boxes)
    assert 0.75 * regions.REFINEMENT_SAMPLE_VOXELS <= total <= regions.REFINEMENT_SAMPLE_VOXELS


@pytest.mark.parametrize("seed", [5, 6])
def test_moves_found_on_the_refinement_sample_are_kept_only_where_the_whole_cost_drops(seed):
    """A refinement sample unlike the rest of the image (a corner of another brightness):
    moves that help it hurt the whole, and must not reach the file."""
    from volinr.neural_codec import regions

    model, latents = _random_model((24, 24), seed, levels=3)
    target = torch.rand(24, 24) * 0.3
    target[:8, :8] = 0.9
    corner = [regions.plan_block(model, regions.Box((0, 0), (8, 8)))]
    refined, _ = _refined_whole_cost(model, latents, target, 2, None, corner)
    assert refined <= _refined_whole_cost(model, latents, target, 0)[0]


@pytest.mark.parametrize("shape", [(37, 41), (9, 20, 18)])
def test_the_rate_on_distinct_columns_is_the_whole_rate_and_follows_the_weights(shape):
    # the quantisation's rate runs the entropy model once per distinct (context, latent)
    # column and counts it as often as it occurs: the sum must be every latent's bits, before
    # and after a weight of the entropy model changes in place (as a candidate's does)
    from volinr.neural_codec.network_quantisation import _Sample

    model, latents = _random_model(shape, 5, levels=4)
    latents = [torch.where(torch.rand(g.shape) < 0.97, 0.0, g) for g in latents]  # mostly zeros
    stage_of = {n: i for i, (names, _) in enumerate(model.synthesis_stages()) for n in names}
    sample = _Sample(model, latents, torch.rand(shape), None, stage_of)
    assert sum(len(counts) for *_, counts in sample.rows) < sum(g.numel() for g in latents) / 2
    with torch.no_grad():
        for tensor in (None, model.arm_weights[0], model.arm_biases[-1]):
            if tensor is not None:
                tensor.add_(0.25 * torch.randn(tensor.shape))
            whole = sum(b.item() for b in model.latent_bits_by_level(latents))
            assert sample.latent_bits() == pytest.approx(whole, rel=1e-5)


@pytest.mark.parametrize(("activation", "shape"), [("relu", (23, 26)), ("gelu", (23, 26)),
                                                   ("relu", (6, 9, 11))])  # fmt: skip
def test_single_moves_cost_what_the_whole_synthesis_gives(activation, shape):
    # the refinement's candidates of a 1x1 layer move one integer: their MSE from the cached
    # column and rank-one update must be the full synthesis's (up to float rounding), from
    # the tensor's values and again after a kept move (settle), and the tensor must hold them
    from volinr.neural_codec.network_quantisation import _Sample
    from volinr.neural_codec.synthesis_moves import SingleMoveDistortion

    model, latents = _random_model(shape, 7, levels=3, activation=activation)
    target = torch.rand(model.shape)
    stage_of = {n: i for i, (names, _) in enumerate(model.synthesis_stages()) for n in names}
    names = [n for n in model.coded_parameters() if n.startswith("synthesis.")]
    assert len(names) == 2 * len(model.synthesis_weights)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name in names:
            moves = _Sample(model, latents, target, None, stage_of)
            whole = _Sample(model, latents, target, None, stage_of)
            fast = moves.other_term(name, 1e-3, single_moves=True)
            full = whole.other_term(name, 1e-3)
            assert isinstance(fast, SingleMoveDistortion)
            tensor = model.coded_parameters()[name]
            base = tensor.detach().clone()
            assert fast(base) == full(base)  # the same operations: bitwise
            for _ in range(2):
                for index in torch.randint(base.numel(), (6,), generator=generator).tolist():
                    moved = base.clone()
                    moved.view(-1)[index] += 0.5 * (1 + index % 3)
                    assert fast(moved) == pytest.approx(full(moved), rel=1e-5, abs=1e-9)
                    assert torch.equal(tensor, moved)
                base = base + 0.1 * torch.randn(base.shape, generator=generator)
                fast.settle(base)  # a kept move that changed the scale: every value moves
            assert fast(base * 1.5) == full(base * 1.5)  # several values: the full synthesis
