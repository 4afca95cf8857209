# Every config-derived global, path helper and input function of the rules; nothing else.
import json
import os
import shlex
from pathlib import Path

from volinr import methods
from volinr.results_layout import Layout, fit_group
from volinr.stages.report import figure_files

LAYOUT = Layout.of(config)
R = LAYOUT.results
ENV = "../envs/volinr.yaml"

DATASET = config["dataset"]
VOLUME = config["volume"]
SIREN = config["siren"]
RD = config["rate_distortion"]
LAYERS = SIREN["layers"]
SEEDS = SIREN["seeds"]
FIGURE_SEED = config["figures"]["seed"]
# Slice mode is the paper's 2D experiment; any other dataset kind runs it on a whole volume.
VOLUME_MODE = DATASET["kind"] != "slice"
MODE = "volume" if VOLUME_MODE else "slice"
EVAL = LAYOUT.eval_image
LR = LAYOUT.lr_image
SR_MODEL = LAYOUT.sr_model
DOWNLOAD_DIR = LAYOUT.download_dir
DEVICE_ARGS = f"--device {config['device']} --threads {{threads}}"
# On a SLURM site (profiles/slurm) the jobs that hold the gpu resource go to this partition.
# Set here, not by rule name in the profile, so that a suite's prefixed rules (rules/suite.smk)
# go there too; elsewhere the resource is read by nothing.
GPU_PARTITION = os.environ.get("VOLINR_SLURM_GPU_PARTITION", "")

config["published"] = config_checks.repo_path(config["published"], REPO)
config["evaluation"]["replicate_reference"] = config_checks.repo_path(
    config["evaluation"]["replicate_reference"], REPO
)
config["sr"]["checkpoint"] = config_checks.repo_path(config["sr"]["checkpoint"], REPO)
for _source in (DATASET, VOLUME["sr_dataset"]):
    if _source["kind"] in ("dicom_series", "nifti", "array"):
        _source["path"] = config_checks.repo_path(_source["path"], REPO)


def as_json(value):
    """A Python value as a single-quoted JSON shell argument."""
    return shlex.quote(json.dumps(value))


def mem_mb(slice_mb):
    """Memory for a job: volume-mode jobs hold whole volumes."""
    return max(slice_mb, VOLUME["mem_mb"]) if VOLUME_MODE else slice_mb


def tissue_window():
    low, high = config["evaluation"]["tissue_window"]
    return f"{low} {'nan' if high is None else high}"


# --- data ------------------------------------------------------------------------------------


def volume_spec(source, downloaded=None):
    """A dataset section as the reader takes it; a download is read from its folder."""
    spec = {k: v for k, v in source.items() if k != "download"}
    if source["kind"] == "download":
        spec.update(kind=source["download"]["format"], path=downloaded)
    return spec


def source_files(source):
    """An array's .npy and its sidecar: a changed file or sidecar prepares the volume again."""
    if source["kind"] != "array":
        return []
    return [source["path"], str(Path(source["path"]).with_suffix(".json"))]


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


# --- SIREN fits ------------------------------------------------------------------------------

FIT_TARGETS = {"lr": LR, "hr": EVAL}  # the paper's fit, and the baseline's
FIT_ITERATIONS = {"lr": SIREN["iterations"], "hr": SIREN["baseline_iterations"]}


def fit_dir(target="{target}", layers="{layers}", seed="{seed}"):
    return LAYOUT.fit_dir(target, fit_group(layers, seed))


# --- methods ---------------------------------------------------------------------------------

METHODS = RD["methods"]
METHOD_GROUPS = {name: methods.family(name).groups(config, config) for name in METHODS}


def method_group_inputs(wildcards):
    """The evaluated image and the files the group needs (a fit, the SR model, the LR)."""
    family = methods.family(wildcards.method)
    inputs = family.group_inputs(config, config, wildcards.group)
    return {"image": EVAL, **inputs}


def method_inputs_json(wildcards):
    family = methods.family(wildcards.method)
    return as_json(family.group_inputs(config, config, wildcards.group))


def method_settings_json(wildcards):
    return as_json(methods.sections(wildcards.method, config))


def trains_on_gpu():
    """Whether a torch job on the config's device runs on a GPU (auto: torch sees one)."""
    if config["device"] == "cpu":
        return False
    if config["device"] != "auto":
        return True
    import torch  # only where a method's resources depend on it

    return torch.cuda.is_available()


def holds_gpu(name):
    """A torch method's jobs hold the gpu resource; a GPU-optional one only on a GPU."""
    family = methods.family(name)
    return family.uses_torch and (not family.gpu_optional or ON_GPU)


ON_GPU = any(methods.family(m).gpu_optional for m in METHODS) and trains_on_gpu()


def method_device(wildcards):
    """A method group's --device: a GPU-optional method that holds no gpu runs on the CPU (so
    that on a cluster a CPU job never finds a node's GPU by 'auto')."""
    family = methods.family(wildcards.method)
    return "cpu" if family.gpu_optional and not ON_GPU else config["device"]


TORCH_METHODS = [m for m in methods.families() if holds_gpu(m)]
CPU_METHODS = [m for m in methods.families() if not holds_gpu(m)]


def method_threads(wildcards):
    """A CPU method's threads: the config's for one that uses them (the neural codec's
    training), one for a codec sweep (the anchors are measured on one thread)."""
    return config["threads"] if methods.family(wildcards.method).multithreaded else 1


def rd_rows(method, groups=None):
    return [
        f"{R}/rd/{method}/{group}.json" for group in groups or METHOD_GROUPS[method]
    ]


def rd_dir(method, group):
    return f"{R}/rd/{method}/{group}"


def keeps_reconstruction(wildcards):
    """The figures and the export show the reconstructions of figures.seed."""
    return wildcards.method in ("siren_lr_sr", "siren_hr") and wildcards.group.endswith(
        f"_s{FIGURE_SEED}"
    )


# The paper's tables read the paper point of these three methods; a run without one of them
# makes the rate-distortion tables only (and its summary says so).
PAPER_METHODS = list(config_checks.PAPER_METHODS)
PAPER_MODE = config_checks.paper_tables_made(METHODS)
PAPER_ROWS = (
    [row for method in PAPER_METHODS for row in rd_rows(method)] if PAPER_MODE else []
)
ALL_ROWS = [row for method in METHODS for row in rd_rows(method)]
# a committed replicate run's seeds, quoted beside Table 6 (none: ""); a run of several seeds
# gives its own intervals
REPLICATES = [
    r
    for r in [config["evaluation"]["replicate_reference"]]
    if r and PAPER_MODE and len(SEEDS) == 1
]


def shown_groups(method):
    """The groups whose reconstructions the figures show (figures.seed)."""
    return [rd_dir(method, f"L{n}_s{FIGURE_SEED}") for n in LAYERS]


# --- report ----------------------------------------------------------------------------------

PAPER_TABLES = [
    "table4_ours",
    "table5_baseline",
    "table6_side_by_side",
    "table7_other_methods",
    "table_sr_check",
    "table_ablation",
]
RD_TABLE_NAMES = ["table_rate_distortion"] + (
    ["table_vs_jpeg2000", "table_vs_best_anchor", "table_bd_rate"]
    if "classical" in METHODS
    else []
)


def table_outputs(names):
    """CSV (in the report, with its caption) and Markdown of each table."""
    csv = [table_csv(n) for n in names]
    return {"csv": csv, "md": [f"{R}/tables/{n}.md" for n in names]}


def table_csv(name):
    return report(
        f"{R}/tables/{name}.csv", caption=f"../report/{name}.rst", category="Tables"
    )


FIGURE_CAPTIONS = {
    "fig4-6_lr_fit": ("fig_lr_fit", "Figures 4-6: SIREN on the LR slice"),
    "fig7-9_pipeline": ("fig_pipeline", "Figures 7-9: the whole pipeline"),
    "fig10-12_baseline": (
        "fig_baseline",
        "Figures 10-12: SIREN on the full-resolution slice",
    ),
    "fig13_bars": ("fig13_bars", None),
    "fig14_comparison": ("fig14_comparison", None),
    "fig_sr_training": ("fig_sr_training", None),
    "volume_per_slice": ("fig_per_slice", "Volume mode"),
    "volume_orthogonal": ("fig_orthogonal", "Volume mode"),
}


def figure_output(name):
    caption, subcategory = FIGURE_CAPTIONS[name.rsplit("_L", 1)[0].removesuffix(".png")]
    return report(
        f"{R}/figures/{name}",
        caption=f"../report/{caption}.rst",
        category="Figures",
        subcategory=subcategory,
    )


FIGURE_NAMES = figure_files(MODE, LAYERS)  # what `volinr figures` draws


def export_targets():
    """Volume mode: every reconstruction of figures.seed as NIfTI and as a DICOM series."""
    if not VOLUME_MODE:
        return []
    stems = [
        f"{R}/export/{m}/L{n}_s{FIGURE_SEED}"
        for m in ("siren_lr_sr", "siren_hr")
        if m in METHODS
        for n in LAYERS
    ]
    return [f"{stem}.nii.gz" for stem in stems] + [f"{stem}_dicom" for stem in stems]
