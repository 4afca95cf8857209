"""The command line's report subcommands: figures, the run's summary, the suite's report."""

from __future__ import annotations

from volinr import arguments as a


def add_report_commands(sub) -> None:
    p = sub.add_parser("figures", help="the paper's figures (and volume mode's) for a run")
    p.add_argument("--results", required=True, help="results folder")
    p.add_argument("--tables-dir", required=True)
    p.add_argument("--layers", type=a.positive_int, nargs="+", required=True)
    p.add_argument("--seed", type=a.non_negative_int, default=0, help="the seed shown")
    p.add_argument("--mode", choices=["slice", "volume"], default="slice")
    p.add_argument(
        "--kinds",
        nargs="+",
        choices=["lr-fit", "pipeline", "baseline", "bars", "comparison", "sr-training",
                 "per-slice", "orthogonal"],
        default=[],
        help="only these figures (default: all of the mode)",
    )  # fmt: skip
    p.add_argument("--out-dir", type=a.output_dir, required=True, help="figures folder")

    p = sub.add_parser("summary", help="Markdown summary of a run (its tables' verdicts)")
    p.add_argument("--tables-dir", required=True)
    p.add_argument("--results", required=True, help="results folder (logs, benchmarks)")
    p.add_argument(
        "--methods",
        nargs="+",
        default=None,
        help="the run's methods (default: all, the paper's tables included); without every "
        "one of the paper's (siren_lr_sr, siren_hr, true_lr) the summary reads no paper table",
    )
    p.add_argument("--out", type=a.output_file, required=True)

    p = sub.add_parser("suite-report", help="the suite's tables across its datasets")
    p.add_argument(
        "--dataset",
        nargs=5,
        action="append",
        required=True,
        metavar=("NAME", "TABLES_DIR", "ANATOMY", "PAPER", "LICENCE"),
        help="one dataset's run: its name, tables folder, anatomy, paper or no-paper (whether "
        "it made the paper's tables) and licence",
    )
    p.add_argument("--out-dir", type=a.output_dir, required=True, help="the suite's tables")
    p.add_argument("--figure", type=a.output_file, required=True)
    p.add_argument("--summary", type=a.output_file, required=True)
