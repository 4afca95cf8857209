"""Rate-distortion points of the neural codec on the evaluated images (dev benchmark).

Run once, with settings tuned elsewhere (``neural_codec_tuning.py``), never tuned here:

- ``--image slice``: the embedded slice 693_UNCR (``pydicom-data:693_UNCR.dcm``), 2D;
- ``--image headsq --headsq PATH``: the headsq head CT volume (int16 93x64x64, spacing
  z/y/x 1.5/3.2/3.2 mm from its JSON sidecar), 3D, one decoder for the volume;
- ``--image headsq --slice-by-slice``: the same volume coded as 93 independent 2D files.

Each point appends one JSON line to ``--out``: lambda, iterations, file bytes, bits per voxel
(8 x file bytes / voxels), 8-bit PSNR (min..max window) and native PSNR, the bits split into
parameters, latents and header, estimated vs actual, seconds, MACs per voxel, decode seconds.

    python benchmarks/neural_codec_rd.py --image slice --lam 3e-3 1e-3 3e-4 1e-4 \
        --set iterations=2000 --out benchmarks/results/neural_codec_rd.jsonl
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import numpy as np
import torch

from volinr.data.dicom_frames import read_frame
from volinr.metrics import minmax_window, psnr_8bit, psnr_native
from volinr.neural_codec.codec import decode, encode
from volinr.neural_codec.settings import CodecSettings
from volinr.provenance import device_info, git_commit

sys.path.insert(0, str(Path(__file__).parent))
from neural_codec_tuning import parse_value  # noqa: E402

log = logging.getLogger("neural_codec_rd")
PARTS = ("parameters", "latents", "trailing_zero_bits_dropped", "header", "framing")


def load(image: str, headsq: Path | None) -> tuple[np.ndarray, list[float]]:
    if image == "slice":
        frame = read_frame("pydicom-data:693_UNCR.dcm")
        return np.asarray(frame.pixels), [0.0, 0.0]
    if headsq is None:
        raise SystemExit("--headsq PATH is needed for --image headsq")
    volume = np.load(headsq)
    sidecar = headsq.with_suffix(".json")
    spacing = json.loads(sidecar.read_text()).get("spacing_zyx_mm") if sidecar.exists() else None
    return volume, spacing or [1.5, 3.2, 3.2]


def code(array, spacing, settings, lam, seed) -> tuple[np.ndarray, dict, float]:
    """(decoded array, record, decode seconds) of one file."""
    encoded = encode(array, spacing if all(spacing) else None, settings, lam=lam, seed=seed)
    start = time.perf_counter()
    decoded = decode(encoded.data, "rd point")
    seconds = time.perf_counter() - start
    if not np.array_equal(decoded, encoded.reconstruction):
        raise RuntimeError("the file does not decode to its reconstruction")
    return decoded, encoded.record, seconds


def point(array, spacing, settings, lam, seed, slice_by_slice: bool) -> dict:
    start = time.perf_counter()
    if slice_by_slice:
        planes, records, decode_seconds = [], [], 0.0
        for plane in array:
            decoded, record, seconds = code(plane, spacing[1:], settings, lam, seed)
            planes.append(decoded)
            records.append(record)
            decode_seconds += seconds
        decoded = np.stack(planes)
        total_bytes = sum(r["bytes"] for r in records)
        bits = {
            part: sum(r["bits"]["actual"].get(part, 0) for r in records if not r["constant"])
            for part in PARTS
        }
        estimated = sum(r["bits"]["estimated"]["total"] for r in records if not r["constant"])
        macs = records[0].get("macs_per_voxel")
    else:
        decoded, record, decode_seconds = code(array, spacing, settings, lam, seed)
        total_bytes = record["bytes"]
        bits = {
            p: record["bits"]["actual"][p] for p in ("parameters", "latents", "header", "framing")
        }
        estimated = record["bits"]["estimated"]["total"]
        macs = record["macs_per_voxel"]
    return {
        "lambda": lam,
        "seed": seed,
        "slice_by_slice": slice_by_slice,
        "iterations": settings.iterations,
        "settings": settings.as_dict(),
        "bytes": total_bytes,
        "bits_per_voxel": 8 * total_bytes / array.size,
        "psnr_8bit_db": psnr_8bit(array, decoded, minmax_window(array)),
        "psnr_native_db": psnr_native(array, decoded),
        "bits": bits,
        "estimated_payload_bits": estimated,
        "coded_bits": bits["parameters"] + bits["latents"],
        "encode_seconds": time.perf_counter() - start - decode_seconds,
        "decode_seconds": decode_seconds,
        "macs_per_voxel": macs,
    }


def rate_at_psnr(curve: list[tuple[float, float]], psnr_db: float) -> float | None:
    """An anchor's bits per voxel at ``psnr_db``: linear in log rate between its two points
    around it (its upper envelope), None outside its range."""
    points = sorted(curve, key=lambda p: p[1])
    for (r0, d0), (r1, d1) in zip(points[:-1], points[1:], strict=True):
        if d0 <= psnr_db <= d1 and d1 > d0:
            t = (psnr_db - d0) / (d1 - d0)
            return float(np.exp(np.log(r0) + t * (np.log(r1) - np.log(r0))))
    return None


def bd_rate(anchor: list[tuple[float, float]], test: list[tuple[float, float]]) -> float | None:
    """Bjontegaard delta rate (%) of ``test`` against ``anchor``, (bpv, dB) points: log rate
    as a cubic in PSNR for each (the anchor's points nearest the overlap, at most 4 below or
    above it), integrated over the PSNR range both cover; None without an overlap."""
    low = max(min(d for _, d in anchor), min(d for _, d in test))
    high = min(max(d for _, d in anchor), max(d for _, d in test))
    if high <= low or len(test) < 2:
        return None
    inside = [p for p in anchor if low <= p[1] <= high]
    below = sorted((p for p in anchor if p[1] < low), key=lambda p: -p[1])[:1]
    above = sorted((p for p in anchor if p[1] > high), key=lambda p: p[1])[:1]
    anchor = inside + below + above

    def integral(points):
        rates, dbs = np.log10([p[0] for p in points]), np.array([p[1] for p in points])
        poly = np.polyint(np.polyfit(dbs, rates, min(3, len(points) - 1)))
        return (np.polyval(poly, high) - np.polyval(poly, low)) / (high - low)

    return float((10 ** (integral(test) - integral(anchor)) - 1) * 100)


def jpeg2000_slice_curve(image: np.ndarray) -> list[tuple[float, float]]:
    """(bpv, 8-bit PSNR) of the project's JPEG 2000 (``volinr.codecs``) over its sweep."""
    from volinr.codecs import CODECS, CodecSetting

    codec, points = CODECS["jpeg2000"], []
    for level in range(46, 112, 2):
        setting = CodecSetting("jpeg2000", float(level), False, None)
        decoded = codec.decode(codec.encode(image, setting), setting, image.shape)
        bpv = 8 * len(codec.encode(image, setting)) / image.size
        points.append((bpv, psnr_8bit(image, decoded, minmax_window(image))))
    return points


def summary(jsonl: Path, anchors: dict[str, list[tuple[float, float]]]) -> str:
    rows = [json.loads(line) for line in jsonl.read_text().splitlines()]
    lines = [
        "| label | lambda | iterations | bpv | PSNR 8-bit dB | PSNR native dB | parameters / "
        "latents / header+framing bits | trailing zeros dropped | est / coded bits | encode s "
        "| decode s | " + " | ".join(f"{name} bpv at same PSNR (ratio)" for name in anchors) + " |",
        "|" + "---|" * (11 + len(anchors)),
    ]
    for r in sorted(rows, key=lambda r: (r["label"], r["bits_per_voxel"])):
        b = r["bits"]
        cells = []
        for curve in anchors.values():
            rate = rate_at_psnr(curve, r["psnr_8bit_db"])
            cells.append("-" if rate is None else f"{rate:.4f} ({r['bits_per_voxel'] / rate:.2f}x)")
        lines.append(
            f"| {r['label']} | {r['lambda']:g} | {r['iterations']} | {r['bits_per_voxel']:.4f} | "
            f"{r['psnr_8bit_db']:.2f} | {r['psnr_native_db']:.2f} | {b['parameters']} / "
            f"{b['latents']} / {b['header'] + b['framing']} | "
            f"{b.get('trailing_zero_bits_dropped', 0)} | {r['estimated_payload_bits']:.0f} / "
            f"{r.get('coded_bits', r.get('payload_bits'))} | {r['encode_seconds']:.0f} | "
            f"{r['decode_seconds']:.2f} | " + " | ".join(cells) + " |"
        )
    curves: dict[str, list[tuple[float, float]]] = {}
    for r in rows:
        curves.setdefault(r["label"], []).append((r["bits_per_voxel"], r["psnr_8bit_db"]))
    lines.append("")
    for label, curve in curves.items():
        for name, anchor in anchors.items():
            value = bd_rate(anchor, curve)
            if value is not None and len(curve) >= 3:
                lines.append(f"- BD-rate of '{label}' against {name}: {value:+.1f}%")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image", choices=("slice", "headsq"), required=True)
    parser.add_argument("--headsq", type=Path, help="headsq.npy (int16 93x64x64)")
    parser.add_argument("--slice-by-slice", action="store_true")
    parser.add_argument("--lam", type=float, nargs="+", default=[])
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE")
    parser.add_argument("--label", default="", help="a name for this run (e.g. an ablation)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument(
        "--summarise", action="store_true", help="print --out as a table against JPEG 2000"
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.summarise:
        anchors = {}
        if args.image == "slice":
            anchors["JPEG 2000"] = jpeg2000_slice_curve(load("slice", None)[0])
        print(summary(args.out, anchors))
        return
    torch.set_num_threads(args.threads)
    array, spacing = load(args.image, args.headsq)
    overrides = {k: parse_value(v) for k, v in (item.split("=", 1) for item in args.set)}
    settings = CodecSettings.make(**overrides)
    for lam in args.lam:
        result = point(array, spacing, settings, lam, args.seed, args.slice_by_slice)
        result |= {
            "image": args.image,
            "shape": list(array.shape),
            "label": args.label,
            "overrides": {k: list(v) if isinstance(v, tuple) else v for k, v in overrides.items()},
            "threads": args.threads,
            "device": device_info(torch.device("cpu"))["name"],
            "commit": git_commit(),
        }
        with open(args.out, "a") as handle:
            handle.write(json.dumps(result) + "\n")
        log.info(
            "%s%s lam=%g: %.4f bpv, %.2f dB 8-bit, %.2f dB native, params %d / latents %d / "
            "header %d bits, %.0f s encode, %.2f s decode",
            args.image, " (slice by slice)" if args.slice_by_slice else "", lam,
            result["bits_per_voxel"], result["psnr_8bit_db"], result["psnr_native_db"],
            result["bits"]["parameters"], result["bits"]["latents"],
            result["bits"]["header"] + result["bits"]["framing"], result["encode_seconds"],
            result["decode_seconds"],
        )  # fmt: skip


if __name__ == "__main__":
    main()
