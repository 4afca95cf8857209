"""Tuning runs of the neural codec on images that are NOT evaluated (dev tool, not imported).

Images: the synthetic phantom and the SR-training CT frames; never 693_UNCR or headsq.
Each run encodes one image at one lambda with settings overrides, decodes the file, and
appends one JSON line (settings, bytes, PSNR, bits split, seconds) to ``--out``.

    python benchmarks/neural_codec_tuning.py --image ct_small --lam 3e-4 \
        --set iterations=800 learning_rate=0.02 --out benchmarks/results/tuning.jsonl

``--coding-variants KEY=VALUE ...``: after each run, code the same trained model again with
each of these settings changed (settings the training does not read, such as
network_refinement_passes): a paired comparison free of the training's seed-to-seed spread.
``refinement_sample_voxels=N`` is such a variant too, though not a setting: it sets
``regions.REFINEMENT_SAMPLE_VOXELS`` for that coding (what the refinement's sample of a large
image costs, measured on a small one).
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import time
from pathlib import Path

import numpy as np
import torch

from volinr.data.dicom_frames import read_dicom_frames
from volinr.data.phantom import synthetic_head_phantom
from volinr.metrics import minmax_window, psnr_8bit, psnr_native
from volinr.neural_codec import codec, regions
from volinr.neural_codec.codec import decode, encode
from volinr.neural_codec.settings import CodecSettings
from volinr.provenance import git_commit

log = logging.getLogger("neural_codec_tuning")
COMMIT = git_commit()  # the code this run imported (an editable install changes under it)

TUNING_IMAGES = {
    "phantom": lambda: synthetic_head_phantom((48, 256, 256), seed=0).voxels[24],
    "phantom3d": lambda: synthetic_head_phantom((32, 64, 64), seed=0).voxels,
    "ct_small": lambda: read_dicom_frames("pydicom:CT_small.dcm")[0].pixels,
    "ect0": lambda: read_dicom_frames("pydicom-data:eCT_Supplemental.dcm")[0].pixels,
    "explicit_vr": lambda: read_dicom_frames("pydicom-data:explicit_VR-UN.dcm")[0].pixels,
}


def parse_value(text: str):
    if text in ("true", "false"):
        return text == "true"
    if "," in text or text.startswith("("):
        return tuple(int(v) for v in text.strip("()").split(",") if v)
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


CODING_ONLY = {"network_refinement_passes"}  # settings the training never reads
MODULE_KNOBS = {"refinement_sample_voxels": (regions, "REFINEMENT_SAMPLE_VOXELS")}  # dev only


class ReusedTraining:
    """``codec.train`` that trains once and hands every later call a copy of that result:
    the coding variants of one run then start from the very same trained model."""

    def __init__(self):
        self.real, self.cached = codec.train, None

    def __call__(self, make_model, target, lam, settings, seed, block_edge):
        key = (lam, seed, block_edge, target.shape, self._training_part(settings))
        if self.cached is None or self.cached[0] != key:
            self.cached = (key, self.real(make_model, target, lam, settings, seed, block_edge))
        return copy.deepcopy(self.cached[1])

    @staticmethod
    def _training_part(settings: CodecSettings) -> tuple:
        return tuple(
            sorted((k, str(v)) for k, v in settings.as_dict().items() if k not in CODING_ONLY)
        )


def run(image_name: str, lam: float, overrides: dict, seed: int) -> dict:
    image = np.asarray(TUNING_IMAGES[image_name](), dtype=np.float32)
    settings = CodecSettings.make(**{k: v for k, v in overrides.items() if k not in MODULE_KNOBS})
    knobs = {MODULE_KNOBS[k]: v for k, v in overrides.items() if k in MODULE_KNOBS}
    saved = {(module, name): getattr(module, name) for module, name in knobs}
    for (module, name), value in knobs.items():
        setattr(module, name, value)
    start = time.perf_counter()
    try:
        encoded = encode(image, None, settings, lam=lam, seed=seed)
    finally:
        for (module, name), value in saved.items():
            setattr(module, name, value)
    encode_seconds = time.perf_counter() - start
    start = time.perf_counter()
    decoded = decode(encoded.data, image_name)
    decode_seconds = time.perf_counter() - start
    assert np.array_equal(decoded, encoded.reconstruction)
    record = encoded.record
    bits = record["bits"]
    return {
        "image": image_name,
        "shape": list(image.shape),
        "lambda": lam,
        "seed": seed,
        "overrides": {k: list(v) if isinstance(v, tuple) else v for k, v in overrides.items()},
        "iterations": record["iterations"],
        "bytes": len(encoded.data),
        "bits_per_voxel": record["bits_per_voxel"],
        "psnr_8bit_db": psnr_8bit(image, decoded, minmax_window(image)),
        "psnr_native_db": psnr_native(image, decoded),
        # the training objective on the final file: normalised MSE + lambda x bits per voxel
        "rd_cost": 10 ** (-psnr_native(image, decoded) / 10) + lam * record["bits_per_voxel"],
        "parameter_bits": bits["actual"]["parameters"],
        "latent_bits": bits["actual"]["latents"],
        "header_bits": bits["actual"]["header"] + bits["actual"]["framing"],
        "latent_bits_by_level": bits["estimated"].get("latents_by_level"),
        "estimated_payload_bits": bits["estimated"]["total"],
        "payload_bits": bits["actual"]["payload"],
        "coded_bits": bits["actual"].get("coded", bits["actual"]["payload"]),
        "training_seconds": record["seconds"]["training"],
        "quantisation_seconds": record["seconds"]["quantisation"],
        "encode_seconds": encode_seconds,
        "decode_seconds": decode_seconds,
        "macs_per_voxel": record["macs_per_voxel"]["total"],
        "final_curve_point": record["curve"][-1],
        # the rounded loss's best and its last: the flag "loss rose at the end" compares them
        "best_rounded_loss": record["training"]["best_rounded_loss"],
        "loss_rose_at_end": record["training"]["loss_rose_at_end"],
        "commit": COMMIT,
    }


def jpeg2000_curve(image_name: str) -> list[tuple[float, float]]:
    """(bits per voxel, 8-bit PSNR) of JPEG 2000 on the image, over its target-PSNR knob."""
    from volinr.codecs import CODECS, CodecSetting

    image = np.asarray(TUNING_IMAGES[image_name](), dtype=np.float32)
    codec = CODECS["jpeg2000"]
    points = []
    for level in range(50, 100, 3):
        setting = CodecSetting("jpeg2000", float(level), False, None)
        data = codec.encode(image, setting)
        decoded = codec.decode(data, setting, image.shape)
        points.append((8 * len(data) / image.size, psnr_8bit(image, decoded, minmax_window(image))))
    return points


def summary_table(jsonl: Path) -> str:
    """Markdown rows of every run in a JSON-lines file, in the order they ran."""
    header = [
        "| image | lambda | seed | settings changed | iterations | bpv | PSNR 8-bit dB | "
        "PSNR native dB | RD cost (MSE + lambda bpv) | param / latent bits | est / file "
        "payload bits | encode s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    lines: list[str] = []
    current = None
    for line in jsonl.read_text().splitlines():
        r = json.loads(line)
        if r.get("round", "") != current or not lines:
            current = r.get("round", "")
            lines += (
                ["", f"Round {current} (commit {r.get('commit', '?')[:7]}):", ""] if current else []
            ) + header
        changes = ", ".join(f"{k}={v}" for k, v in r["overrides"].items() if k != "iterations")
        lines.append(
            f"| {r['image']} | {r['lambda']:g} | {r.get('seed', 0)} | {changes or '-'} | "
            f"{r['iterations']} | "
            f"{r['bits_per_voxel']:.4f} | {r['psnr_8bit_db']:.2f} | {r['psnr_native_db']:.2f} | "
            f"{r.get('rd_cost', float('nan')):.3e} | {r['parameter_bits']} / {r['latent_bits']} "
            f"| {r['estimated_payload_bits']:.0f} / {r['payload_bits']} | "
            f"{r['encode_seconds']:.0f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image", choices=sorted(TUNING_IMAGES))
    parser.add_argument("--lam", type=float, nargs="+")
    parser.add_argument("--set", nargs="*", action="extend", default=[], metavar="KEY=VALUE")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--round", default="", help="the round's description, kept with the row")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--jpeg2000", action="store_true", help="log JPEG 2000's curve first")
    parser.add_argument("--summarise", action="store_true", help="print --out as a table")
    parser.add_argument(
        "--coding-variants", nargs="*", default=[], metavar="KEY=VALUE",
        help=f"code each run's trained model again with one of these changed "
        f"({sorted(CODING_ONLY | MODULE_KNOBS.keys())})",
    )  # fmt: skip
    args = parser.parse_args()
    if args.summarise:
        print(summary_table(args.out))
        return
    if not args.image or not args.lam:
        parser.error("--image and --lam are needed to run")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.jpeg2000:
        for bpv, db in jpeg2000_curve(args.image):
            log.info("jpeg2000 %s: %.4f bpv, %.2f dB (8-bit)", args.image, bpv, db)
    torch.set_num_threads(args.threads)
    overrides = dict(item.split("=", 1) for item in args.set)
    overrides = {key: parse_value(value) for key, value in overrides.items()}
    variants = [{}]
    for item in args.coding_variants:
        key, value = item.split("=", 1)
        if key not in CODING_ONLY | MODULE_KNOBS.keys():
            parser.error(f"{key} is read by the training: not a coding variant")
        variants.append({key: parse_value(value)})
    codec.train = ReusedTraining()
    for lam, variant in ((lam, v) for lam in args.lam for v in variants):
        result = run(args.image, lam, overrides | variant, args.seed) | {"round": args.round}
        with open(args.out, "a") as handle:
            handle.write(json.dumps(result) + "\n")
        log.info(
            "%s lam=%g %s: %.4f bpv, %.2f dB (8-bit), %.2f dB native, cost %.3g, params %d / "
            "latents %d bits, est %.0f vs %d payload bits, %.0f s",
            args.image, lam, overrides, result["bits_per_voxel"], result["psnr_8bit_db"],
            result["psnr_native_db"], result["rd_cost"], result["parameter_bits"],
            result["latent_bits"],
            result["estimated_payload_bits"], result["payload_bits"], result["encode_seconds"],
        )  # fmt: skip


if __name__ == "__main__":
    main()
