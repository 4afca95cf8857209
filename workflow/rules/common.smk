# Helpers shared by the stages: output locations, shell fragments, config paths.
import json
import shlex

R = "results"
LAYERS = config["siren"]["layers"]
SEEDS = config["siren"]["seeds"]
REFERENCE_METHODS = ["sr", "lanczos", "bicubic"]


def from_repo(path):
    """A relative path from the config: under the working directory, else under this repo."""
    if not path or Path(path).is_absolute() or Path(path).exists():
        return path
    return str(Path(workflow.basedir) / path)


config["published"] = from_repo(config["published"])
config["sr"]["checkpoint"] = from_repo(config["sr"]["checkpoint"])


ENV = "../../envs/volinr.yaml"
DEVICE_ARGS = f"--device {config['device']} --threads {{threads}}"


def fit_dir(target):
    return f"{R}/fits/{target}/L{{layers}}_s{{seed}}"


def all_metrics():
    """Every evaluate JSON the tables read."""
    runs = expand(
        "{kind}/L{layers}_s{seed}", kind=["ours", "baseline"], layers=LAYERS, seed=SEEDS
    )
    references = [f"reference/{method}" for method in REFERENCE_METHODS]
    return [f"{R}/metrics/{run}.json" for run in [*runs, *references]]


def as_json(value):
    """A Python value as a single-quoted JSON shell argument."""
    return shlex.quote(json.dumps(value))


def sr_model_if_needed(wildcards):
    return rules.pretrain_sr.output.model if wildcards.method == "sr" else []


def tissue_window():
    low, high = config["evaluation"]["tissue_window"]
    return f"{low} {'nan' if high is None else high}"


def label(method):
    return lambda wc: as_json({"method": method, **{k: int(v) for k, v in wc.items()}})


def table_output(name, extension):
    path = f"{R}/tables/{name}.{extension}"
    if extension == "csv":
        return report(path, caption=f"../report/{name}.rst", category="Tables")
    return path


def run_outputs(kind, target, name, layers="{layers}"):
    return f"{R}/{kind}/{target}/L{layers}_s{FIGURE_SEED}/{name}"
