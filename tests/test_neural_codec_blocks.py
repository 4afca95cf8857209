"""The neural codec block by block: exact against the whole image, and bounded by its plan."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from volinr.neural_codec import codec, latent_coding, regions
from volinr.neural_codec.block_training import (
    BYTES_PER_LATENT,
    REGION_MARGIN,
    RUNTIME_BYTES,
    STEP_BYTES_PER_VOXEL,
    BlockSteps,
    BoxAdam,
    memory_plan,
)
from volinr.neural_codec.geometry import latent_count
from volinr.neural_codec.model import LatentCodecModel
from volinr.neural_codec.settings import CodecSettings

CASES = [((37, 45), 8), ((37, 45), 16), ((13, 21, 19), 5), ((13, 21, 19), 7)]


def _model(shape, **changes):
    torch.manual_seed(0)
    model = LatentCodecModel(shape, CodecSettings.make(**changes))
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.3)  # non-trivial networks (the residual stage too)
    return model


def _latents(model):
    return [torch.round(torch.randn(g) * 3) for g in model.grid_shapes]


@pytest.mark.parametrize(("shape", "edge", "changes"), [
    *[(shape, edge, {}) for shape, edge in CASES],
    ((37, 45), 8, {"upsampling_per_level": True}),
    ((13, 21, 19), 5, {"upsampling_per_level": True}),
    ((37, 45), 8, {"context_coarser_levels": 4}),
    ((13, 21, 19), 5, {"context_coarser_levels": 3}),
])  # fmt: skip
def test_blocks_give_the_whole_synthesis_and_its_bits(shape, edge, changes):
    # in float64: the same operations on the same values, so equal but for rounding, which
    # in float32 a few layers can amplify to several ulp at a rare voxel
    model = _model(shape, **changes).double()
    latents = [latent.double() for latent in _latents(model)]
    with torch.no_grad():
        whole = model.synthesise(latents)
        whole_bits = torch.stack(model.latent_bits_by_level(latents))
        tiled = torch.full(shape, math.nan, dtype=torch.float64)
        bits = torch.zeros(len(latents), dtype=torch.float64)
        for block in regions.tile(shape, edge):
            plan = regions.plan_block(model, block)
            crops = regions.crop_latents(latents, plan)
            tiled[block.slices] = regions.synthesise_block(model, crops, plan)
            bits += torch.stack(regions.block_bits_by_level(model, crops, plan))
    torch.testing.assert_close(tiled, whole, rtol=0, atol=1e-12)
    torch.testing.assert_close(bits, whole_bits, rtol=1e-12, atol=1e-9)


def test_a_tiling_covers_every_voxel_once_and_owns_every_latent_once():
    model = _model((13, 21, 19))
    owned = [torch.zeros(g, dtype=torch.int64) for g in model.grid_shapes]
    covered = torch.zeros(model.shape, dtype=torch.int64)
    for block in regions.tile(model.shape, 6):
        plan = regions.plan_block(model, block)
        covered[block.slices] += 1
        for level, box in enumerate(plan.owned):
            owned[level][box.slices] += 1
    assert torch.all(covered == 1)
    assert all(torch.all(count == 1) for count in owned)


@pytest.mark.parametrize(("shape", "edge"), [((37, 45), 16), ((13, 21, 19), 7)])
def test_the_blocks_gradients_sum_to_the_whole_images(shape, edge):
    model = _model(shape)
    target = torch.rand(shape)
    lam = 1e-3

    def whole_loss():
        latents = model.scaled_latents()
        mse = torch.mean((model.synthesise(latents) - target) ** 2)
        return mse + lam * model.latent_bits(latents) / target.numel()

    with torch.no_grad():
        for theta in model.latents:
            theta.copy_(torch.randn_like(theta))
    model.zero_grad()
    whole_loss().backward()
    expected = {name: p.grad.clone() for name, p in model.named_parameters()}

    steps = BlockSteps(model, target, edge)
    model.zero_grad()
    grids = {name: torch.zeros_like(p) for name, p in model.named_parameters()}
    for plan in steps.plans:
        crops, scaled = steps.scaled_crops(plan)
        loss = steps.losses(scaled, plan, lam)[0] * plan.voxels / target.numel()
        loss.backward()
        for level, (crop, box) in enumerate(zip(crops, plan.crops, strict=True)):
            grids[f"latents.{level}"][box.slices] += crop.grad
    for name, p in model.named_parameters():
        got = grids[name] if name.startswith("latents.") else p.grad
        torch.testing.assert_close(got, expected[name], rtol=1e-4, atol=1e-7, msg=name)


def test_box_adam_on_the_whole_grid_is_adam():
    torch.manual_seed(1)
    grid = torch.randn(9, 11)
    reference = torch.nn.Parameter(grid.clone())
    adam = torch.optim.Adam([reference], lr=0.01)
    ours = grid.clone()
    box_adam = BoxAdam([ours])
    box_adam.release()  # fresh moments, as after a restart
    box = regions.whole(grid.shape)
    plan = regions.BlockPlan(box, (box,), (box,), (box,), (box,))
    for _ in range(5):
        gradient = torch.randn_like(grid)
        reference.grad = gradient.clone()
        adam.step()
        crop = ours.clone().requires_grad_()
        crop.grad = gradient.clone()
        box_adam.iterations += 1
        box_adam.step([crop], plan, 0.01)
    torch.testing.assert_close(ours, reference.detach())


def _volume(shape=(20, 40, 36)):
    rng = np.random.default_rng(0)
    z, y, x = np.mgrid[: shape[0], : shape[1], : shape[2]]
    values = 1000 * np.sin(x / 5) * np.cos(y / 7) + 30 * z + rng.normal(0, 20, x.shape)
    return values.astype(np.int16)


def test_a_block_trained_volume_codes_and_decodes_block_by_block_as_whole(monkeypatch):
    volume = _volume()
    # the refinement on blocks: test_neural_codec_parts (here 40 tiny blocks make it slow)
    settings = CodecSettings.make(
        iterations=20, log_every=10, warmup_iterations=4, network_refinement_passes=0
    )
    monkeypatch.setattr(codec, "memory_plan", lambda *args: 12)
    monkeypatch.setitem(regions.DECODING_BLOCK_EDGE, 3, 16)
    encoded = codec.encode(volume, None, settings, 1e-3)
    assert encoded.record["training_block_edge"] == 12
    curve = [point["loss"] for point in encoded.record["curve"]]
    assert curve[-1] < curve[0]
    decoded = codec.decode(encoded.data, "block.vnc")
    assert np.array_equal(decoded, encoded.reconstruction)
    # a decoder cutting other blocks (here none: the whole volume) gives the same integers up
    # to the last bit of the normalised values (exactly here)
    monkeypatch.setitem(regions.DECODING_BLOCK_EDGE, 3, 128)
    whole = codec.decode(encoded.data, "whole.vnc")
    assert np.abs(whole.astype(np.int32) - decoded).max() <= 1
    # the bits of every level were estimated block by block like the whole volume's
    estimated = encoded.record["bits"]["estimated"]["latents"]
    assert estimated == pytest.approx(sum(encoded.record["bits"]["estimated"]["latents_by_level"]))


def test_the_encoders_symbols_do_not_depend_on_its_chunks(monkeypatch):
    model = _model((13, 21, 19))
    grids = [latent.numpy().astype(np.int64) for latent in _latents(model)]
    layer = latent_coding.IntegerLayer
    rng = np.random.default_rng(0)
    s = model.settings
    widths = [s.context_size + 1] + [s.arm_width] * s.arm_layers + [2]
    layers = [
        layer(rng.integers(-64, 64, (b, a)), 8, rng.integers(-64, 64, b), 8)
        for a, b in zip(widths[:-1], widths[1:], strict=True)
    ]
    arm = latent_coding.IntegerEntropyModel(layers, s.context_size)
    indices = latent_coding.level_indices(model.grid_shapes, model.context_offsets, 1)
    whole = latent_coding.latent_symbols(grids, indices, arm)
    monkeypatch.setattr(latent_coding, "CHUNK_LATENTS", 37)
    chunked = latent_coding.latent_symbols(grids, indices, arm)
    for whole_level, chunked_level in zip(whole, chunked, strict=True):  # rows, then deltas
        for x, y in zip(whole_level, chunked_level, strict=True):
            assert np.array_equal(x, y)


def test_the_memory_plan_trains_whole_what_fits_and_blocks_what_does_not():
    small = (93, 64, 64)
    assert memory_plan(small, latent_count(small, 7), 2, 4.0) is None
    large = (300, 512, 512)
    edge = memory_plan(large, latent_count(large, 7), 2, 4.0)
    assert edge is not None and edge >= 24
    held = RUNTIME_BYTES + BYTES_PER_LATENT * latent_count(large, 7) + 6 * math.prod(large)
    assert held + STEP_BYTES_PER_VOXEL[3] * (edge + REGION_MARGIN) ** 3 <= 4e9
    with pytest.raises(ValueError, match=r"needs at least .* GB .*memory_gb is 1"):
        memory_plan(large, latent_count(large, 7), 2, 1.0)


def test_a_header_claiming_more_than_the_memory_is_refused_before_anything_is_built(
    monkeypatch,
):
    import dataclasses

    from volinr.errors import InputError
    from volinr.neural_codec.bitstream import frame, pack_header, unframe, unpack_header
    from volinr.neural_codec.codec import coded_tensor_count

    image = (np.arange(24 * 20).reshape(24, 20) % 7).astype(np.int16)
    settings = CodecSettings.make(iterations=4, log_every=2, warmup_candidates=1)
    data = codec.encode(image, None, settings, 1e-3).data
    header_bytes, payload = unframe(data, "x")
    header = unpack_header(header_bytes, "x", coded_tensor_count)
    claimed = dataclasses.replace(header, shape=(512, 512, 512))
    crafted = frame(pack_header(claimed), payload)
    estimate = sum(codec.decoding_bytes((512, 512, 512), settings.levels, "int16").values())
    monkeypatch.setenv("VOLINR_MEMORY_LIMIT_BYTES", str(estimate // 2))
    with pytest.raises(InputError, match=r"crafted\.vnc: decoding a 512x512x512 int16 image"):
        codec.decode(crafted, "crafted.vnc")
