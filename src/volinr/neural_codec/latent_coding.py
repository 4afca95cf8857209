"""Range coding of the latent grids under the entropy model, in integer arithmetic.

Both ends run the same fixed-point MLP on the same integers, so they derive the same table
rows bit for bit, whatever the platform, thread count or batch split:

- activations carry ``ACTIVATION_BITS`` = 16 fractional bits in int64; a context value v
  enters as v << 16 (clamped to +-2^10);
- a weight tensor quantised to steps of 2^-e is used as its integers q (e fractional bits): a
  layer computes sum(q x) + bias aligned to 16 + e fractional bits, rounds back to 16
  (add 2^(e-1), arithmetic shift right by e), adds the residual, applies ReLU;
- the coder refuses weights above 2^8 and steps finer than 2^-16, and bounds every
  accumulator from the actual weights: if some bound could reach 2^62, every activation is
  clamped to +-2^28 (a value of 4096), which keeps every sum below 2^58, so int64 never
  overflows either way;
- the output (mu, log b), mu clamped to +-1023 like the latents, becomes a table row (mu's
  fraction to 1/16, log b to 1/16 nat) and round(mu) by shifts, see ``laplace``.

The float model that training uses differs from this by rounding of the order 2^-16 in mu
and log b, which only moves the rate by far less than the table's own quantisation.

Decoding order: grids coarsest first (a grid's context may read its coarser neighbour);
within a grid the wavefront steps of ``geometry.LevelSchedule``, each decoded in one call.
"""

from __future__ import annotations

from dataclasses import dataclass

import constriction
import numpy as np

from volinr.neural_codec.geometry import LevelSchedule
from volinr.neural_codec.laplace import (
    FRACTION_BITS,
    FRACTION_STEPS,
    LOG_SCALE_BITS,
    LOG_SCALE_MIN,
    LOG_SCALE_STEPS,
    MAX_LATENT,
    MAX_LATENT_HALF_WIDTH,
    latent_table,
)

ACTIVATION_BITS = 16
MAX_CONTEXT_VALUE = MAX_LATENT
MAX_ACTIVATION = 1 << 28
MAX_ARM_EXPONENT = 16  # steps down to 2^-16
MAX_ARM_WEIGHT = 1 << 8
ENCODE_CHUNK = 4096


class LatentRangeError(ValueError):
    """A latent outside what the integer entropy model or the table can represent."""


@dataclass(frozen=True)
class IntegerLayer:
    weight: np.ndarray  # (out, in) int64, value q * 2^-weight_exponent
    weight_exponent: int
    bias: np.ndarray  # (out,) int64, value q * 2^-bias_exponent
    bias_exponent: int

    def __post_init__(self) -> None:
        for exponent in (self.weight_exponent, self.bias_exponent):
            if not 0 <= exponent <= MAX_ARM_EXPONENT:
                raise LatentRangeError(
                    f"entropy model step 2^-{exponent} is outside 2^0 .. 2^-{MAX_ARM_EXPONENT}"
                )
        limit_w = MAX_ARM_WEIGHT << self.weight_exponent
        limit_b = MAX_ARM_WEIGHT << self.bias_exponent
        if (
            np.abs(self.weight).max(initial=0) > limit_w
            or np.abs(self.bias).max(initial=0) > limit_b
        ):
            raise LatentRangeError(f"entropy model weights exceed +-{MAX_ARM_WEIGHT}")
        shift = ACTIVATION_BITS + self.weight_exponent - self.bias_exponent
        aligned = self.bias << shift if shift >= 0 else _round_shift(self.bias, -shift)
        e = self.weight_exponent
        # Folding the rounding constant of the final shift into the bias saves a pass.
        object.__setattr__(self, "_bias", aligned + ((np.int64(1) << (e - 1)) if e else 0))
        object.__setattr__(self, "_weight_t", np.ascontiguousarray(self.weight.T))

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """x (n, in) with 16 fractional bits -> (n, out) with 16 fractional bits."""
        acc = x @ self._weight_t
        acc += self._bias
        if self.weight_exponent:
            acc >>= self.weight_exponent
        return acc

    def output_bound(self, input_bound: int) -> tuple[int, int]:
        """(largest |accumulator|, largest |output|) for inputs within +-input_bound."""
        row_sums = np.abs(self.weight).sum(axis=1).tolist() if self.weight.size else [0]
        bias = np.abs(self._bias).max(initial=0)
        accumulator = max(int(r) for r in row_sums) * input_bound + int(bias)
        return accumulator, (accumulator >> self.weight_exponent) + 1

    def first_columns(self, count: int) -> IntegerLayer:
        return IntegerLayer(
            self.weight[:, :count], self.weight_exponent, self.bias, self.bias_exponent
        )


def _round_shift(values: np.ndarray, bits: int) -> np.ndarray:
    return (values + (np.int64(1) << (bits - 1))) >> bits


class IntegerEntropyModel:
    """The entropy model's MLP on integers: context rows (n, inputs) -> table rows, round(mu).

    At construction the largest value any accumulator can reach is bounded from the actual
    integer weights (inputs within +-2^10): when every bound is below 2^62, int64 cannot
    overflow and the layers run unclamped; otherwise every activation is clamped to
    +-2^28. Encoder and decoder decide this from the same integers.
    """

    def __init__(self, layers: list[IntegerLayer], context_size: int):
        self.layers = layers
        self.context_size = context_size
        self.without_coarser = layers[0].first_columns(context_size)
        bound = MAX_CONTEXT_VALUE << ACTIVATION_BITS
        largest = 0
        for i, layer in enumerate(layers):
            accumulator, out = layer.output_bound(bound)
            largest = max(largest, accumulator)
            bound = out + (bound if 0 < i < len(layers) - 1 else 0)  # residual layers add x
        self.clamped = largest >= 1 << 62

    def __call__(self, context: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Context rows (n, context_size [+ 1 coarser value]) -> (table rows, round(mu))."""
        x = np.clip(context, -MAX_CONTEXT_VALUE, MAX_CONTEXT_VALUE).astype(np.int64)
        x <<= ACTIVATION_BITS
        # The coarsest grid has no coarser neighbour: its rows lack that column.
        first = (
            self.layers[0] if x.shape[1] == self.layers[0].weight.shape[1] else self.without_coarser
        )
        h = self._bounded(first(x))
        last = len(self.layers) - 1
        for i, layer in enumerate(self.layers[1:], start=1):
            inner = np.maximum(h, 0)
            h = layer(inner)
            if i < last:
                h += inner
            h = self._bounded(h)
        bound = MAX_LATENT << ACTIVATION_BITS
        return table_rows(np.clip(h[:, 0], -bound, bound), h[:, 1])

    def _bounded(self, h: np.ndarray) -> np.ndarray:
        if self.clamped:
            np.clip(h, -MAX_ACTIVATION, MAX_ACTIVATION, out=h)
        return h


def table_rows(mu: np.ndarray, log_scale: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Fixed-point (mu, log b) -> (row of ``laplace.latent_table``, round(mu))."""
    one = np.int64(1) << ACTIVATION_BITS
    rounded = (mu + (one >> 1)) >> ACTIVATION_BITS
    fraction = mu - (rounded << ACTIVATION_BITS)  # [-1/2, 1/2)
    fraction_shift = ACTIVATION_BITS - FRACTION_BITS
    fraction_index = (fraction + (np.int64(1) << (fraction_shift - 1))) >> fraction_shift
    scale_shift = ACTIVATION_BITS - LOG_SCALE_BITS
    scale_index = (log_scale - int(LOG_SCALE_MIN) * one) >> scale_shift
    scale_index = np.clip(scale_index, 0, LOG_SCALE_STEPS - 1)
    rows = (fraction_index + FRACTION_STEPS // 2) * LOG_SCALE_STEPS + scale_index
    return rows, rounded


@dataclass(frozen=True)
class LevelIndex:
    """Where each latent of a grid, in decoding order, reads its context."""

    schedule: LevelSchedule
    coarser_shape: tuple[int, ...] | None
    use_coarser: bool

    def padded_positions(self) -> np.ndarray:
        return self.schedule.padded_index(self.schedule.order)

    def neighbours(self, padded_positions: np.ndarray) -> np.ndarray:
        return padded_positions[:, None] + self.schedule.neighbour_steps[None, :]

    def coarser_positions(self) -> np.ndarray | None:
        if not self.use_coarser or self.coarser_shape is None:
            return None
        return self.schedule.coarser_index(self.schedule.order, self.coarser_shape)


def level_indices(
    grid_shapes: list[tuple[int, ...]], offsets: np.ndarray, use_coarser: bool
) -> list[LevelIndex]:
    return [
        LevelIndex(
            LevelSchedule(shape, offsets),
            grid_shapes[i + 1] if i + 1 < len(grid_shapes) else None,
            use_coarser,
        )
        for i, shape in enumerate(grid_shapes)
    ]


def _context(
    index: LevelIndex, padded: np.ndarray, coarser: np.ndarray | None, take: slice
) -> np.ndarray:
    positions = index.padded_positions()[take]
    context = padded[index.neighbours(positions)]
    coarser_positions = index.coarser_positions()
    if coarser_positions is not None and coarser is not None:
        context = np.concatenate([context, coarser[coarser_positions[take], None]], axis=1)
    return context


def latent_symbols(
    grids: list[np.ndarray], indices: list[LevelIndex], model: IntegerEntropyModel
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Per grid, in decoding order: table rows and d = value - round(mu)."""
    rows_per_level, deltas_per_level = [], []
    for level, (grid, index) in enumerate(zip(grids, indices, strict=True)):
        schedule = index.schedule
        padded = np.zeros(schedule.padded_shape, dtype=np.int64)
        padded[schedule.interior] = grid
        coarser = grids[level + 1].reshape(-1) if level + 1 < len(grids) else None
        context = _context(index, padded.reshape(-1), coarser, slice(None))
        rows, rounded = model(context)
        rows_per_level.append(rows)
        deltas_per_level.append(grid.reshape(-1)[schedule.order] - rounded)
    return rows_per_level, deltas_per_level


def half_width(deltas: list[np.ndarray]) -> int:
    width = max([1] + [int(np.abs(d).max(initial=0)) for d in deltas])
    if width > MAX_LATENT_HALF_WIDTH:
        raise LatentRangeError(
            f"a latent lies {width} from its predicted mean (limit {MAX_LATENT_HALF_WIDTH})"
        )
    return width


def encode_latents(
    encoder: constriction.stream.queue.RangeEncoder,
    rows: list[np.ndarray],
    deltas: list[np.ndarray],
    width: int,
) -> None:
    """Append every grid's symbols, coarsest grid first, in decoding order."""
    table = latent_table(width)
    family = constriction.stream.model.Categorical(perfect=False)
    for level in range(len(rows) - 1, -1, -1):
        symbols = (deltas[level] + width).astype(np.int32)
        # in chunks: a whole grid's rows of the table would take (latents x 2A+1) floats
        for start in range(0, len(symbols), ENCODE_CHUNK):
            chunk = slice(start, start + ENCODE_CHUNK)
            encoder.encode(symbols[chunk], family, table[rows[level][chunk]])


def decode_latents(
    decoder: constriction.stream.queue.RangeDecoder,
    grid_shapes: list[tuple[int, ...]],
    indices: list[LevelIndex],
    model: IntegerEntropyModel,
    width: int,
) -> list[np.ndarray]:
    """The integer grids, decoded wavefront step by wavefront step."""
    table = latent_table(width)
    family = constriction.stream.model.Categorical(perfect=False)
    grids: list[np.ndarray | None] = [None] * len(grid_shapes)
    for level in range(len(grid_shapes) - 1, -1, -1):
        index = indices[level]
        schedule = index.schedule
        padded_size = int(np.prod(schedule.padded_shape))
        positions = index.padded_positions()
        # One array holds the padded grid being decoded and, after it, the coarser grid, so
        # that one gather per step reads a latent's whole context.
        gather = index.neighbours(positions)
        coarser_positions = index.coarser_positions()
        if coarser_positions is not None:
            values = np.concatenate([np.zeros(padded_size, np.int64), grids[level + 1].ravel()])
            gather = np.concatenate([gather, padded_size + coarser_positions[:, None]], axis=1)
        else:
            values = np.zeros(padded_size, np.int64)
        starts = schedule.starts.tolist()
        for start, stop in zip(starts[:-1], starts[1:], strict=True):
            rows, rounded = model(values[gather[start:stop]])
            symbols = decoder.decode(family, table[rows])
            values[positions[start:stop]] = symbols - width + rounded
        grid = values[:padded_size].reshape(schedule.padded_shape)[schedule.interior]
        grids[level] = grid.copy()
    return grids
