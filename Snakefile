"""volinr: regenerate Sheibanifard & Yu (2023)'s slice experiment and its comparison tables,
and run the same method on whole volumes (dataset.kind: dicom_series, nifti, phantom, download).

snakemake --cores 4 --resources gpu=1            # embedded default (config/config.yaml)
snakemake --cores 4 --resources gpu=1 --configfile config/paper.yaml   # the paper's settings
snakemake --cores 4 --resources gpu=1 --configfile config/volume_demo.yaml  # 3D, CPU minutes
"""

import sys
from pathlib import Path

from snakemake.exceptions import WorkflowError
from snakemake.utils import min_version, validate

min_version("9.0")


configfile: str(Path(workflow.basedir) / "config/config.yaml")


# Rules call `volinr`; with --use-conda the package is taken from this checkout's src/.
SRC = str(Path(workflow.basedir) / "src")
sys.path.insert(0, SRC)
from volinr import config_checks

SCHEMA = "workflow/schemas/config.schema.yaml"
# YAML 1.1 and --config leave `1e-3`, `10`, `true` as strings: read them as YAML 1.2 does.
config_checks.coerce_scalars(
    config, config_checks.load_schema(Path(workflow.basedir) / SCHEMA)
)
validate(config, SCHEMA, set_default=True)
# What the schema cannot say (NaN, empty ranges, missing files, contradictions): stop here.
CONFIG_PROBLEMS = config_checks.config_problems(config, workflow.basedir)
if CONFIG_PROBLEMS:
    raise WorkflowError("Error validating config file.\n" + "\n".join(CONFIG_PROBLEMS))


shell.prefix(
    f"set -euo pipefail; export PYTHONPATH={SRC}${{{{PYTHONPATH:+:$PYTHONPATH}}}}; "
)


include: "workflow/rules/common.smk"


wildcard_constraints:
    target="lr|hr",
    layers=r"\d+",
    seed=r"\d+",
    method="sr|lanczos|bicubic",
    kind="ours|baseline",
    quant=r"float32|float16|q\d+",


include: "workflow/rules/download.smk"
include: "workflow/rules/prepare.smk"
include: "workflow/rules/downsample.smk"
include: "workflow/rules/pretrain_sr.smk"
include: "workflow/rules/fit.smk"
include: "workflow/rules/baseline.smk"
include: "workflow/rules/reconstruct.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/compress.smk"
include: "workflow/rules/aggregate.smk"
include: "workflow/rules/export.smk"


rule all:
    default_target: True
    input:
        rules.aggregate_tables.output,
        FIGURES,
        rules.summary.output,
        EXPORTS,
