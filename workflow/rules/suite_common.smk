# Suite mode's globals and helpers: each dataset's config, the suite report's arguments.
import copy
import shlex

from snakemake.utils import update_config

from volinr.results_layout import Layout

SUITE = config["suite"]
SUITE_DIR = f"{Layout.of(config).results}/suite"
ENV = "../envs/volinr.yaml"


def dataset_config(name, entry):
    """The config of one dataset's run: the base config, its overrides, its own folder."""
    merged = copy.deepcopy({k: v for k, v in config.items() if k != "suite"})
    update_config(merged, copy.deepcopy(entry["config"]))
    merged["results_dir"] = f"{SUITE_DIR}/{name}"
    merged["suite"] = {}
    return merged


DATASET_CONFIGS = {name: dataset_config(name, entry) for name, entry in SUITE.items()}


def suite_dataset_args():
    args = []
    for name, entry in SUITE.items():
        methods_run = DATASET_CONFIGS[name]["rate_distortion"]["methods"]
        paper = "paper" if config_checks.paper_tables_made(methods_run) else "no-paper"
        fields = [
            name,
            f"{SUITE_DIR}/{name}/tables",
            entry["anatomy"],
            paper,
            entry["licence"],
        ]
        args.append("--dataset " + " ".join(shlex.quote(str(f)) for f in fields))
    return " ".join(args)
