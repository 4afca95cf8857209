"""The Laplace probability model: a float rate for training, integer tables for coding.

Training sees -log2 P(y) with P the Laplace(mu, b) mass of the unit bin around y (float,
differentiable). The range coder sees a *table*: mu is split into round(mu) and a fraction
quantised to 1/16, log b is quantised to 1/16 nat, and each (fraction, scale) cell holds the
bin masses of the symbols d = y - round(mu) in [-A, A] as integers (units of 2^-32).

The table is integer from end to end, so encoder and decoder agree on every platform:
  - the only transcendental values are exp(-k/16 * e^-s) for the grid's k and s, computed
    with ``decimal`` (libmpdec, software arithmetic; ``Decimal.exp`` is correctly rounded by
    specification) and rounded to 31 fractional bits;
  - the tails are powers of those, by int64 multiply-and-shift;
  - constriction is given the integers as float64 values (exact below 2^53); its categorical
    model only adds, multiplies and divides them (IEEE-exact operations, no libm), so it
    quantises them the same way everywhere. Symbols the table gives no mass still get
    constriction's minimum probability (2^-24), so any symbol can be coded.
"""

from __future__ import annotations

import math
from decimal import Decimal, localcontext
from functools import lru_cache

import numpy as np
import torch

FRACTION_BITS = 4  # mu's fractional part in 1/16 steps
FRACTION_STEPS = 1 << FRACTION_BITS
LOG_SCALE_BITS = 4  # log b in 1/16 nat
LOG_SCALE_MIN = -5.0  # b from e^-5 = 0.0067 (a near-certain symbol) ...
LOG_SCALE_MAX = 5.0  # ... to e^5 = 148
LOG_SCALE_STEPS = int((LOG_SCALE_MAX - LOG_SCALE_MIN) * (1 << LOG_SCALE_BITS))  # 160
# Parameters of the networks are coded under Laplace(0, b) with log b on a coarser, wider
# grid: their integers reach thousands where latents stay near zero.
PARAMETER_LOG_SCALE_MIN = -2.0
PARAMETER_LOG_SCALE_STEP = 0.25
PARAMETER_LOG_SCALE_STEPS = 64
TABLE_BITS = 31  # fixed-point precision of the tail masses
MAX_HALF_WIDTH = 1 << 14  # bound on A, the table's symbol range [-A, A]
# Latents and the entropy model's means lie within +-MAX_LATENT (training clamps both, the
# integer model clamps the mean), so a latent's symbol d = y - round(mu) is within
# +-MAX_LATENT_HALF_WIDTH: this bounds the latent table a file can ask for (17 x 160 rows of
# at most 4,093 symbols).
MAX_LATENT = (1 << 10) - 1
MAX_LATENT_HALF_WIDTH = 2 * MAX_LATENT
_DECIMAL_PRECISION = 34
MAX_SYMBOL_BITS = 24.0  # constriction's smallest probability is 2^-24


# --- float model for training --------------------------------------------------------------


def laplace_bits(y: torch.Tensor, mu: torch.Tensor, log_scale: torch.Tensor) -> torch.Tensor:
    """-log2 of the Laplace(mu, b = e^log_scale) mass of [y - 1/2, y + 1/2], elementwise.

    mu is clamped to +-MAX_LATENT and log_scale to the table's range first, as the coder does,
    and the bits to
    ``MAX_SYMBOL_BITS``: the coder gives every symbol at least 2^-24 of its mass, so no latent
    costs more (an outlier's cost, and its gradient, stop there). Written with |y - mu|
    so that no branch overflows: outside the central bin the mass is
    0.5 e^(-(|z| - 1/2)/b) (1 - e^(-1/b)); inside it is 1 - e^(-1/(2b)) cosh(z/b).
    """
    inverse_scale = torch.exp(-log_scale.clamp(LOG_SCALE_MIN, LOG_SCALE_MAX))
    distance = (y - mu.clamp(-MAX_LATENT, MAX_LATENT)).abs()
    outer = distance.clamp_min(0.5)
    outer_bits = (
        1.0
        + (outer - 0.5) * inverse_scale * (1.0 / math.log(2.0))
        - torch.log2(-torch.expm1(-inverse_scale))
    )
    inner = distance.clamp_max(0.5)
    inner_mass = 1.0 - 0.5 * (
        torch.exp((inner - 0.5) * inverse_scale) + torch.exp((-inner - 0.5) * inverse_scale)
    )
    inner_bits = -torch.log2(inner_mass.clamp_min(2.0**-30))
    bits = torch.where(distance >= 0.5, outer_bits, inner_bits)
    return bits.clamp_max(MAX_SYMBOL_BITS)


# --- integer tables for coding -------------------------------------------------------------


def latent_log_scale(index: int) -> Decimal:
    """The log b of table column ``index`` (the centre of its 1/16-nat bin)."""
    return Decimal(LOG_SCALE_MIN) + (Decimal(index) + Decimal("0.5")) / (1 << LOG_SCALE_BITS)


def parameter_log_scale(index: int) -> Decimal:
    return Decimal(PARAMETER_LOG_SCALE_MIN) + Decimal(index) * Decimal(PARAMETER_LOG_SCALE_STEP)


@lru_cache(maxsize=512)
def _tail_bases(log_scale: Decimal) -> tuple[int, ...]:
    """round(2^31 exp(-k/16 / b)) for k = 0..16, b = e^log_scale."""
    with localcontext() as context:
        context.prec = _DECIMAL_PRECISION
        inverse_scale = (-log_scale).exp()
        one = Decimal(1 << TABLE_BITS)
        return tuple(
            int((one * (-(Decimal(k) / FRACTION_STEPS) * inverse_scale).exp()).to_integral_value())
            for k in range(FRACTION_STEPS + 1)
        )


def integer_pmf(
    log_scales: tuple[Decimal, ...], half_width: int, fractions: np.ndarray | None = None
) -> np.ndarray:
    """Bin masses (units of 2^-32), shape (fractions, scales, 2A + 1).

    Row f of the first axis is mu's fraction (f - 8)/16 in [-1/2, 1/2] (``fractions`` picks
    some of the 17, default all); symbol j stands for
    d = j - A. Mass of d >= 1: U(d-1) - U(d), with U(k) = 2^31 e^-((k + 1/2 - frac)/b) the
    right tail beyond d + 1/2 (in units of 2^-32, halved); mirrored for d <= -1; d = 0 takes
    the rest.
    """
    if not 1 <= half_width <= MAX_HALF_WIDTH:
        raise ValueError(f"symbol range +-{half_width} outside [1, {MAX_HALF_WIDTH}]")
    bases = np.array([_tail_bases(s) for s in log_scales], dtype=np.int64)  # (S, 17)
    half = FRACTION_STEPS // 2
    fraction_index = np.arange(-half, half + 1) if fractions is None else fractions - half
    # U(0) = e^-((1/2 - frac)/b) = base[8 - i], V(0) = e^-((1/2 + frac)/b) = base[8 + i]
    right = bases[:, half - fraction_index].T  # (17, S)
    left = bases[:, half + fraction_index].T
    powers = _integer_powers(bases[:, FRACTION_STEPS], half_width)  # e^(-k/b), (S, A + 1)
    rounding = np.int64(1 << (TABLE_BITS - 1))
    right_stack = (right[..., None] * powers[None] + rounding) >> TABLE_BITS  # (17, S, A + 1)
    left_stack = (left[..., None] * powers[None] + rounding) >> TABLE_BITS
    # Rounding along different square-and-multiply paths may leave a tail 1 above the one
    # before it; a running minimum makes every mass non-negative.
    right_stack = np.minimum.accumulate(right_stack, axis=-1)
    left_stack = np.minimum.accumulate(left_stack, axis=-1)
    centre = (np.int64(1) << 32) - right_stack[..., :1] - left_stack[..., :1]
    positive = right_stack[..., :-1] - right_stack[..., 1:]
    negative = (left_stack[..., :-1] - left_stack[..., 1:])[..., ::-1]
    return np.concatenate([negative, centre, positive], axis=-1)


def _integer_powers(ratios: np.ndarray, count: int) -> np.ndarray:
    """round-ish(2^31 (ratio / 2^31)^k) for k = 0..count, shape (len(ratios), count + 1): the
    binary digits of k, lowest first, each multiplying in ratio^(2^j) with a rounding shift."""
    k = np.arange(count + 1, dtype=np.int64)
    rounding = np.int64(1 << (TABLE_BITS - 1))
    result = np.full((len(ratios), count + 1), np.int64(1) << TABLE_BITS)
    square = ratios.astype(np.int64)[:, None]
    for bit in range(max(count, 1).bit_length()):
        use = ((k >> bit) & 1).astype(bool)
        result[:, use] = (result[:, use] * square + rounding) >> TABLE_BITS
        square = (square * square + rounding) >> TABLE_BITS
    return result


@lru_cache(maxsize=8)
def latent_table(half_width: int) -> np.ndarray:
    """float64 (17 * 160, 2A + 1): row = fraction_index * 160 + scale_index, exact integers;
    columns in zig-zag order d = 0, -1, 1, -2, 2, ... (``zigzag``).

    The order is for speed: constriction's lazy categorical model finds a symbol by summing
    the masses before it, so with the likeliest symbols first most latents cost a few
    additions instead of 2A + 1.
    """
    scales = tuple(latent_log_scale(i) for i in range(LOG_SCALE_STEPS))
    table = integer_pmf(scales, half_width).reshape(-1, 2 * half_width + 1)
    d = unzigzag(np.arange(2 * half_width + 1))
    table = np.ascontiguousarray(table[:, d + half_width]).astype(np.float64)
    table.flags.writeable = False
    return table


SHORT_SYMBOLS = 17  # d in [-8, 8] coded directly; farther symbols through an escape


@lru_cache(maxsize=8)
def latent_tables(half_width: int) -> tuple[np.ndarray, np.ndarray | None]:
    """(short, tail): the latent table split in two, for speed.

    constriction's categorical model costs a pass over the row per symbol, and a row has
    2A + 1 entries (A reaches hundreds at high rates). ``short`` holds the first
    ``SHORT_SYMBOLS`` zig-zag columns and, when A needs more, one escape column with the mass
    of all the others (an exact integer sum); an escaped symbol is then coded again under
    ``tail``, those other columns (each + 1, so that no row is all zero). Both stages use the
    same integer masses, so the split changes the bits only by constriction's rounding.
    ``tail`` is None when every symbol fits ``short``.
    """
    full = latent_table(half_width)
    if full.shape[1] <= SHORT_SYMBOLS:
        return full, None
    head, rest = full[:, :SHORT_SYMBOLS], full[:, SHORT_SYMBOLS:]
    short = np.ascontiguousarray(np.concatenate([head, rest.sum(axis=1, keepdims=True)], 1))
    tail = np.ascontiguousarray(rest + 1.0)
    short.flags.writeable = tail.flags.writeable = False
    return short, tail


def zigzag(d: np.ndarray) -> np.ndarray:
    """Column of symbol d (int64) in ``latent_table``: 0 -> 0, -1 -> 1, 1 -> 2, -2 -> 3, ..."""
    d = np.asarray(d, dtype=np.int64)
    return (d << 1) ^ (d >> 63)


def unzigzag(column: np.ndarray) -> np.ndarray:
    column = np.asarray(column, dtype=np.int64)
    return (column >> 1) ^ -(column & 1)


@lru_cache(maxsize=256)
def parameter_pmf(scale_index: int, half_width: int) -> np.ndarray:
    """float64 (2A + 1,) masses of Laplace(0, b) for a parameter tensor's integers."""
    zero_fraction = np.array([FRACTION_STEPS // 2])
    pmf = integer_pmf((parameter_log_scale(scale_index),), half_width, zero_fraction)
    row = pmf[0, 0].astype(np.float64)
    row.flags.writeable = False
    return row


def table_bits(pmf: np.ndarray, symbols: np.ndarray) -> float:
    """The ideal code length, in bits, of ``symbols`` (0-based) under rows ``pmf`` (n, K) or a
    single row (K,), with constriction's 2^-24 floor approximated."""
    mass = pmf[np.arange(len(symbols)), symbols] if pmf.ndim == 2 else pmf[symbols]
    total = pmf.sum(axis=-1) if pmf.ndim == 2 else pmf.sum()
    probability = np.maximum(mass / total, 2.0**-24)
    return float(-np.log2(probability).sum())
