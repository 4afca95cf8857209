"""The ablation without a SIREN: the true low-resolution image stored losslessly (by whichever
lossless codec gives the smallest stream) and upsampled by SRDenseNet, Lanczos or bicubic.

It answers two questions the paper leaves open: does the pretrained SR network beat plain
interpolation on this image (the SR check), and what does the SIREN add over storing its own
target exactly (the ablation)? A group is one upsampler; its single point is the LR file.

The file is the lossless codec's stream of the LR image. As for the classical codecs, the
decoder knows the codec (the operating point: the smallest of the lossless codecs on this LR
image, chosen when the points are made) and the full-resolution grid with the downsampling
factor, from which the LR grid follows as the downsampling made it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from volinr.methods.base import Decoded, Image, Method, OperatingPoint, PaperView
from volinr.results_layout import Layout

UPSAMPLERS = ("sr", "lanczos", "bicubic")
POINT = "lossless"


class TrueLr(Method):
    family: ClassVar[str] = "true_lr"
    kind: ClassVar[str] = "lr + upsampling"
    suffix: ClassVar[str] = ".lr"
    counts: ClassVar[str] = (
        "the lossless codec's stream of the LR image (the codec is the operating point's; the "
        "SR model apart)"
    )
    shared_assets: ClassVar[tuple[str, ...]] = ("sr_model",)
    uses_torch: ClassVar[bool] = True
    sections: ClassVar[tuple[str, ...]] = ("volume", "downsample_factor")
    paper_point: ClassVar[str | None] = POINT
    paper_name: ClassVar[str] = "reference"
    marker: ClassVar[str] = "s"

    @classmethod
    def groups(cls, section: Mapping[str, Any], config: Mapping[str, Any]) -> list[str]:
        return list(UPSAMPLERS)

    @classmethod
    def group_inputs(
        cls, section: Mapping[str, Any], config: Mapping[str, Any], group: str
    ) -> dict[str, str]:
        layout = Layout.of(config)
        inputs = {"lr": layout.lr_image}
        return inputs | ({"sr_model": layout.sr_model} if group == "sr" else {})

    def points(self) -> list[OperatingPoint]:
        """The one point: the LR image under the smallest of the lossless codecs."""
        from volinr.codecs import smallest_lossless_stream
        from volinr.io import load_image

        lr, _ = load_image(self.inputs["lr"])
        codec, self._stream = smallest_lossless_stream(lr)
        return [OperatingPoint(POINT, {"upsampler": self.group, "codec": codec})]

    def label(self, point: OperatingPoint) -> dict[str, Any]:
        return {"method": f"true LR + {self.group}", "setting": ""}

    def encode(self, image: Image, point: OperatingPoint) -> bytes:
        return self._stream  # made when the point was chosen: the smallest of the codecs

    def decode(
        self, data: bytes, source: str, point: OperatingPoint, shape: tuple[int, ...]
    ) -> Decoded:
        from volinr.codecs import decode_lossless_stream
        from volinr.errors import InputError
        from volinr.resample import downsampled_shape
        from volinr.super_resolution import upsample_array

        codec = point.settings["codec"]
        lr_shape = downsampled_shape(shape, self.section["downsample_factor"])
        try:
            lr = decode_lossless_stream(codec, data, lr_shape)
        except (ValueError, RuntimeError) as err:
            raise InputError(f"{source}: the {codec} stream cannot be decoded ({err})") from None
        high = upsample_array(
            lr,
            tuple(shape),
            self.group,
            self.inputs.get("sr_model", ""),
            self.device,
            self.section["volume"]["z_restore"],
        )
        return Decoded(high, {"lr": lr})

    def record(self, image: Image, point: OperatingPoint, data: bytes) -> dict[str, Any]:
        codec = point.settings["codec"]
        return {
            "stored_codec": codec,  # the tables name it beside the bits per voxel it gives
            "stored_what": f"{self.inputs['lr']} coded losslessly ({codec}, the smallest)",
        }

    def rates(self, file_bytes: int, voxels: int, shared_bytes: int, amortize_over: int, facts):
        """The stored LR image's rates, with the SR model whole and amortised."""
        from volinr import rates

        return {
            "sr_model_bytes": shared_bytes,
            **rates.original_bytes(voxels),
            "stored_bytes": file_bytes,
            **rates.stored_rates(file_bytes, voxels, shared_bytes, amortize_over),
        }

    def paper_view(self, view: PaperView) -> dict[str, Any]:
        paper = {"method": self.label(view.point)["method"], **view.quality}
        paper["sr_model_bytes"] = view.shared_bytes
        paper.update({k: v for k, v in view.rates.items() if k != "sr_model_bytes"}, **view.facts)
        return paper
