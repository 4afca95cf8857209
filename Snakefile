"""volinr: regenerate Sheibanifard & Yu (2023)'s slice experiment and its comparison tables.

snakemake --cores 4 --resources gpu=1            # embedded default (config/config.yaml)
snakemake --cores 4 --resources gpu=1 --configfile config/paper.yaml   # the paper's settings
"""

import json
from pathlib import Path

from snakemake.utils import min_version, validate


min_version("9.0")


configfile: str(Path(workflow.basedir) / "config/config.yaml")


validate(config, "workflow/schemas/config.schema.yaml", set_default=True)

# Rules call `volinr`; with --use-conda the package is taken from this checkout's src/.
SRC = str(Path(workflow.basedir) / "src")


shell.prefix(f"set -euo pipefail; export PYTHONPATH={SRC}${{{{PYTHONPATH:+:$PYTHONPATH}}}}; ")



def from_repo(path):
    """A relative path from the config: under the working directory, else under this repo."""
    if not path or Path(path).is_absolute() or Path(path).exists():
        return path
    return str(Path(workflow.basedir) / path)


config["published"] = from_repo(config["published"])
config["sr"]["checkpoint"] = from_repo(config["sr"]["checkpoint"])

R = "results"
LAYERS = config["siren"]["layers"]
SEEDS = config["siren"]["seeds"]
REFERENCE_METHODS = ["sr", "lanczos", "bicubic"]


def as_json(value):
    """A Python value as a single-quoted JSON shell argument."""
    return "'" + json.dumps(value).replace("'", "'\\''") + "'"


include: "workflow/rules/common.smk"
include: "workflow/rules/prepare.smk"
include: "workflow/rules/downsample.smk"
include: "workflow/rules/pretrain_sr.smk"
include: "workflow/rules/fit.smk"
include: "workflow/rules/baseline.smk"
include: "workflow/rules/reconstruct.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/aggregate.smk"


rule all:
    input:
        rules.aggregate_tables.output,
        FIGURES,
        rules.summary.output,
    default_target: True
