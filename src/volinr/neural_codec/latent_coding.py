"""Range coding of the latent grids under the entropy model, in integer arithmetic.

Both ends run the same fixed-point MLP on the same integers, so they derive the same table
rows bit for bit, whatever the platform, thread count or batch split:

- activations carry ``ACTIVATION_BITS`` = 16 fractional bits in int64; a context value v
  (a latent, within +-1023: the encoder checks it, the decoder clips what it decodes)
  enters as v << 16;
- a weight tensor quantised to steps of 2^-e is used as its integers q (e fractional bits): a
  layer computes sum(q x) + bias aligned to 16 + e fractional bits, rounds back to 16
  (add 2^(e-1), arithmetic shift right by e), adds the residual, applies ReLU;
- the coder refuses weights above 2^8 and steps finer than 2^-16, and bounds every
  accumulator from the actual weights: below 2^53 the same integers are computed in float64
  (every operation exact, and BLAS is faster than NumPy's integer product); below 2^62 in
  int64; otherwise in int64 with every activation clamped to +-2^28 (a value of 4096), which
  keeps every sum below 2^58, so nothing ever overflows or rounds;
- the output (mu, log b), mu clamped to +-1023 like the latents, becomes a table row (mu's
  fraction to 1/16, log b to 1/16 nat) and round(mu) by shifts, see ``laplace``.

Nothing on the path from decoded integers to table rows is float arithmetic that could round
differently elsewhere; the table itself is integer (``laplace``), and constriction only adds,
multiplies and divides its exactly representable entries.

The float model that training uses differs from this by rounding of the order 2^-16 in mu
and log b, which only moves the rate by far less than the table's own quantisation.

Decoding order: grids coarsest first (a grid's context may read its coarser neighbour);
within a grid the wavefront steps of ``geometry.LevelSchedule``. Each step's symbols are
coded under a short table (d within +-8, plus an escape), then the escaped ones under the
table's tail (``laplace.latent_tables``).
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
    SHORT_SYMBOLS,
    latent_tables,
    unzigzag,
    zigzag,
)

ACTIVATION_BITS = 16
MAX_MEAN = MAX_LATENT << ACTIVATION_BITS
MAX_ACTIVATION = 1 << 28
MAX_ARM_EXPONENT = 16  # steps down to 2^-16
MAX_ARM_WEIGHT = 1 << 8


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
        object.__setattr__(self, "_weight_t_float", self._weight_t.astype(np.float64))
        object.__setattr__(self, "_bias_float", self._bias.astype(np.float64))

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """x (n, in) with 16 fractional bits -> (n, out) with 16 fractional bits: sum(q x) +
        bias, then an arithmetic shift right by e, i.e. floor(./2^e)."""
        acc = x @ self._weight_t
        acc += self._bias
        if self.weight_exponent:
            acc >>= self.weight_exponent
        return acc

    def call_exact_float(self, x: np.ndarray) -> np.ndarray:
        """The same integers held in float64, for when every partial sum stays below 2^53:
        then every product, sum (in any order), power-of-two scaling and floor is exact, and
        BLAS does the product 3x faster than NumPy's integer loop."""
        acc = x @ self._weight_t_float
        acc += self._bias_float
        if self.weight_exponent:
            acc *= 2.0**-self.weight_exponent
            np.floor(acc, out=acc)
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
    integer weights (inputs within +-2^10): below 2^53 (the usual case) the integers are
    computed exactly in float64 (``IntegerLayer.call_exact_float``); below 2^62 in int64,
    unclamped; otherwise in int64 with every activation clamped to +-2^28. The first two
    give the same integers by construction; encoder and decoder choose from the same weights.
    """

    def __init__(
        self, layers: list[IntegerLayer], context_size: int, stabiliser: IntegerLayer | None = None
    ):
        """``stabiliser``: a linear layer from the inputs to the outputs, added to the MLP's."""
        self.layers = layers
        self.context_size = context_size
        # Grids near the coarsest read fewer coarser grids: their rows lack those columns.
        inputs = range(context_size, layers[0].weight.shape[1] + 1)
        self.first_layers = {n: layers[0].first_columns(n) for n in inputs}
        self.stabilisers = None
        if stabiliser is not None:
            self.stabilisers = {n: stabiliser.first_columns(n) for n in inputs}
        bound = MAX_LATENT << ACTIVATION_BITS
        largest = 0
        for i, layer in enumerate(layers):
            accumulator, out = layer.output_bound(bound)
            largest = max(largest, accumulator)
            bound = out + (bound if 0 < i < len(layers) - 1 else 0)  # residual layers add x
        if stabiliser is not None:  # its output adds to the last layer's
            accumulator, out = stabiliser.output_bound(MAX_LATENT << ACTIVATION_BITS)
            largest = max(largest, accumulator, bound + out)
        self.clamped = largest >= 1 << 62
        self.exact_in_float = largest < 1 << 53

    def __call__(self, context: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Context rows (n, context_size [+ coarser values]) -> (table rows, round(mu))."""
        # callers keep |context| <= MAX_LATENT
        if self.exact_in_float:
            x = context.astype(np.float64) * float(1 << ACTIVATION_BITS)
        else:
            x = context << ACTIVATION_BITS
        h = self._layer(self.first_layers[x.shape[1]], x)
        last = len(self.layers) - 1
        for i, layer in enumerate(self.layers[1:], start=1):
            inner = np.maximum(h, 0)
            h = self._layer(layer, inner)
            if i < last:
                h += inner
                h = self._bounded(h)
        if self.stabilisers is not None:
            h = h + self._layer(self.stabilisers[x.shape[1]], x)
        if self.exact_in_float:
            h = h.astype(np.int64)
        mu = h[:, 0]
        np.maximum(mu, -MAX_MEAN, out=mu)
        np.minimum(mu, MAX_MEAN, out=mu)
        return table_rows(mu, h[:, 1])

    def _layer(self, layer: IntegerLayer, x: np.ndarray) -> np.ndarray:
        if self.exact_in_float:
            return layer.call_exact_float(x)
        return self._bounded(layer(x))

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
    scale_index = np.minimum(np.maximum(scale_index, 0), LOG_SCALE_STEPS - 1)
    rows = (fraction_index + FRACTION_STEPS // 2) * LOG_SCALE_STEPS + scale_index
    return rows, rounded


@dataclass(frozen=True)
class LevelIndex:
    """Where each latent of a grid, in decoding order, reads its context."""

    schedule: LevelSchedule
    coarser_shapes: tuple[tuple[int, ...], ...]  # the coarser grids it reads, next one first

    def padded_positions(self, take: slice) -> np.ndarray:
        """Padded-grid indices of the latents ``order[take]``."""
        return self.schedule.padded_index(self.schedule.order[take])

    def neighbours(self, padded_positions: np.ndarray) -> np.ndarray:
        return padded_positions[:, None] + self.schedule.neighbour_steps[None, :]

    def coarser_positions(self, take: slice) -> list[np.ndarray]:
        """Per coarser grid read, the flat index of each latent's co-located value there."""
        flat = self.schedule.order[take]
        return [
            self.schedule.coarser_index(flat, shape, j)
            for j, shape in enumerate(self.coarser_shapes, start=1)
        ]


def level_indices(
    grid_shapes: list[tuple[int, ...]], offsets: np.ndarray, coarser_levels: int
) -> list[LevelIndex]:
    """Each grid's index; ``coarser_levels``: how many coarser grids a grid reads (0: none)."""
    return [
        LevelIndex(
            LevelSchedule(shape, offsets), tuple(grid_shapes[i + 1 : i + 1 + coarser_levels])
        )
        for i, shape in enumerate(grid_shapes)
    ]


# Latents whose contexts the encoder gathers at once: bounds its memory on large volumes.
# (2^19: about 0.4 GB of context rows and activations with six coarser grids read)
CHUNK_LATENTS = 1 << 19


def _context(index: LevelIndex, padded: np.ndarray, coarser: list[np.ndarray], take: slice):
    context = padded[index.neighbours(index.padded_positions(take))]
    positions = index.coarser_positions(take)
    columns = [grid[p] for grid, p in zip(coarser, positions, strict=True)]
    if columns:
        context = np.concatenate([context, np.stack(columns, axis=1)], axis=1)
    return context


def latent_symbols(
    grids: list[np.ndarray], indices: list[LevelIndex], model: IntegerEntropyModel
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Per grid, in decoding order: table rows and d = value - round(mu) (int32 both)."""
    rows_per_level, deltas_per_level = [], []
    for grid in grids:
        if np.abs(grid).max(initial=0) > MAX_LATENT:
            raise LatentRangeError(f"a latent outside +-{MAX_LATENT}")
    for level, (grid, index) in enumerate(zip(grids, indices, strict=True)):
        schedule = index.schedule
        padded = np.zeros(schedule.padded_shape, dtype=np.int64)
        padded[schedule.interior] = grid
        read = len(index.coarser_shapes)
        coarser = [grid.reshape(-1) for grid in grids[level + 1 : level + 1 + read]]
        values = grid.reshape(-1)
        rows = np.empty(values.size, np.int32)
        deltas = np.empty(values.size, np.int32)
        for start in range(0, values.size, CHUNK_LATENTS):
            take = slice(start, start + CHUNK_LATENTS)
            chunk_rows, rounded = model(_context(index, padded.reshape(-1), coarser, take))
            rows[take] = chunk_rows
            # |value - round(mu)| <= 2 MAX_LATENT: int32 holds it
            deltas[take] = values[schedule.order[take]] - rounded
        del padded
        rows_per_level.append(rows)
        deltas_per_level.append(deltas)
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
    indices: list[LevelIndex],
) -> None:
    """Append every grid's symbols, coarsest grid first, wavefront step by step: each step's
    short symbols, then the escaped ones' tails (``laplace.latent_tables``)."""
    coder = _SymbolCoder(width)
    for level in range(len(rows) - 1, -1, -1):
        starts = indices[level].schedule.starts.tolist()
        for start, stop in zip(starts[:-1], starts[1:], strict=True):
            symbols = zigzag(deltas[level][start:stop])
            coder.encode(encoder, symbols, rows[level][start:stop])


class _SymbolCoder:
    """One wavefront step's zig-zag symbols under their table rows, in two stages."""

    def __init__(self, width: int):
        self.short, self.tail = latent_tables(width)
        self.escape = SHORT_SYMBOLS
        self.family = constriction.stream.model.Categorical(perfect=False)

    def encode(self, encoder, symbols: np.ndarray, rows: np.ndarray) -> None:
        if self.tail is None:
            encoder.encode(symbols.astype(np.int32), self.family, self.short[rows])
            return
        encoder.encode(
            np.minimum(symbols, self.escape).astype(np.int32), self.family, self.short[rows]
        )
        escaped = symbols >= self.escape
        if escaped.any():
            tails = (symbols[escaped] - self.escape).astype(np.int32)
            encoder.encode(tails, self.family, self.tail[rows[escaped]])

    def decode(self, decoder, rows: np.ndarray) -> np.ndarray:
        symbols = decoder.decode(self.family, self.short[rows]).astype(np.int64)
        if self.tail is not None:
            escaped = symbols == self.escape
            if escaped.any():
                tails = decoder.decode(self.family, self.tail[rows[escaped]])
                symbols[escaped] += tails
        return symbols


def decode_latents(
    decoder: constriction.stream.queue.RangeDecoder,
    grid_shapes: list[tuple[int, ...]],
    indices: list[LevelIndex],
    model: IntegerEntropyModel,
    width: int,
) -> list[np.ndarray]:
    """The integer grids, decoded wavefront step by wavefront step."""
    coder = _SymbolCoder(width)
    grids: list[np.ndarray | None] = [None] * len(grid_shapes)
    for level in range(len(grid_shapes) - 1, -1, -1):
        index = indices[level]
        schedule = index.schedule
        padded_size = int(np.prod(schedule.padded_shape))
        # One array holds the padded grid being decoded and, after it, the coarser grids it
        # reads, so that one gather per step reads a latent's whole context.
        read = len(index.coarser_shapes)
        parts = [np.zeros(padded_size, np.int64)]
        parts += [grid.ravel().astype(np.int64) for grid in grids[level + 1 : level + 1 + read]]
        offsets = np.cumsum([0] + [part.size for part in parts])[1:-1]
        values = np.concatenate(parts) if read else parts[0]
        del parts
        starts = schedule.starts.tolist()
        for start, stop in zip(starts[:-1], starts[1:], strict=True):
            take = slice(start, stop)
            positions = index.padded_positions(take)
            gather = index.neighbours(positions)
            if read:
                extra = [o + p for o, p in zip(offsets, index.coarser_positions(take), strict=True)]
                gather = np.concatenate([gather, np.stack(extra, axis=1)], axis=1)
            rows, rounded = model(values[gather])
            decoded = unzigzag(coder.decode(decoder, rows)) + rounded
            # A file's latents lie within +-MAX_LATENT (the encoder checks); clipping here
            # keeps a crafted file's from leaving the range the overflow bounds assume.
            np.minimum(np.maximum(decoded, -MAX_LATENT, out=decoded), MAX_LATENT, out=decoded)
            values[positions] = decoded
        grid = values[:padded_size].reshape(schedule.padded_shape)[schedule.interior]
        grids[level] = grid.astype(np.int32)  # within +-MAX_LATENT
        del values
    return grids
