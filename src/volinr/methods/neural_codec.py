"""The overfitted neural codec (``volinr.neural_codec``: latent grids, a small synthesis network
and an autoregressive entropy model, range-coded) as a method family.

One group per lambda, each one training, so the lambdas run as parallel jobs. A slice is coded
in 2D; a volume in 3D by one decoder for the whole volume, and, at ``slice_by_slice_lambdas``,
also slice by slice with the 2D codec (the comparison the 3D codec must win).

A file is the codec's own container (format version 2: header with the architecture, the
range-coded parameters and latents, CRC-32); a slice-by-slice file is every slice's container,
each after its length (4 bytes). The decoder needs nothing else: not the lambda, not the
settings, only the bytes (and, for a slice-by-slice file, the number of slices it must hold).
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from typing import Any, ClassVar

from volinr.methods.base import Decoded, Image, Method, OperatingPoint, volume_mode
from volinr.neural_codec.geometry import causal_offsets

LENGTH = struct.Struct("<I")  # a slice-by-slice file: each slice's container after its length
SLICE_PREFIX = "slices_"


def group_name(lam: float, slice_by_slice: bool = False) -> str:
    return f"{SLICE_PREFIX if slice_by_slice else ''}lambda{lam:g}"


class NeuralCodec(Method):
    family: ClassVar[str] = "neural_codec"
    kind: ClassVar[str] = "neural codec"
    marker: ClassVar[str] = "D"
    joined: ClassVar[bool] = True
    emphasised: ClassVar[bool] = True
    suffix: ClassVar[str] = ".vnc"
    counts: ClassVar[str] = (
        "the whole file: header (shape, dtype, value range, architecture, each tensor's "
        "quantisation), range-coded network parameters and latents, framing with CRC-32; a "
        "slice-by-slice file, every slice's file and a 4-byte length each"
    )
    # Trains on the configured device. On a GPU its jobs hold the gpu resource; on a CPU they
    # run side by side, one thread each (a thread policy measured in
    # benchmarks/results/thread_policy.md), and hold none.
    uses_torch: ClassVar[bool] = True
    gpu_optional: ClassVar[bool] = True
    sections: ClassVar[tuple[str, ...]] = ("neural_codec", "dataset")

    @classmethod
    def groups(cls, section: Mapping[str, Any], config: Mapping[str, Any]) -> list[str]:
        lambdas = config["neural_codec"]["lambdas"]
        names = [group_name(lam) for lam in lambdas]
        if volume_mode(config):
            sliced = config["neural_codec"]["slice_by_slice_lambdas"]
            names += [group_name(lam, slice_by_slice=True) for lam in sliced]
        return names

    def _slice_by_slice(self) -> bool:
        return self.group.startswith(SLICE_PREFIX)

    def points(self) -> list[OperatingPoint]:
        settings = self.section["neural_codec"]
        lam = next(
            lam
            for lam in settings["lambdas"]
            if group_name(lam, self._slice_by_slice()) == self.group
        )
        return [OperatingPoint(f"{lam:g}", {"lambda": lam})]

    def label(self, point: OperatingPoint) -> dict[str, Any]:
        # what was coded decides: a 3D array is coded in 3D whatever the dataset's kind says
        ndim = getattr(self, "_ndim", 3 if volume_mode(self.section) else 2)
        if ndim == 2:
            name = "neural codec (2D)"
        elif self._slice_by_slice():
            name = "neural codec (2D, slice by slice)"
        else:
            name = "neural codec (3D)"
        return {"method": name, "setting": f"lambda {point.name}"}

    def encode(self, image: Image, point: OperatingPoint) -> bytes:
        from volinr.errors import InputError

        try:
            return self._encode(image, point)
        except ValueError as err:  # the codec's checks of the image and its settings
            raise InputError(f"{image.path}: the neural codec cannot code it: {err}") from None

    def _encode(self, image: Image, point: OperatingPoint) -> bytes:
        from volinr.neural_codec import CodecSettings, encode

        section = self.section["neural_codec"]
        settings = CodecSettings.from_section(section)
        causal_offsets(image.voxels.ndim, settings.context_size)  # a ValueError if too many
        lam, seed = point.settings["lambda"], section["seed"]
        spacing = image.meta.get("spacing_mm")
        device = self.device or "cpu"
        self._ndim = image.voxels.ndim
        if not self._slice_by_slice():
            self._encoded = [
                encode(image.voxels, spacing, settings, lam, seed, verify=False, device=device)
            ]
            return self._encoded[0].data
        in_plane = list(spacing[1:]) if spacing else None
        self._encoded = [
            encode(plane, in_plane, settings, lam, seed, verify=False, device=device)
            for plane in image.voxels
        ]
        return b"".join(LENGTH.pack(len(e.data)) + e.data for e in self._encoded)

    def decode(
        self, data: bytes, source: str, point: OperatingPoint, shape: tuple[int, ...]
    ) -> Decoded:
        import numpy as np

        from volinr.neural_codec import decode

        if self._slice_by_slice():
            voxels = decode_slices(data, source, shape[0])
        else:
            voxels = decode(data, source)
        if voxels.shape != tuple(shape):
            from volinr.errors import InputError

            raise InputError(f"{source}: holds an image of shape {voxels.shape}, not {shape}")
        encoded = getattr(self, "_encoded", None)
        if encoded is not None:  # the file must give exactly what the encoder reconstructed
            expected = np.stack([e.reconstruction for e in encoded]).reshape(voxels.shape)
            if not np.array_equal(voxels, expected):
                raise RuntimeError(f"{source}: does not decode to the encoder's reconstruction")
        return Decoded(voxels)

    def record(self, image: Image, point: OperatingPoint, data: bytes) -> dict[str, Any]:
        """How the point was made and where its bits go (summed over slices where sliced)."""
        import numpy as np

        records = [e.record for e in self._encoded]

        def total(*keys: str) -> float:
            values = []
            for r in records:
                value = r
                for key in keys:
                    value = value.get(key, 0) if isinstance(value, dict) else 0
                values.append(value)
            return float(sum(values))

        estimated = total("bits", "estimated", "total")
        coded_payload = total("bits", "actual", "payload")
        last = [r["curve"][-1] for r in records if r.get("curve")]
        macs = [r["macs_per_voxel"]["total"] for r in records if "macs_per_voxel" in r]
        return {
            "lambda": point.settings["lambda"],
            "iterations": self.section["neural_codec"]["iterations"],
            "decode_macs_per_voxel": max(macs, default=0.0),  # 0: a constant image
            "parameter_bits": total("bits", "actual", "parameters"),
            # the rest of the payload (the coder's trailing zero words, which the file drops,
            # are the latents' too, and cost nothing)
            "latent_bits": coded_payload - total("bits", "actual", "parameters"),
            "header_and_framing_bits": total("bits", "actual", "header")
            + total("bits", "actual", "framing")
            + 8 * LENGTH.size * (len(records) if self._slice_by_slice() else 0),
            "estimated_payload_bits": estimated,
            # the entropy model's estimate against the coded payload (header aside)
            "rate_estimate_error": (estimated - coded_payload) / coded_payload
            if coded_payload
            else None,
            "final_training_loss": float(np.mean([p["loss"] for p in last])) if last else None,
            "training_seconds": total("seconds", "training"),
            "training_device": records[0].get("training_device", "cpu"),
            "training_restarts": int(total("training", "restarts")),
            # dB of synthesis PSNR that quantising the networks cost (the worst slice's)
            "network_quantisation_loss_db": max(
                (_loss_db(r.get("network_quantisation")) for r in records), default=0.0
            ),
            "training_loss_rose_at_end": any(
                r.get("training", {}).get("loss_rose_at_end", False) for r in records
            ),
            # (iteration, step loss, hard-rounded loss or None) of every sampled iteration; a
            # slice-by-slice file keeps its first slice's
            "training_curve": [
                [p["iteration"], p["loss"], p.get("rounded_loss")]
                for p in (records[0].get("curve") or [])
            ],
        }


def _loss_db(distortion: dict | None) -> float:
    import math

    if not distortion or not distortion.get("float_mse") or not distortion.get("quantised_mse"):
        return 0.0
    return 10 * math.log10(distortion["quantised_mse"] / distortion["float_mse"])


def slice_count(data: bytes) -> int | None:
    """How many slices a slice-by-slice file holds (each a length and a neural codec
    container), or None where the bytes are not laid out so."""
    from volinr.container import NEURAL_CODEC_VERSION, format_version

    count, offset = 0, 0
    while offset < len(data):
        if offset + LENGTH.size > len(data):
            return None
        (length,) = LENGTH.unpack_from(data, offset)
        part = data[offset + LENGTH.size : offset + LENGTH.size + length]
        if len(part) != length or format_version(part) != NEURAL_CODEC_VERSION:
            return None
        offset += LENGTH.size + length
        count += 1
    return count or None


def decode_slices(data: bytes, source: str, count: int):
    """A slice-by-slice file's volume, each slice decoded from its own container."""
    import numpy as np

    from volinr.errors import InputError
    from volinr.neural_codec import decode

    slices = [decode(part, source) for part in _split(data, source, count)]
    for index, plane in enumerate(slices):
        if (plane.shape, plane.dtype) != (slices[0].shape, slices[0].dtype):
            raise InputError(
                f"{source}: slice {index} decodes to a {'x'.join(map(str, plane.shape))} "
                f"{plane.dtype} image where slice 0 is {'x'.join(map(str, slices[0].shape))} "
                f"{slices[0].dtype}: not one volume's slices"
            )
    return np.stack(slices)


def starts_like_slice_by_slice(data: bytes) -> bool:
    """Whether ``data`` begins as a slice-by-slice file does (a length, then a neural codec
    container): a file that does but is not one is a damaged one, not another format."""
    from volinr.container import NEURAL_CODEC_VERSION, format_version

    return format_version(data[LENGTH.size :]) == NEURAL_CODEC_VERSION


def _split(data: bytes, source: str, count: int) -> list[bytes]:
    """A slice-by-slice file's ``count`` containers; anything else is refused."""
    from volinr.errors import InputError

    parts, offset = [], 0
    for index in range(count):
        if offset + LENGTH.size > len(data):
            raise InputError(f"{source}: ends before slice {index} of {count}")
        (length,) = LENGTH.unpack_from(data, offset)
        offset += LENGTH.size
        if offset + length > len(data):
            raise InputError(f"{source}: slice {index} claims {length} bytes past the file's end")
        parts.append(data[offset : offset + length])
        offset += length
    if offset != len(data):
        raise InputError(f"{source}: {len(data) - offset} bytes after the last of {count} slices")
    return parts
