"""Cool-chic's reference implementation as a benchmark-only peer of the project's neural codec:
the same image, the same metrics (``volinr.evaluation``), rates from Cool-chic's real files.

Cool-chic (Orange, BSD-3-Clause) is no dependency and is never imported: it runs from a local
copy in its own virtual environment (benchmarks/README.md). Having no grayscale input, it gets
each slice as a 16-bit PPM of three identical channels, (v - min) / (max - min) x 65535 (min,
max of the whole image); the decoded channels are averaged and mapped back. Bits per voxel: 8 x
the bytes of its whole bitstream file (headers included) / voxels. Finished points are reused.

    nice -n 19 python benchmarks/coolchic_peer.py --lambdas 0.004 0.001 0.0004 \
        --iterations 10000 --threads 1 --work-dir /tmp/coolchic --out /tmp/coolchic/peer
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import math
import os
import platform
import re
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from volinr import evaluation, metrics
from volinr.errors import InputError
from volinr.io import load_image, write_json
from volinr.outputs import atomic_path
from volinr.report.bd_rate import PSNR_COLUMNS, bd_metrics, rd_curve

log = logging.getLogger("coolchic_peer")
SOURCE = "pydicom-data:693_UNCR.dcm"
PEERS = Path(__file__).resolve().parents[1] / "peers"  # `make peer` installs it there
METHOD = "Cool-chic 5.0.1 (reference)"
PEAK = 65535  # 16-bit PPM
RANGE_BYTES = 8  # min and max as two float32: side information outside the bitstream
# Runs a Cool-chic script on N torch threads, timed after torch's import. Cool-chic imports
# torchvision but uses it only for PNG input, the Wasserstein loss and video; PyPI's (CUDA)
# torchvision cannot load on a CPU torch, so where absent, stand-ins raise if ever called.
BOOTSTRAP = """
import os, runpy, sys, time, types
import torch
torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"])); torch.set_num_interop_threads(1)
try:
    import torchvision.transforms.functional
except Exception:
    for n in [m for m in sys.modules if m.split(".")[0] == "torchvision"]: del sys.modules[n]
    def absent(name):
        if name.startswith("__"): raise AttributeError(name)
        def fail(*a, **k): raise RuntimeError(f"torchvision.{name} is absent (PPM input only)")
        return fail
    for n in ("", ".models", ".models.vgg", ".models.optical_flow", ".transforms",
              ".transforms.functional"):
        sys.modules["torchvision" + n] = mod = types.ModuleType("torchvision" + n)
        mod.__getattr__ = absent
script, sys.argv = sys.argv[1], sys.argv[1:]
sys.path.insert(0, os.path.dirname(script))
start = time.perf_counter()
try:
    runpy.run_path(script, run_name="__main__")
except SystemExit as end:
    if end.code not in (0, None): raise
with open(os.environ["CCPEER_SECONDS"], "w") as f: f.write(str(time.perf_counter() - start))
"""


def write_ppm(path: Path, plane: np.ndarray, low: float, high: float) -> None:
    """A 16-bit binary PPM (big-endian), the plane in all three channels."""
    scaled = (np.asarray(plane, np.float64) - low) / (high - low) * PEAK
    codes = np.clip(np.rint(scaled), 0, PEAK).astype(">u2")
    height, width = codes.shape
    with atomic_path(path, deferred=False) as tmp:
        tmp.write_bytes(f"P6\n{width} {height}\n{PEAK}\n".encode() + np.repeat(codes, 3).tobytes())


def read_ppm(path: Path) -> np.ndarray:
    """A binary PPM as (height, width, 3) integers (a 16-bit one is big-endian)."""
    data = path.read_bytes()
    header = re.match(rb"P6\s+(\d+)\s+(\d+)\s+(\d+)\s", data)
    width, height, peak = map(int, header.groups())
    dtype = ">u2" if peak > 255 else "u1"
    return np.frombuffer(data, dtype, 3 * width * height, header.end()).reshape(height, width, 3)


def run_coolchic(args, script: str, argv: list[str], log_path: Path) -> float:
    """Cool-chic's ``script`` with ``argv`` on ``args.threads`` threads; its seconds."""
    seconds = log_path.with_suffix(".seconds")
    env = os.environ | {"CCPEER_SECONDS": str(seconds), "CUDA_VISIBLE_DEVICES": ""}
    env |= {k: str(args.threads) for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "MAX_JOBS")}
    command = [str(args.python), "-c", BOOTSTRAP, str(args.coolchic / script), *argv]
    with open(log_path, "w") as handle:
        code = subprocess.run(command, cwd=args.coolchic, env=env, stdout=handle, stderr=handle)
    if code.returncode != 0:
        raise SystemExit(f"Cool-chic {script} failed (exit {code.returncode}); see {log_path}")
    return float(seconds.read_text())


def code_slice(args, plane: np.ndarray, index: int, lam: float, window, work: Path) -> dict:
    """Encode and decode one slice at ``lam``; reuse its result if it exists."""
    source = work / "input" / f"slice{index:03d}.ppm"
    if not source.exists():
        write_ppm(source, plane, *window)
    name = f"lambda{lam:g}_itr{'debug' if args.debug else args.iterations}"
    folder = work / "coolchic" / name / f"slice{index:03d}"
    result = folder / "result.json"
    if result.exists():
        return json.loads(result.read_text())
    for stale in folder.glob("*") if folder.exists() else []:  # an interrupted encoding
        stale.unlink()
    folder.mkdir(parents=True, exist_ok=True)
    bitstream, decoded = folder / "bitstream.cool", folder / "decoded.ppm"
    argv = [f"--input={source}", f"--output={bitstream}", f"--workdir={folder}",
            f"--dec_cfg_residue={args.coolchic / args.dec_cfg}", f"--n_itr={args.iterations}",
            f"--lmbda={lam}"] + (["--debug"] if args.debug else [])  # fmt: skip
    encode = run_coolchic(args, "cc_encode.py", argv, folder / "encode.log")
    decode = run_coolchic(
        args, "cc_decode.py", [f"--input={bitstream}", f"--output={decoded}"], folder / "decode.log"
    )
    record = {"bytes": bitstream.stat().st_size, "encode_seconds": encode,
              "decode_seconds": decode, "decoded": str(decoded)}  # fmt: skip
    with atomic_path(result, deferred=False) as tmp:
        tmp.write_text(json.dumps(record))
    return record


def code_point(args, reference: np.ndarray, lam: float, work: Path, units: str) -> dict:
    """One lambda over every slice, measured as the project's ``volinr rd`` rows are."""
    group = f"lambda{lam:g}_itr{'debug' if args.debug else args.iterations}"
    out = work / "points" / f"{group}.json"
    if out.exists():
        log.info("reusing %s", out)
        return json.loads(out.read_text())
    slices = reference if reference.ndim == 3 else reference[None]
    window = (float(np.min(reference)), float(np.max(reference)))
    records, planes = [], []
    for index, plane in enumerate(slices):
        record = code_slice(args, plane, index, lam, window, work)
        codes = read_ppm(Path(record["decoded"])).astype(np.float64).mean(axis=2)
        planes.append(window[0] + codes / PEAK * (window[1] - window[0]))
        records.append(record)
    values = np.stack(planes).reshape(reference.shape)
    if reference.dtype.kind in "iu":  # the project's codec's policy: round to the dtype
        info = np.iinfo(reference.dtype)
        reconstruction = np.clip(np.rint(values), info.min, info.max).astype(reference.dtype)
    else:
        reconstruction = values.astype(np.float32)
    evaluation.check_pair(reference, reconstruction, "reference", METHOD)
    minmax, tissue = evaluation.windows(reference, args.tissue_window, "reference")
    quality = evaluation.quality(reference, reconstruction, minmax, tissue)
    total = sum(r["bytes"] for r in records)
    row = {
        "method": METHOD + (" [debug preset]" if args.debug else ""),
        "setting": f"lambda {lam:g}", "family": "coolchic_peer", "kind": "peer codec",
        "group": group, "point": f"{lam:g}", "lambda": lam,
        "iterations": "debug preset (110)" if args.debug else args.iterations,
        "threads": args.threads, "slices": len(slices), "bytes": total,
        "what_bytes_count": "Cool-chic's whole bitstream file(s), headers included",
        "bits_per_voxel": metrics.bits_per_voxel(total, reference.size),
        "bits_per_voxel_with_range": metrics.bits_per_voxel(total + RANGE_BYTES, reference.size),
        **quality,
        "max_abs_error_hu": evaluation.max_abs_error_hu(reference, reconstruction),
        "units": units,
        "encode_seconds": sum(r["encode_seconds"] for r in records),
        "decode_seconds": sum(r["decode_seconds"] for r in records),
        **encoder_rate_split(work / "coolchic" / group, len(slices)),
    }  # fmt: skip
    row = evaluation.finish(row, str(out))
    write_json(out, row)
    return json.loads(out.read_text())


ENCODER_SPLIT = ("coolchic_estimated_network_bpp", "coolchic_estimated_latent_bpp")


def encoder_rate_split(folder: Path, slices: int) -> dict:
    """Cool-chic's own estimate of its networks' and latents' bits per pixel (its encoder's
    results table, the mean over slices); empty where it wrote none."""
    found = {"network_bpp": [], "latent_bpp": []}
    for index in range(slices):
        table = folder / f"slice{index:03d}" / "0000-results_encoder.tsv"
        if not table.exists():
            return {}
        row = pd.read_csv(table, sep=r"\s+").iloc[-1]
        found["network_bpp"].append(float(row["nn_bpp"]))
        found["latent_bpp"].append(float(row["latent_bpp"]))
    return {f"coolchic_estimated_{k}": float(np.mean(v)) for k, v in found.items()}


def load_reference(args, work: Path) -> tuple[np.ndarray, dict]:
    path = args.image
    if path is None:  # the project's embedded slice, by the project's own loader
        path = work / "eval.npy"
        if not path.exists():
            command = ["prepare", "--source", SOURCE, "--frame", "0", "--out", str(path)]
            subprocess.run([sys.executable, "-m", "volinr", *command], check=True)
    try:
        voxels, meta = load_image(path)
    except InputError as err:  # e.g. data/headsq's sidecar is not volinr's: the array alone
        log.warning("%s; reading the array alone", err)
        voxels, meta = np.load(path, allow_pickle=False), {}
    if voxels.ndim == 3 and not args.slices:
        raise SystemExit(f"{path} is a volume: pass --slices to code its axial slices")
    if args.limit_slices and voxels.ndim == 3:
        voxels = voxels[: args.limit_slices]
    if args.crop:
        top, left = ((n - args.crop) // 2 for n in voxels.shape[-2:])
        voxels = voxels[..., top : top + args.crop, left : left + args.crop]
    units = meta.get("units") or "unknown"
    return np.ascontiguousarray(voxels), {"path": str(path), "units": units}


def load_table(path: Path) -> pd.DataFrame:
    """Rate-distortion rows: ``volinr rd`` JSONs (a file or a folder of them), or a
    ``table_rate_distortion`` CSV or Markdown table."""
    from volinr.report.table_io import load_rows

    if path.is_dir():
        found = sorted(path.rglob("*.json")) or sorted(path.glob("table_rate_distortion.csv"))
        found = found or sorted(path.glob("table_rate_distortion.md"))
        return pd.concat([load_table(p) for p in found], ignore_index=True)
    if path.suffix == ".json":
        return load_rows([path])
    if path.suffix == ".csv":
        return pd.read_csv(path)
    lines = [line for line in path.read_text().splitlines() if line.startswith("|")]
    cells = [[c.strip() for c in line.strip("|").split("|")] for line in lines]
    table = pd.DataFrame(cells[2:], columns=cells[0])  # cells[1]: the alignment row
    for column in ("bits_per_voxel", *PSNR_COLUMNS, "ssim"):
        table[column] = [math.nan if v == "n/a" else float(v) for v in table[column]]
    return table


def bd_rows(points: pd.DataFrame, others: pd.DataFrame) -> list[dict]:
    """BD-rate and BD-PSNR of the peer's curve against every method of ``others``."""
    others = others[(others["family"] != "published") & (others["method"] != METHOD)]
    rows = []
    for label, group in others.groupby("method", sort=True):
        for column in PSNR_COLUMNS:
            result = bd_metrics(rd_curve(points, column), rd_curve(group, column))
            rows.append({"method": points["method"].iloc[0], "anchor": label, "psnr": column,
                         **result})  # fmt: skip
    return [{k: None if isinstance(v, float) and math.isnan(v) else v for k, v in r.items()}
            for r in rows]  # fmt: skip


def machine(threads: int) -> dict:
    names = re.findall(r"model name\s*:\s*(.+)", Path("/proc/cpuinfo").read_text())
    cpu = names[0].strip() if names else platform.processor() or platform.machine()
    return {"cpu": cpu, "cpus": os.cpu_count(), "threads": threads, "device": "cpu"}


def coolchic_commit(folder: Path) -> str:
    """The Cool-chic commit: a git clone's HEAD, else a COMMIT file (an exported copy)."""
    found = subprocess.run(
        ["git", "-C", str(folder), "rev-parse", "--show-toplevel", "HEAD"],
        capture_output=True,
        text=True,
    )
    lines = found.stdout.split()
    # a copy inside another repository (this one) is not a clone of Cool-chic
    if found.returncode == 0 and Path(lines[0]).resolve() == folder.resolve():
        return lines[1]
    commit_file = folder / "COMMIT"
    return commit_file.read_text().strip() if commit_file.exists() else "unknown"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--image", type=Path, help="a .npy slice or volume (default: the "
                        "embedded slice 693_UNCR, by `volinr prepare`)")  # fmt: skip
    parser.add_argument("--slices", action="store_true", help="code a volume slice by slice")
    parser.add_argument("--limit-slices", type=int, help="only the first N slices (a test)")
    parser.add_argument("--crop", type=int, help="centre crop to NxN (a smoke test)")
    parser.add_argument("--lambdas", type=float, nargs="+", required=True)
    parser.add_argument("--iterations", type=int, default=10000, help="Cool-chic's --n_itr "
                        "(its intra preset needs >= 2000; warm-up included)")  # fmt: skip
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--debug", action="store_true", help="Cool-chic's 110-iteration "
                        "plumbing preset (not a real operating point)")  # fmt: skip
    parser.add_argument("--coolchic", type=Path, default=PEERS / "Cool-Chic")
    parser.add_argument("--python", type=Path, default=PEERS / "coolchic-venv" / "bin" / "python")
    parser.add_argument("--dec-cfg", default="cfg/dec/intra/hop.cfg", help="in --coolchic")
    parser.add_argument("--tissue-window", type=float, nargs=2, default=[-1024.0, math.nan])
    parser.add_argument("--work-dir", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True, help="writes OUT.json and OUT.md")
    parser.add_argument("--rows-out", type=Path, help="the points as a `volinr rd` rows JSON "
                        "(for `volinr rate-distortion --rows`)")  # fmt: skip
    parser.add_argument("--bd-against", type=Path, nargs="+", default=[], help="rd rows JSON "
                        "files/folders or a table_rate_distortion .csv/.md")  # fmt: skip
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if args.iterations < 2000 and not args.debug:
        parser.error("Cool-chic's intra preset refuses --iterations below 2000")
    args.coolchic, work = args.coolchic.resolve(), args.work_dir.resolve()
    work.mkdir(parents=True, exist_ok=True)
    reference, source = load_reference(args, work)
    digest, stamp = hashlib.sha256(reference.tobytes()).hexdigest(), work / "reference.sha256"
    if stamp.exists() and stamp.read_text() != digest:
        raise SystemExit(f"{work} holds the results of another image: use another --work-dir")
    stamp.write_text(digest)
    log.info("reference %s %s; Cool-chic at %s", reference.shape, reference.dtype, args.coolchic)
    rows = []
    for lam in args.lambdas:
        rows.append(code_point(args, reference, lam, work, source["units"]))
        log.info("lambda %g: %.4g bpv, %.2f dB (8-bit)", lam, rows[-1]["bits_per_voxel"],
                 rows[-1]["psnr_8bit_minmax_db"])  # fmt: skip
    points = pd.DataFrame(rows)
    if args.bd_against and (args.crop or args.limit_slices):
        log.warning("--bd-against: the rows must be of the same (cropped) image")
    others = [load_table(p) for p in args.bd_against]
    bd = bd_rows(points, pd.concat(others)) if others else []
    commit = coolchic_commit(args.coolchic)
    record = {
        "method": METHOD, "coolchic": {"path": str(args.coolchic), "commit": commit,
                                       "dec_cfg": args.dec_cfg, "license": "BSD-3-Clause"},
        "machine": machine(args.threads), "image": source | {"shape": list(reference.shape)},
        "command": shlex.join(["python", *sys.argv]), "points": rows, "bd": bd,
        "bd_against": [str(p) for p in args.bd_against],
    }  # fmt: skip
    write_json(args.out.with_suffix(".json"), record)
    columns = ["method", "lambda", "iterations", "threads", "bits_per_voxel",
               "psnr_8bit_minmax_db", "psnr_native_db", "ssim", "encode_seconds",
               "decode_seconds", "bytes"]  # fmt: skip
    columns += [c for c in ENCODER_SPLIT if c in points]
    text = [
        f"# {METHOD} on {Path(source['path']).name} {tuple(reference.shape)}", "",
        f"`{record['command']}`", "",
        f"Cool-chic commit {commit}, decoder config `{args.dec_cfg}`, on {record['machine']['cpu']}"
        f" ({args.threads} thread(s), CPU). Bits per voxel: 8 x the bytes of Cool-chic's whole "
        "bitstream file(s), headers included / voxels; quality by `volinr.evaluation` on the "
        "decoded PPM's channel mean mapped back to the original range. Seconds: Cool-chic's "
        "encode (training, quantisation, bitstream and its own check decode) and decode "
        "scripts, after torch's import. coolchic_estimated_network_bpp / latent_bpp: Cool-chic's "
        "own estimate of its networks' and latents' bits per pixel (its encoder's results "
        "table).", "",
        points[columns].to_markdown(index=False, floatfmt=".4g"), "",
    ]  # fmt: skip
    if bd:
        text += ["## Bjontegaard delta (project's `volinr.report.bd_rate`; negative BD-rate: "
                 "fewer bits than the anchor)", "",
                 pd.DataFrame(bd).to_markdown(index=False, floatfmt=".4g"), ""]  # fmt: skip
    with atomic_path(args.out.with_suffix(".md"), deferred=False) as tmp:
        tmp.write_text("\n".join(text))
    if args.rows_out:
        write_json(args.rows_out, {"family": "coolchic_peer", "kind": "peer codec",
                                   "group": "coolchic", "counts": rows[0]["what_bytes_count"],
                                   "shared_assets": {}, "rows": rows})  # fmt: skip
    log.info("wrote %s(.json, .md)", args.out)


if __name__ == "__main__":
    main()
