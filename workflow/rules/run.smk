# One run of the benchmark on one dataset: every stage's rules and the default target.


include: "common.smk"


wildcard_constraints:
    target="lr|hr",
    layers=r"\d+",
    seed=r"\d+",
    method="|".join(sorted(methods.families())),
    group=r"[^/]+",


include: "data.smk"
include: "sr.smk"
include: "siren.smk"
include: "methods.smk"
include: "report.smk"
include: "export.smk"


# The default target (the Snakefile's rule all): every table, figure and export of the run.
DEFAULT_TARGETS = [
    rules.paper_tables.output if PAPER_MODE else [],
    rules.rate_distortion.output,
    rules.figures.output if PAPER_MODE else [],
    rules.summary.output,
    export_targets(),
]
