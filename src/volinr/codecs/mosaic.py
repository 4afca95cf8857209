"""One codestream per volume for the 2D image codecs: the slices tiled into a mosaic image.

Coding each slice as its own codestream pays the codec's headers and minimum payload once per
slice (about 250-470 bytes for JPEG 2000), which puts a floor of ~0.02 bits per voxel under
a 256x256 volume at any quality. Tiled into one image, the volume pays them once.

Layout: the slices fill a near-square grid of ``grid_cols = ceil(sqrt(n))`` columns row by
row; the unused tiles of the last grid row are filled with a constant, the smallest sample of
the volume (measured on the headsq CT: cheaper than replicating the last slice or its mean,
and a decoder drops those tiles anyway). A volume whose mosaic would pass the codec's largest
image side or ``MAX_PIXELS_PER_CODESTREAM`` is split into slabs of consecutive slices of equal
size (the last may be smaller), one mosaic codestream each: the stated fallback tiling.

Stream: the geometry as LEB128 varints (slices, rows, cols, grid columns, slices per
codestream; 5-8 bytes), then the byte length of every codestream but the last, then the
codestreams. Every field is checked against the expected shape and the codestreams' decoded
sizes; a damaged or inconsistent geometry raises ``InputError``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from volinr.codecs.base import CodecError
from volinr.codecs.streams import ByteReader, put_varint
from volinr.errors import InputError

# 64 Mpixel (128 MB of 16-bit samples) per codestream: libjxl needs ~12 bytes a pixel and
# OpenJPEG ~6 while coding, so one codestream stays under ~1 GB of working memory.
MAX_PIXELS_PER_CODESTREAM = 1 << 26


@dataclass(frozen=True)
class MosaicGeometry:
    slices: int
    rows: int
    cols: int
    grid_cols: int
    slab_slices: int  # slices per codestream; the last codestream may hold fewer

    @property
    def codestreams(self) -> int:
        return math.ceil(self.slices / self.slab_slices)

    def slabs(self) -> list[tuple[int, int]]:
        """(start, stop) slice indices of every codestream."""
        return [
            (start, min(start + self.slab_slices, self.slices))
            for start in range(0, self.slices, self.slab_slices)
        ]

    def image_shape(self, count: int) -> tuple[int, int]:
        """(height, width) of the mosaic image of ``count`` slices."""
        return math.ceil(count / self.grid_cols) * self.rows, self.grid_cols * self.cols

    def header(self) -> bytes:
        fields = (self.slices, self.rows, self.cols, self.grid_cols, self.slab_slices)
        return b"".join(put_varint(value) for value in fields)


def near_square_grid(count: int) -> tuple[int, int]:
    """(grid rows, grid cols) for ``count`` tiles: ceil(sqrt(count)) columns."""
    grid_cols = math.isqrt(count - 1) + 1 if count > 1 else 1
    return math.ceil(count / grid_cols), grid_cols


def plan(shape: tuple[int, int, int], max_side: int, codec: str) -> MosaicGeometry:
    """The mosaic geometry of a volume: one codestream if it fits the codec's limits, else
    the fewest equal slabs that do."""
    slices, rows, cols = shape

    def fits(count: int) -> bool:
        grid_rows, grid_cols = near_square_grid(count)
        height, width = grid_rows * rows, grid_cols * cols
        return max(height, width) <= max_side and height * width <= MAX_PIXELS_PER_CODESTREAM

    if not fits(1):
        raise CodecError(
            f"{codec}: a {rows}x{cols} slice exceeds the codec's limits "
            f"(side <= {max_side}, <= {MAX_PIXELS_PER_CODESTREAM} pixels per codestream)"
        )
    largest = next(count for count in range(slices, 0, -1) if fits(count))
    slab_slices = math.ceil(slices / math.ceil(slices / largest))  # equal slabs
    return MosaicGeometry(slices, rows, cols, near_square_grid(slab_slices)[1], slab_slices)


def tile(slab: np.ndarray, grid_cols: int, fill) -> np.ndarray:
    """The slices of ``slab`` (count, rows, cols) as one mosaic image, unused tiles = fill."""
    count, rows, cols = slab.shape
    grid_rows = math.ceil(count / grid_cols)
    tiles = np.full((grid_rows * grid_cols, rows, cols), fill, slab.dtype)
    tiles[:count] = slab
    image = tiles.reshape(grid_rows, grid_cols, rows, cols).transpose(0, 2, 1, 3)
    return np.ascontiguousarray(image.reshape(grid_rows * rows, grid_cols * cols))


def untile(image: np.ndarray, count: int, rows: int, cols: int) -> np.ndarray:
    """The first ``count`` slices of a mosaic image of (rows, cols) tiles."""
    grid_rows, grid_cols = image.shape[0] // rows, image.shape[1] // cols
    tiles = image.reshape(grid_rows, rows, grid_cols, cols).transpose(0, 2, 1, 3)
    return tiles.reshape(grid_rows * grid_cols, rows, cols)[:count]


def encode_mosaic(
    samples: np.ndarray, encode_image: Callable[[np.ndarray], bytes], max_side: int, codec: str
) -> bytes:
    """The mosaic stream of a (slices, rows, cols) array of integer samples."""
    geometry = plan(samples.shape, max_side, codec)
    fill = samples.min()
    codestreams = [
        encode_image(tile(samples[start:stop], geometry.grid_cols, fill))
        for start, stop in geometry.slabs()
    ]
    lengths = b"".join(put_varint(len(codestream)) for codestream in codestreams[:-1])
    return geometry.header() + lengths + b"".join(codestreams)


def read_geometry(reader: ByteReader, shape: tuple[int, int, int]) -> MosaicGeometry:
    what = reader.what
    geometry = MosaicGeometry(*(reader.varint() for _ in range(5)))
    found = (geometry.slices, geometry.rows, geometry.cols)
    if found != tuple(shape):
        raise InputError(f"{what}: the mosaic header says shape {found}, expected {tuple(shape)}")
    if not 1 <= geometry.slab_slices <= geometry.slices:
        raise InputError(
            f"{what}: corrupted mosaic header: {geometry.slab_slices} slices per codestream "
            f"for a volume of {geometry.slices}"
        )
    if not 1 <= geometry.grid_cols <= geometry.slab_slices:
        raise InputError(
            f"{what}: corrupted mosaic header: {geometry.grid_cols} grid columns for "
            f"{geometry.slab_slices} slices per codestream"
        )
    return geometry


def decode_mosaic(
    data: bytes | memoryview,
    shape: tuple[int, int, int],
    decode_image: Callable[[memoryview], np.ndarray],
    codec: str,
) -> np.ndarray:
    """The (slices, rows, cols) samples of a mosaic stream, every field checked."""
    what = f"{codec} mosaic stream"
    reader = ByteReader(data, what)
    geometry = read_geometry(reader, shape)
    lengths = [reader.varint() for _ in range(geometry.codestreams - 1)]
    if any(length == 0 for length in lengths):
        raise InputError(f"{what}: corrupted header (an empty codestream)")
    payloads = [reader.take(length) for length in lengths] + [reader.rest()]
    if len(payloads[-1]) == 0:
        raise InputError(f"{what}: truncated (the last codestream is missing)")
    slabs = []
    for index, (payload, (start, stop)) in enumerate(zip(payloads, geometry.slabs(), strict=True)):
        try:
            image = decode_image(payload)
        except CodecError as err:  # our framing said a codestream is here: it is damaged
            raise InputError(
                f"{what}: codestream {index + 1} of {len(payloads)} does not decode "
                f"(corrupted header or data): {err}"
            ) from err
        expected = geometry.image_shape(stop - start)
        if tuple(image.shape) != expected:
            raise InputError(
                f"{what}: codestream of slices {start}..{stop - 1} decodes to {image.shape}, "
                f"the mosaic geometry says {expected} (inconsistent or corrupted)"
            )
        slabs.append(untile(image, stop - start, geometry.rows, geometry.cols))
    return np.concatenate(slabs)
