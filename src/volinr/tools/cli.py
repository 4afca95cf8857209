"""`volinr-dev <tool>`: the developer tools, off the pipeline's path (no rule calls them).

- ``bench``: SIREN fitting speed against a reference loop, and the roofline ratio;
- ``bench-sr``: SRDenseNet training and inference speed by variant;
- ``publish-sr``: copy a trained SR checkpoint into ``models/`` with its log, curve and sha256;
- ``readme``: put a run's summary and the committed benchmark results into README.md;
- ``replicate-reference``: keep a replicate run's per-seed SIREN PSNRs for the default tables.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from volinr import arguments as a
from volinr.cli import add_common, run

TOOLS = {
    "bench": "volinr.tools.stages:run_bench",
    "bench-sr": "volinr.tools.stages:run_bench_sr",
    "publish-sr": "volinr.tools.stages:run_publish_sr",
    "readme": "volinr.tools.stages:run_readme",
    "replicate-reference": "volinr.tools.stages:run_replicate_reference",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="volinr-dev", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("bench", help="SIREN fitting speed: ours vs a reference loop, roofline")
    p.add_argument("--layers", type=a.positive_int, nargs="+", default=[2, 3, 4])
    p.add_argument("--iterations", type=a.positive_int, default=30)
    p.add_argument(
        "--variants",
        nargs="+",
        choices=("default", "compiled", "bfloat16", "tf32"),
        default=["default"],
        help="our loop's variants (tf32: CUDA only)",
    )
    p.add_argument("--smoke", action="store_true", help="one tiny configuration (for CI)")
    p.add_argument(
        "--targets", nargs="+", default=[], help="a subset of the configurations (default: all)"
    )
    p.add_argument("--out-dir", type=a.output_dir, default="results/benchmarks")
    p.add_argument("--stem", default="fit_speed", help="output file name stem")
    add_common(p)

    p = sub.add_parser("bench-sr", help="SRDenseNet training and inference speed, by variant")
    p.add_argument("--steps", type=a.positive_int, default=20, help="timed training steps")
    p.add_argument("--patch", type=a.positive_int, default=24, help="LR training patch side")
    p.add_argument("--batch", type=a.positive_int, default=16)
    p.add_argument("--slice-size", type=a.positive_int, default=512, help="full-resolution side")
    p.add_argument("--checkpoint", default="", help="SR weights for inference (default: random)")
    p.add_argument("--out-dir", type=a.output_dir, default="results/benchmarks")
    p.add_argument("--stem", default="sr_speed", help="output file name stem")
    add_common(p)

    p = sub.add_parser("publish-sr", help="copy a trained SR checkpoint with its log and sha256")
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--curve", required=True)
    p.add_argument("--log", default="")
    p.add_argument("--out-dir", type=a.output_dir, required=True)
    p.add_argument("--name", required=True)

    p = sub.add_parser("readme", help="splice a run's summary and benchmark results into README")
    p.add_argument("--summary", required=True, help="results/summary.md of a run")
    p.add_argument(
        "--suite-summary", default="", help="a suite run's summary.md (the README leads with it)"
    )
    p.add_argument("--readme", type=a.output_file, default="README.md")
    p.add_argument(
        "--benchmark", nargs="*", default=[], help="benchmark Markdown files, in README order"
    )
    p.add_argument(
        "--codec-results",
        nargs="*",
        default=[],
        help="the INR codecs' committed results (Markdown), for the 'INR codecs on CT' section",
    )

    p = sub.add_parser(
        "replicate-reference",
        help="a replicate run's per-seed SIREN PSNRs, quoted by the default run's Table 6",
    )
    p.add_argument(
        "--rows", nargs="+", required=True, help="the run's siren_lr_sr and siren_hr rd JSONs"
    )
    p.add_argument("--out", type=a.output_file, required=True, help="the reference (JSON)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    return run(build_parser(), TOOLS, argv)


if __name__ == "__main__":
    raise SystemExit(main())
