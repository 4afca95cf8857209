"""The classical codecs as one method family: each codec of the sweep (``volinr.codec_sweeps``)
is one group, its settings the operating points; JPEG 2000, HTJ2K, JPEG-LS and JPEG XL code a
volume as one codestream (a mosaic of its slices), HEVC and AV1 code its slices as frames.

A file holds the codec's whole stream (for a volume, with its few bytes of mosaic geometry);
the decoder knows the codec and setting (the operating point, as any codec's decoder knows its
mode) and the image's shape.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from volinr.codec_sweeps import (
    LOSSLESS_CODECS,
    LOSSLESS_CODECS_3D,
    LOSSY_SWEEP_2D,
    LOSSY_SWEEP_3D,
    sweep_codecs,
)
from volinr.methods.base import Decoded, Image, Method, OperatingPoint, PointSkipped, volume_mode

LOSSLESS = "lossless"


class Classical(Method):
    family: ClassVar[str] = "classical"
    kind: ClassVar[str] = "codec"
    marker: ClassVar[str] = "."
    suffix: ClassVar[str] = ".bin"
    counts: ClassVar[str] = (
        "the codec's whole stream (for a volume coded as one codestream, with its mosaic "
        "geometry); the codec, its setting and the image's shape are the decoder's"
    )
    sections: ClassVar[tuple[str, ...]] = ("classical", "dataset")

    @classmethod
    def groups(cls, section: Mapping[str, Any], config: Mapping[str, Any]) -> list[str]:
        available = sweep_codecs(3 if volume_mode(config) else 2)
        chosen = config["classical"]["codecs"]
        return [c for c in available if chosen is None or c in chosen]

    def ndim(self) -> int:
        return 3 if volume_mode(self.section) else 2

    def points(self) -> list[OperatingPoint]:
        lossless = LOSSLESS_CODECS if self.ndim() == 2 else LOSSLESS_CODECS_3D
        sweep = LOSSY_SWEEP_2D if self.ndim() == 2 else LOSSY_SWEEP_3D
        points = [OperatingPoint(LOSSLESS, {"lossless": True})] if self.group in lossless else []
        for parameter in sweep.get(self.group, ()):
            points.append(OperatingPoint(f"{float(parameter):g}", {"parameter": parameter}))
        return points

    def setting(self, point: OperatingPoint):
        from volinr.codecs import CODECS

        codec = CODECS[self.group]
        if point.settings.get("lossless"):
            return codec.lossless_setting()
        return codec.setting(point.settings["parameter"])

    def claimed_max_error(self, point: OperatingPoint) -> float | None:
        setting = self.setting(point)
        return 0.0 if setting.lossless else setting.error_bound_hu

    def label(self, point: OperatingPoint) -> dict[str, Any]:
        setting = self.setting(point)
        return {
            "method": self.group,
            "setting": point.name,
            "codec": self.group,
            "parameter": setting.parameter,
            "lossless": setting.lossless,
            "error_bound_hu": setting.error_bound_hu,
        }

    def encode(self, image: Image, point: OperatingPoint) -> bytes:
        from volinr.codecs import CodecError, encode
        from volinr.codecs.base import check_volume, exact_float

        try:
            return encode(exact_float(check_volume(image.voxels)), self.setting(point))
        except CodecError as err:
            raise PointSkipped(str(err)) from None

    def decode(
        self, data: bytes, source: str, point: OperatingPoint, shape: tuple[int, ...]
    ) -> Decoded:
        from volinr.codecs import CodecError, decode
        from volinr.errors import InputError

        try:
            return Decoded(decode(data, self.setting(point), shape))
        except CodecError as err:
            raise InputError(f"{source}: {err}") from None

    def record(self, image: Image, point: OperatingPoint, data: bytes) -> dict[str, Any]:
        from volinr.codecs import CODECS
        from volinr.codecs.base import exact_float

        volume = exact_float(image.voxels)
        return {"sample_mapping": CODECS[self.group].sample_mapping(volume, self.setting(point))}
