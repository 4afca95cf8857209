"""The interface every compression method of the benchmark implements.

A method encodes an image or a volume, with its geometry, at one operating point into real
bytes; decodes those bytes alone (plus the shared assets it declares, such as the SR model)
into an array; and says what its bytes count. The workflow runs each configured method over
its operating points in *groups* (one job per group: a SIREN fit's weight formats, a codec's
sweep, one training of a neural codec), writes every point's bytes to a file, decodes that
file, and evaluates every reconstruction with the same metrics (``volinr.methods.evaluation``).

A new method family is one module in this package with one subclass of :class:`Method`, plus
one entry in the config schema (its settings section and its name in
``rate_distortion.methods``). The class attributes and ``groups``/``group_inputs`` must not
import anything heavy: the workflow calls them while it builds the DAG.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np


@dataclass(frozen=True)
class OperatingPoint:
    """One setting of a method: ``name`` is unique within its group and names its file."""

    name: str
    settings: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Image:
    """What a method compresses: a 2D slice or 3D volume (slices, rows, cols) with its sidecar
    (``spacing_mm``, source, geometry) and the path it was read from."""

    voxels: np.ndarray
    meta: Mapping[str, Any]
    path: str


@dataclass
class Decoded:
    """A decoder's output: the reconstruction, and intermediates a table reports (e.g. the
    SIREN's low-resolution image before SR), by name."""

    voxels: np.ndarray
    intermediates: dict[str, np.ndarray] = field(default_factory=dict)


class Method:
    """Base class of a method family. Subclasses set the class attributes and implement
    ``groups``, ``points``, ``encode`` and ``decode``."""

    #: the family's name: its config section and its entry in rate_distortion.methods
    family: ClassVar[str] = ""
    #: what every table calls this family's points ("codec", "siren", "lr + upsampling", ...)
    kind: ClassVar[str] = ""
    #: file name suffix of its encoded files
    suffix: ClassVar[str] = ".bin"
    #: what a file's bytes count; printed in the rate-distortion table's notes
    counts: ClassVar[str] = ""
    #: shared assets the decoder needs besides the file (their bytes are reported apart)
    shared_assets: ClassVar[tuple[str, ...]] = ()
    #: the workflow gives jobs of a method that runs torch the ``gpu`` resource
    uses_torch: ClassVar[bool] = False

    def __init__(self, section: Mapping[str, Any], group: str, inputs: Mapping[str, str]):
        self.section = section
        self.group = group
        self.inputs = dict(inputs)

    # --- what the workflow asks while building the DAG (no heavy imports) -------------------

    @classmethod
    def groups(cls, section: Mapping[str, Any], config: Mapping[str, Any]) -> list[str]:
        """The jobs this method runs as, each a group of operating points."""
        raise NotImplementedError

    @classmethod
    def group_inputs(
        cls, section: Mapping[str, Any], config: Mapping[str, Any], group: str
    ) -> dict[str, str]:
        """Files a group needs besides the evaluated image, by name (paths under the
        workflow's results folder, e.g. a fit's weights or the SR model)."""
        return {}

    # --- what a job does --------------------------------------------------------------------

    def points(self) -> list[OperatingPoint]:
        raise NotImplementedError

    def label(self, point: OperatingPoint) -> dict[str, Any]:
        """The fields that identify a point in the tables: ``method`` (a readable name),
        ``setting``, and any others (layers, seed)."""
        return {"method": self.family, "setting": point.name}

    def encode(self, image: Image, point: OperatingPoint) -> bytes:
        raise NotImplementedError

    def decode(self, data: bytes, source: str, reference: Image) -> Decoded:
        """Rebuild the image from ``data`` alone (and declared shared assets). ``reference``
        is passed only for what every decoder of this benchmark knows without reading the
        file (none of its voxels may be used)."""
        raise NotImplementedError

    def record(self, point: OperatingPoint) -> dict[str, Any]:
        """Extra facts about how a point was made (e.g. the fit it comes from)."""
        return {}
