# Helpers shared by the stages: output locations, shell fragments, config paths.
import json
import shlex

R = "results"
LAYERS = config["siren"]["layers"]
SEEDS = config["siren"]["seeds"]
REFERENCE_METHODS = ["sr", "lanczos", "bicubic"]


def from_repo(path):
    """A relative path from the config: under the working directory, else under this repo."""
    return config_checks.repo_path(path, workflow.basedir)


config["published"] = from_repo(config["published"])

# Slice mode is the paper's 2D experiment; any other dataset kind runs it on a whole volume.
DATASET = config["dataset"]
VOLUME = config["volume"]
VOLUME_MODE = DATASET["kind"] != "slice"
MODE = "volume" if VOLUME_MODE else "slice"
EVAL = f"{R}/data/eval.npy"
DOWNLOAD_DIR = f"{R}/data/download"
config["sr"]["checkpoint"] = from_repo(config["sr"]["checkpoint"])


ENV = "../../envs/volinr.yaml"
DEVICE_ARGS = f"--device {config['device']} --threads {{threads}}"
DECODE_ARGS = f"--chunk-voxels {VOLUME['decode_chunk_voxels']}"


def mem_mb(slice_mb):
    """Memory for a job: volume-mode jobs hold whole volumes."""
    return max(slice_mb, VOLUME["mem_mb"]) if VOLUME_MODE else slice_mb


def volume_spec(source, downloaded=None):
    """The reader's settings for a dataset entry; a download is read from its folder."""
    spec = {k: v for k, v in source.items() if k != "download"}
    spec.update(shape=source["phantom"]["shape"], seed=source["phantom"]["seed"])
    spec["spacing_mm"] = source["phantom"]["spacing_mm"]
    if source["kind"] == "download":
        spec.update(kind=source["download"]["format"], path=downloaded)
    else:
        spec["path"] = from_repo(source["path"])
    return spec


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


FIT_TARGET = {"ours": "lr", "baseline": "hr"}


def sr_model_for_kind(wildcards):
    return f"{R}/sr/srdensenet.pt" if wildcards.kind == "ours" else []


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


def shown_metrics(kind, layers="{layers}"):
    """The metrics of the reconstruction a figure shows (figures.seed), whose PSNR it prints."""
    return f"{R}/metrics/{kind}/L{layers}_s{FIGURE_SEED}.json"


def sr_training_inputs(wildcards):
    """The volume whose slices train SR, when they come from a volume."""
    if VOLUME_MODE and VOLUME["sr_training"] == "same_volume":
        return {"volume": f"{R}/data/volume.npy"}
    if VOLUME_MODE and VOLUME["sr_training"] == "other_volume":
        return {"volume": f"{R}/data/sr_volume.npy"}
    return {}


def sr_training_args(wildcards, input):
    if "volume" not in input.keys():
        sources = " ".join(
            f"--source {shlex.quote(s)}" for s in config["sr_training_sources"]
        )
        return f"{sources} --max-correlation {config['max_training_correlation']}"
    args = f"--volume {input.volume}"
    if VOLUME["sr_training"] == "same_volume":
        start, stop = VOLUME["evaluation_slices"] or (0, 1 << 30)
        args += f" --exclude-slices {start} {stop} --margin {VOLUME['margin_slices']}"
    return args
