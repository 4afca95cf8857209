"""Where the time of a `make run` goes: every job's Snakemake benchmark file, summed by rule.

Usage:
    /usr/bin/time -v make run 2> time.txt     # in a fresh clone
    python benchmarks/default_run.py CLONE/results/benchmarks --time time.txt \
        --out benchmarks/results/default_run
    # a suite (config/suite.yaml): every dataset's benchmark files, by rule and by dataset
    python benchmarks/default_run.py CLONE/results/suite --by-dataset --time time.txt \
        --command "..." --out benchmarks/results/suite_run

Writes OUT.md and OUT.json: the whole run's wall time (GNU time's "Elapsed" line: `make run`
with its install, or what --command says was timed; the workflow alone from the Makefile's
`time` line where there is one), and per rule (the method stage per family) the jobs, their
summed wall and CPU seconds and the longest job.
"""

import argparse
import json
import os
import platform
import re
import subprocess
from pathlib import Path

import pandas as pd

from volinr.methods import families


def _clock_seconds(text: str) -> float:
    """Seconds of an h:mm:ss(.ss) or m:ss(.ss) clock."""
    seconds = 0.0
    for part in text.split(":"):
        seconds = 60 * seconds + float(part)
    return seconds


def read_time(path: Path) -> dict:
    """The workflow's and the whole command's wall seconds, user and system CPU seconds."""
    text = path.read_text()
    whole = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): ([\d:.]+)", text)
    workflow = re.search(r"([\d:.]+)elapsed", text)  # the Makefile's `time` (GNU default format)
    user = re.search(r"User time \(seconds\): ([\d.]+)", text)
    system = re.search(r"System time \(seconds\): ([\d.]+)", text)
    if whole is None:
        raise SystemExit(f"{path}: no GNU time output ('Elapsed (wall clock) time')")
    return {
        "wall_seconds": _clock_seconds(whole.group(1)),
        "workflow_wall_seconds": _clock_seconds(workflow.group(1)) if workflow else None,
        "user_cpu_seconds": float(user.group(1)) if user else None,
        "system_cpu_seconds": float(system.group(1)) if system else None,
    }


def read_jobs(folder: Path) -> pd.DataFrame:
    rows = []
    for tsv in sorted(folder.rglob("*.tsv")):
        last = pd.read_csv(tsv, sep="\t").iloc[-1]
        # a rule with one job writes benchmarks/<rule>.tsv (a suite: <dataset>/benchmarks/...)
        rule = (
            tsv.stem if tsv.parent.name == "benchmarks" or tsv.parent == folder else tsv.parent.name
        )
        if rule == "rd":  # one benchmark file per method and group: name the family
            family = next(
                f for f in sorted(families(), key=len, reverse=True) if tsv.stem.startswith(f)
            )
            rule = f"rd: {family}"
        rows.append(
            {
                "dataset": tsv.relative_to(folder).parts[0],  # a suite's: results/suite/<name>
                "rule": rule,
                "job": tsv.stem,
                "wall_seconds": float(last["s"]),
                "cpu_seconds": float(last["cpu_time"]),
            }
        )
    if not rows:
        raise SystemExit(f"{folder}: no Snakemake benchmark files (*.tsv)")
    return pd.DataFrame(rows)


def summed(jobs: pd.DataFrame, by: str) -> pd.DataFrame:
    """Jobs, wall and CPU seconds summed, and the longest job, per ``by`` (most time first)."""
    return (
        jobs.groupby(by)
        .agg(
            jobs=("job", "count"),
            wall_seconds=("wall_seconds", "sum"),
            cpu_seconds=("cpu_seconds", "sum"),
            longest_job_seconds=("wall_seconds", "max"),
        )
        .sort_values("wall_seconds", ascending=False)
        .reset_index()
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("benchmarks", type=Path, help="a run's results/benchmarks folder")
    parser.add_argument("--time", type=Path, required=True, help="GNU time -v output of make run")
    parser.add_argument("--out", type=Path, required=True, help="output stem (.md and .json)")
    parser.add_argument(
        "--compare",
        type=Path,
        help="another run's results/benchmarks (e.g. with more --cores than cores): each job "
        "that both runs hold, side by side",
    )
    parser.add_argument("--compare-label", default="other run", help="what --compare's run was")
    parser.add_argument("--note", default="", help="a paragraph for the end of the .md")
    parser.add_argument(
        "--by-dataset",
        action="store_true",
        help="a suite's results/suite folder: also the time of each dataset's run",
    )
    parser.add_argument(
        "--command",
        default="`make run` from a fresh clone, install included",
        help="what the timed command was (Markdown)",
    )
    args = parser.parse_args()
    timing = read_time(args.time)
    jobs = read_jobs(args.benchmarks)
    by_rule = summed(jobs, "rule")
    commit = subprocess.run(
        ["git", "-C", str(args.benchmarks), "rev-parse", "HEAD"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    machine = f"{platform.machine()}, {len(os.sched_getaffinity(0))} cores"
    record = {"machine": machine, "commit": commit, **timing, "rules": by_rule.to_dict("records")}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    workflow = timing["workflow_wall_seconds"]
    workflow = f"; the workflow alone {workflow:.0f} s" if workflow is not None else ""
    lines = [
        f"Machine: {machine}; commit {commit}. {args.command}: "
        f"**{timing['wall_seconds']:.0f} s** wall "
        f"({timing['user_cpu_seconds']:.0f} s user, {timing['system_cpu_seconds']:.0f} s "
        f"system){workflow}.",
        "",
        "Per rule, from each job's Snakemake `benchmark:` file (wall and CPU seconds summed over "
        "the rule's jobs; jobs of different rules overlap where cores allow; the rules without a "
        "`benchmark:` file, data preparation, tables, figures and the report, are the rest):",
        "",
        by_rule.to_markdown(index=False, floatfmt=".1f"),
        "",
    ]
    if args.by_dataset:
        by_dataset = summed(jobs, "dataset")
        record["datasets"] = by_dataset.to_dict("records")
        lines += [
            "Per dataset (its jobs' `benchmark:` files summed; the suite's jobs of different "
            "datasets overlap where cores allow):",
            "",
            by_dataset.to_markdown(index=False, floatfmt=".1f"),
            "",
        ]
    if args.compare is not None:
        other = read_jobs(args.compare)
        both = jobs.merge(other, on=["rule", "job"], suffixes=("", "_other"))
        both["ratio"] = both["wall_seconds_other"] / both["wall_seconds"]
        record["compare"] = {"label": args.compare_label, "jobs": both.to_dict("records")}
        lines += [
            f"The same jobs in {args.compare_label} (wall seconds; ratio = that run's / this "
            "run's):",
            "",
            both[["rule", "job", "wall_seconds", "wall_seconds_other", "ratio"]].to_markdown(
                index=False, floatfmt=".2f"
            ),
            "",
        ]
    if args.note:
        record["note"] = args.note
        lines += [args.note, ""]
    args.out.with_suffix(".json").write_text(json.dumps(record, indent=1) + "\n")
    args.out.with_suffix(".md").write_text("\n".join(lines))


if __name__ == "__main__":
    main()
