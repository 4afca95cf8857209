"""The SIREN methods: the paper's (a SIREN fitted to the Lanczos-downsampled image, restored
to full resolution by the pretrained SRDenseNet) and its baseline (the same SIREN fitted to
the full-resolution image).

A group is one fit (``L{layers}_s{seed}``, made by the workflow's fit rule); its operating
points are the weight formats of ``siren_container.quantizations``, each written as one
container file (``volinr.siren_container``) that the decoder rebuilds the image from, with the
shared SR model it names by sha256. The float32 point is the paper's own reconstruction (a test
checks it bit for bit), so the paper's Tables 4-7 and figures are read from it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar

from volinr.methods.base import Decoded, Image, Method, OperatingPoint, PaperView
from volinr.results_layout import Layout, fit_group

if TYPE_CHECKING:
    import numpy as np
    import torch

PAPER_POINT = "float32"  # the weights as fitted: the paper's reconstruction


def encode_siren_file(
    weights: str,
    quantization: str,
    coder: str,
    upsample: str,
    target_shape: tuple[int, ...] | None,
    z_restore: str,
    sr_model: str,
) -> bytes:
    """A fitted SIREN's weights file as a container: the weights in ``quantization``, coded by
    ``coder``, with the recipe its decoder follows after evaluating the SIREN on its grid."""
    from volinr.errors import InputError
    from volinr.io import sha256_file
    from volinr.siren_container import encode_container
    from volinr.siren_grid import load_siren

    model, payload = load_siren(weights)
    extra: dict[str, Any] = {"upsample": upsample}
    if upsample != "none":
        if target_shape is None:
            raise InputError(f"{weights}: upsampling by {upsample} needs the target grid")
        extra.update(target_shape=[int(n) for n in target_shape], z_restore=z_restore)
    if upsample == "sr":
        if not sr_model:
            raise InputError(f"{weights}: upsampling by SR needs the SR model (its sha256 is kept)")
        extra["sr_model_sha256"] = sha256_file(sr_model)
    try:
        return encode_container(
            model.state_dict(),
            model.config,
            payload["grid_shape"],
            payload.get("grid_extent") or [float(n) for n in payload["grid_shape"]],
            payload["value_range"],
            quantization,
            coder,
            extra,
        )
    except ValueError as err:  # e.g. weights beyond the float16 range
        raise InputError(f"{weights}: cannot be stored as {quantization} ({err})") from None


def decode_siren_file(
    data: bytes, source: str, sr_model: str, device: torch.device, chunk_voxels: int
) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """The image rebuilt from a container alone (plus the SR model it names): the output, the
    SIREN's own grid before any upsampling, and the header."""
    from volinr import limits
    from volinr.errors import InputError
    from volinr.io import sha256_file
    from volinr.siren_container import siren_from_container
    from volinr.siren_grid import decode_siren
    from volinr.super_resolution import upsample_array

    model, header = siren_from_container(data, device, source)
    extra = header.get("extra", {})
    method = extra.get("upsample", "none")
    upsampled = {}
    if method != "none":
        # the restored volume, an intermediate of SR or of the slice-axis resize, and its copy
        voxels = math.prod(int(n) for n in extra["target_shape"])
        upsampled = {"upsampled output and its intermediates": 3 * voxels * 4}
    chunk = limits.plan_decode(
        header["grid_shape"],
        model.config["hidden_features"],
        chunk_voxels,
        device,
        f"decompressing {source}",
        upsampled,
    )
    low = decode_siren(
        model,
        header["grid_shape"],
        tuple(header["value_range"]),
        device,
        header["grid_extent"],
        chunk,
    )
    if method == "none":
        return low, low, header
    expected = extra.get("sr_model_sha256")
    if method == "sr" and (not sr_model or sha256_file(sr_model) != expected):
        raise InputError(
            f"{source}: needs the SR model with sha256 {expected}; {sr_model or 'none'} was given"
        )
    high = upsample_array(
        low, extra["target_shape"], method, sr_model, device, extra.get("z_restore", "lanczos")
    )
    return high, low, header


class SirenMethod(Method):
    """What both SIREN methods share; a subclass says which fit target and recipe."""

    kind: ClassVar[str] = "siren"
    marker: ClassVar[str] = "o"
    joined: ClassVar[bool] = True
    suffix: ClassVar[str] = ".volinr"
    uses_torch: ClassVar[bool] = True
    sections: ClassVar[tuple[str, ...]] = ("siren", "siren_container", "volume")
    paper_point: ClassVar[str | None] = PAPER_POINT
    #: which fit: "lr" (on the downsampled image) or "hr" (on the original)
    target: ClassVar[str] = ""
    #: the name of its paper-view records (Tables 4-7, the figures)
    paper_name: ClassVar[str] = ""
    label_name: ClassVar[str] = ""

    @classmethod
    def groups(cls, section: Mapping[str, Any], config: Mapping[str, Any]) -> list[str]:
        siren = config["siren"]
        return [fit_group(n, seed) for n in siren["layers"] for seed in siren["seeds"]]

    @classmethod
    def group_inputs(
        cls, section: Mapping[str, Any], config: Mapping[str, Any], group: str
    ) -> dict[str, str]:
        fit = Layout.of(config).fit_dir(cls.target, group)
        return {"weights": f"{fit}/siren.pt", "record": f"{fit}/fit.json"}

    def layers_and_seed(self) -> tuple[int, int]:
        layers, seed = self.group.removeprefix("L").split("_s")
        return int(layers), int(seed)

    def points(self) -> list[OperatingPoint]:
        container = self.section["siren_container"]
        return [
            OperatingPoint(q, {"quantization": q, "coder": container["coder"]})
            for q in container["quantizations"]
        ]

    def label(self, point: OperatingPoint) -> dict[str, Any]:
        layers, seed = self.layers_and_seed()
        return {
            "method": f"{self.label_name}, {layers} layers",
            "setting": point.name,
            "layers": layers,
            "seed": seed,
            "quantization": point.name,
        }

    def upsample(self) -> str:
        return "none"

    def encode(self, image: Image, point: OperatingPoint) -> bytes:
        return encode_siren_file(
            self.inputs["weights"],
            point.settings["quantization"],
            point.settings["coder"],
            self.upsample(),
            tuple(image.voxels.shape) if self.upsample() != "none" else None,
            self.section["volume"]["z_restore"],
            self.inputs.get("sr_model", ""),
        )

    def decode(
        self, data: bytes, source: str, point: OperatingPoint, shape: tuple[int, ...]
    ) -> Decoded:
        import torch

        device = self.device or torch.device("cpu")
        chunk = self.section["volume"]["decode_chunk_voxels"]
        sr_model = self.inputs.get("sr_model", "")
        high, low, header = decode_siren_file(data, source, sr_model, device, chunk)
        recipe = header.get("extra", {})
        meta = {"upsample": recipe.get("upsample", "none"), "z_restore": recipe.get("z_restore")}
        return Decoded(high, {"lr": low} if self.upsample() != "none" else {}, meta)

    def record(self, image: Image, point: OperatingPoint, data: bytes) -> dict[str, Any]:
        from volinr.io import read_json_object

        return {"fit_record": read_json_object(self.inputs["record"])}

    def rates(self, file_bytes: int, voxels: int, shared_bytes: int, amortize_over: int, facts):
        """The fit's timing, memory and weights-file rates (the paper's convention), and the
        container file's rates with the SR model whole and amortised."""
        from volinr import rates

        return {
            **rates.fit_rates([facts["fit_record"]], voxels, shared_bytes),
            "sr_model_bytes": shared_bytes,
            **rates.original_bytes(voxels),
            "container_bytes": file_bytes,
            "weights_bytes": file_bytes,
            **rates.file_rates(file_bytes, voxels, shared_bytes, amortize_over),
        }

    def paper_view(self, view: PaperView) -> dict[str, Any]:
        """The fit's reconstruction quality (and its LR image's, before SR) and the rates of
        the SIREN weights file as the fit saved it (the paper's convention)."""
        from volinr import evaluation, metrics, rates
        from volinr.io import load_image

        layers, seed = self.layers_and_seed()
        voxels = view.quality["voxels"]
        paper = {"method": self.paper_name, "layers": layers, "seed": seed, **view.quality}
        if "lr" in view.decoded.intermediates and "lr" in self.inputs:
            lr_reference, _ = load_image(self.inputs["lr"])
            lr = view.decoded.intermediates["lr"]
            evaluation.check_pair(lr_reference, lr, self.inputs["lr"], "the decoded LR image")
            paper["lr_psnr_8bit_minmax_db"] = metrics.psnr_8bit(lr_reference, lr, view.minmax)
        paper["sr_model_bytes"] = view.shared_bytes
        paper.update(rates.original_bytes(voxels))
        paper.update(rates.fit_rates([view.facts["fit_record"]], voxels, view.shared_bytes))
        return paper


class PaperSiren(SirenMethod):
    family: ClassVar[str] = "siren_lr_sr"
    counts: ClassVar[str] = (
        "the container file: the SIREN's weights in the point's format, coded, with the "
        "architecture, grid, intensity scaling and the SR recipe (the SR model apart)"
    )
    shared_assets: ClassVar[tuple[str, ...]] = ("sr_model",)
    target: ClassVar[str] = "lr"
    paper_name: ClassVar[str] = "ours"
    label_name: ClassVar[str] = "SIREN on LR + SR (paper)"

    @classmethod
    def group_inputs(
        cls, section: Mapping[str, Any], config: Mapping[str, Any], group: str
    ) -> dict[str, str]:
        inputs = super().group_inputs(section, config, group)
        layout = Layout.of(config)
        return inputs | {"sr_model": layout.sr_model, "lr": layout.lr_image}

    def upsample(self) -> str:
        return "sr"


class BaselineSiren(SirenMethod):
    family: ClassVar[str] = "siren_hr"
    counts: ClassVar[str] = (
        "the container file: the SIREN's weights in the point's format, coded, with the "
        "architecture, grid and intensity scaling"
    )
    target: ClassVar[str] = "hr"
    paper_name: ClassVar[str] = "baseline"
    label_name: ClassVar[str] = "SIREN on HR"
