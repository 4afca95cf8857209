"""The developer tools' commands: speed benchmarks and publishing the SR checkpoint."""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

from volinr import provenance
from volinr.errors import InputError
from volinr.io import sha256_file, write_json
from volinr.outputs import atomic_path
from volinr.stages.common import device_from_args

log = logging.getLogger(__name__)


def run_publish_sr(args) -> None:
    from volinr.super_resolution import load_sr_checkpoint

    _, payload = load_sr_checkpoint(args.checkpoint)
    out_dir = Path(args.out_dir)
    target = out_dir / f"{args.name}.pt"
    block = provenance.record(args)
    provenance.write_sidecar(out_dir / f"{args.name}.curve.csv", block)
    with atomic_path(target) as tmp:
        shutil.copyfile(args.checkpoint, tmp)
        # the copy is renamed into place with the other outputs, at the end
        sha256, size = sha256_file(tmp), tmp.stat().st_size
    with atomic_path(out_dir / f"{args.name}.curve.csv") as tmp:
        shutil.copyfile(args.curve, tmp)
    if args.log:
        with atomic_path(out_dir / f"{args.name}.log") as tmp:
            shutil.copyfile(args.log, tmp)
    last = payload["curve"][-1]
    write_json(
        out_dir / f"{args.name}.json",
        {
            "file": target.name,
            "sha256": sha256,
            "bytes": size,
            "architecture": payload["config"],
            "training": {k: v for k, v in payload["training"].items() if k != "split"},
            "training_split": payload["training"]["split"],
            "final_monitor": last,
            "provenance": block,
        },
    )
    log.info("published %s (sha256 %s)", target, sha256)


def run_bench(args) -> None:
    from volinr.tools import bench

    device = device_from_args(args)
    targets = bench.SMOKE_TARGETS if args.smoke else bench.TARGETS
    if args.targets:
        unknown = sorted(set(args.targets) - set(targets))
        if unknown:
            raise InputError(f"unknown benchmark targets {unknown}; known: {sorted(targets)}")
        targets = {name: targets[name] for name in args.targets}
    load_before = os.getloadavg()[0]  # other work on the machine skews every timing
    table = bench.run_benchmark(targets, args.layers, args.iterations, args.variants, device)
    command = (
        f"volinr-dev bench --layers {' '.join(map(str, args.layers))} "
        f"--iterations {args.iterations}"
        f" --variants {' '.join(args.variants)}{' --smoke' if args.smoke else ''}"
        f"{' --targets ' + ' '.join(args.targets) if args.targets else ''}"
        f" --threads {args.threads} --device {args.device}"
    )
    meta = bench.benchmark_meta(device, args.iterations, command)
    meta["load_average_1min"] = {"before": load_before, "after": os.getloadavg()[0]}
    bench.write_results(table, meta, Path(args.out_dir), args.stem)


def run_bench_sr(args) -> None:
    from volinr.tools import bench_sr

    device = device_from_args(args)
    checkpoint = args.checkpoint or None
    load_before = os.getloadavg()[0]
    table = bench_sr.run_sr_benchmark(
        device, args.steps, args.patch, args.batch, args.slice_size, checkpoint=checkpoint
    )
    command = (
        f"volinr-dev bench-sr --steps {args.steps} --patch {args.patch} --batch {args.batch} "
        f"--slice-size {args.slice_size}{' --checkpoint ' + args.checkpoint if checkpoint else ''}"
        f" --threads {args.threads} --device {args.device}"
    )
    meta = bench_sr.sr_benchmark_meta(
        device, args.steps, args.patch, args.batch, args.slice_size, command, checkpoint
    )
    meta["load_average_1min"] = {"before": load_before, "after": os.getloadavg()[0]}
    bench_sr.write_sr_results(table, meta, Path(args.out_dir), args.stem)


def run_readme(args) -> None:
    """The README's generated sections: the run's summary (its Markdown without the provenance
    footer) and each benchmark's Markdown under its file name, in the order given."""
    from volinr.provenance import FOOTER_PREFIX
    from volinr.tools.readme import rebase_links, splice_sections

    def without_footer(path: str) -> str:
        text = Path(path).read_text().split(f"\n{FOOTER_PREFIX}")[0].rstrip()
        return rebase_links(text, Path(path), Path(args.readme))

    sections = {"results": without_footer(args.summary)}
    if args.suite_summary:
        sections["suite_results"] = without_footer(args.suite_summary)
    for name, paths in (("performance", args.benchmark), ("inr_codecs", args.codec_results)):
        if paths:
            # each file named by its path below the folder they all share
            common = Path(os.path.commonpath([Path(p).resolve().parent for p in paths]))
            parts = [
                f"### `{Path(path).resolve().relative_to(common).as_posix()}`\n\n"
                + rebase_links(Path(path).read_text(), Path(path), Path(args.readme))
                for path in paths
            ]
            sections[name] = "\n".join(parts)
    splice_sections(Path(args.readme), sections)


def run_replicate_reference(args) -> None:
    from volinr.report.replicates import reference_from_rows

    reference = reference_from_rows(args.rows)
    write_json(args.out, reference)
    log.info("%d fits of %s into %s", len(reference["records"]), reference["git_commits"], args.out)
