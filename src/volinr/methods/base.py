"""The interface every compression method of the benchmark implements.

A method encodes an image or a volume, with its geometry, at one operating point into real
bytes; decodes those bytes alone (plus the shared assets it declares, such as the SR model)
into an array; and says what its bytes count. The workflow runs each configured method over
its operating points in *groups* (one job per group: a SIREN fit's weight formats, a codec's
sweep, one training of a neural codec), writes every point's bytes to a file, decodes that
file, and evaluates every reconstruction with the same metrics (``volinr.evaluation``).

A new method family is one module in this package with one subclass of :class:`Method`, plus
one entry in the config schema (its settings section and its name in
``rate_distortion.methods``). The class attributes and ``groups``/``group_inputs`` must not
import anything heavy: the workflow calls them while it builds the DAG.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:  # the workflow imports this package while building the DAG: keep it light
    import numpy as np
    import torch


def volume_mode(config: Mapping[str, Any]) -> bool:
    """Whether the config's dataset is a volume (any kind but a slice)."""
    return config["dataset"]["kind"] != "slice"


class PointSkipped(Exception):
    """A method cannot code this image at this point (a codec library refuses the setting):
    the point is left out with the reason logged, as a sweep skips it."""


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
    """A decoder's output: the reconstruction, intermediates a table reports (e.g. the
    SIREN's low-resolution image before SR) by name, and how it was decoded."""

    voxels: np.ndarray
    intermediates: dict[str, np.ndarray] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)  # how it was decoded (e.g. the recipe)


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
    #: a torch method that holds the ``gpu`` resource only where the config's device is a GPU;
    #: on a CPU its jobs run side by side like a classical codec's (one thread each)
    gpu_optional: ClassVar[bool] = False
    #: its job uses the config's threads (a torch method always does; a classical codec runs
    #: on one thread, as the anchors are measured)
    multithreaded: ClassVar[bool] = False
    #: the config sections its jobs receive (validated by the schema)
    sections: ClassVar[tuple[str, ...]] = ()
    #: the point whose reconstruction and full record the paper's tables and figures read
    paper_point: ClassVar[str | None] = None
    #: its points' marker in the rate-distortion figure (matplotlib), and whether the points
    #: of one setting are joined by a line there
    marker: ClassVar[str] = "x"
    joined: ClassVar[bool] = False
    #: drawn larger, with a black edge, to stand out among the codecs' curves
    emphasised: ClassVar[bool] = False

    def __init__(
        self,
        section: Mapping[str, Any],
        group: str,
        inputs: Mapping[str, str],
        device: torch.device | None = None,
    ):
        self.section = section  # the config sections the method reads (see ``sections``)
        self.group = group
        self.inputs = dict(inputs)
        self.device = device

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

    def decode(
        self, data: bytes, source: str, point: OperatingPoint, shape: tuple[int, ...]
    ) -> Decoded:
        """Rebuild the image from ``data`` (read from ``source``) and the declared shared
        assets. Besides the bytes, a decoder knows only the operating point's settings (as a
        codec's decoder knows its mode) and the grid's shape (the original's geometry); what
        else it needs must be in the bytes, and ``counts`` says what they hold."""
        raise NotImplementedError

    def record(self, image: Image, point: OperatingPoint, data: bytes) -> dict[str, Any]:
        """Extra facts about how a point was made (e.g. the fit it comes from, the codec its
        bytes name, what was done to the samples)."""
        return {}

    def claimed_max_error(self, point: OperatingPoint) -> float | None:
        """The largest |error| the point promises (0: lossless, a bound: error-bounded; None:
        no promise). The rd stage checks it against the decoded data before writing the row,
        and refuses the point, with the reason, where it does not hold."""
        return None

    # --- how its rates are counted --------------------------------------------------------------

    def rates(self, file_bytes: int, voxels: int, shared_bytes: int, amortize_over: int, facts):
        """The row's rates from its file's bytes: ``bits_per_voxel`` (8 x bytes / voxels of the
        original) and any other the method reports; ``shared_bytes``: the bytes of its shared
        assets (``shared_assets``), shared by ``amortize_over`` volumes; ``facts``: ``record``'s.
        By default the file alone."""
        from volinr import metrics

        return {"bits_per_voxel": metrics.bits_per_voxel(file_bytes, voxels)}

    def paper_view(self, view: PaperView) -> dict[str, Any] | None:
        """At the paper point: the record the paper's tables read (None: the method has none)."""
        return None


@dataclass(frozen=True)
class PaperView:
    """What ``Method.paper_view`` reads: the point, its quality, ``record``'s facts, its rates
    (``Method.rates``), the shared assets' bytes, the decoded output and the 8-bit window."""

    point: OperatingPoint
    quality: Mapping[str, Any]
    facts: Mapping[str, Any]
    rates: Mapping[str, Any]
    file_bytes: int
    shared_bytes: int
    decoded: Decoded
    minmax: tuple[float, float]
