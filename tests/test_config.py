import copy
import re
import subprocess
from pathlib import Path

import pytest
import torch
import yaml
from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

from conftest import SNAKEMAKE, workflow_env

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = str(ROOT / "workflow/schemas/config.schema.yaml")


# the shipped configs by name: config/*.yaml, and the tests' (the catalog's .test/ folder)
CONFIGS = {
    "tiny.yaml": ROOT / ".test/config/config.yaml",
    "volume_tiny.yaml": ROOT / ".test/config_volume/config.yaml",
}


def _load(name):
    return yaml.safe_load(CONFIGS.get(name, ROOT / "config" / name).read_text())


@pytest.mark.parametrize(
    "name",
    [
        "config.yaml",
        "paper.yaml",
        "tiny.yaml",
        "volume_demo.yaml",
        "volume_tiny.yaml",
        "visible_human.yaml",
        "real_ct_slab.yaml",
    ],
)
def test_shipped_configs_validate(name):
    config = _load(name)
    validate(config, SCHEMA, set_default=True)
    assert config["siren"]["width"] == 128  # filled in from the schema's defaults
    assert config["evaluation_image"]["source"] == "pydicom-data:693_UNCR.dcm"
    assert config["dataset"]["kind"] in ("slice", "phantom", "download", "array")


def test_the_real_ct_slab_is_pinned_file_by_file():
    # a download that names a branch, or a file without its checksum, could change under a run
    download = _load("real_ct_slab.yaml")["dataset"]["download"]
    urls, sums = download["urls"], download["sha256"]
    assert len(urls) == len(sums) == 20 and len(set(urls)) == 20
    assert all(re.fullmatch(r"[0-9a-f]{64}", s) for s in sums)
    commits = {re.search(r"/TotalSegmentator/([0-9a-f]{40})/", url).group(1) for url in urls}
    assert len(commits) == 1


def test_volume_source_settings_are_checked_by_the_schema():
    for bad in (
        {"dataset": {"kind": "dicom"}},
        {"dataset": {"kind": "phantom", "phantom": {"shape": [4, 64, 64]}}},
        {"dataset": {"download": {"urls": ["ftp://example.org/a.zip"]}}},
        {"dataset": {"download": {"sha256": ["not-a-hash"]}}},
        {"volume": {"z_restore": "cubic"}},
        {"volume": {"evaluation_slices": [3]}},
    ):
        with pytest.raises(WorkflowError):
            validate(copy.deepcopy(bad), SCHEMA, set_default=True)


def test_paper_config_has_the_papers_settings():
    config = _load("paper.yaml")
    validate(config, SCHEMA, set_default=True)
    published = yaml.safe_load((ROOT / "config/published.yaml").read_text())["setup"]["siren"]
    assert config["siren"]["iterations"] == published["iterations"] == 50000
    assert config["siren"]["learning_rate"] == published["lr"]
    assert config["siren"]["batch_size"] == published["batch"]
    assert config["siren"]["layers"] == published["layers"]
    assert config["sr"]["model"] == {
        "blocks": 8,
        "layers_per_block": 8,
        "growth": 16,
        "bottleneck": 256,
        "global_residual": False,
    }


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda c: c.update(unknown_key=1), "unknown_key"),
        (lambda c: c["siren"].update(learning_rate=-1), "learning_rate"),
        (lambda c: c["siren"].update(layers=[]), "layers"),
        (lambda c: c.update(downsample_factor=3), "downsample_factor"),
        (lambda c: c["sr"]["model"].update(blocks=0), "blocks"),
        (lambda c: c["siren"].update(itertions=5), "itertions"),
    ],
)
def test_bad_configs_are_refused_naming_the_key(change, message):
    config = copy.deepcopy(_load("config.yaml"))
    change(config)
    with pytest.raises(WorkflowError, match=re.escape(message)):
        validate(config, SCHEMA, set_default=True)


def test_conda_environment_agrees_with_pyproject():
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    env = yaml.safe_load((ROOT / "workflow/envs/volinr.yaml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert sorted(pip) == sorted(project)
    assert "torch==2.13.0" in project


# --- numbers read as meant, and what the schema cannot say (volinr.config_checks) -----------
# In process: the Snakefile's three steps on the default config with an overlay (fast, every
# case); through `snakemake -n` below: the wiring, for the cases and both config paths.


def _checked(overlay_yaml):
    """The Snakefile's steps on config.yaml + an overlay: coerce, validate, post-check."""
    from snakemake.utils import update_config

    from volinr import config_checks

    config = _load("config.yaml")
    update_config(config, yaml.safe_load(overlay_yaml))
    config_checks.coerce_scalars(config, config_checks.load_schema(SCHEMA))
    validate(config, SCHEMA, set_default=True)
    return config, config_checks.config_problems(config, ROOT)


@pytest.mark.parametrize(
    "overlay, key, value",
    [
        ("siren: {learning_rate: 1e-3}", "learning_rate", 0.001),  # a string in YAML 1.1
        ("siren: {learning_rate: 1.5E-3}", "learning_rate", 0.0015),
        ("siren: {iterations: 12.0}", "iterations", 12),  # an int, not 12.0 on the command line
        ("siren: {iterations: 1e3}", "iterations", 1000),
        ("siren: {iterations: '20'}", "iterations", 20),
        ("siren: {omega0: '30'}", "omega0", 30),
        ("siren: {compile: 'false'}", "compile", False),
    ],
)
def test_numbers_are_read_as_yaml_1_2_reads_them(overlay, key, value):
    config, problems = _checked(overlay)
    assert problems == []
    assert config["siren"][key] == value and type(config["siren"][key]) is type(value)


def test_strings_stay_strings_where_the_schema_wants_a_string():
    from volinr import config_checks

    schema = config_checks.load_schema(SCHEMA)
    config = {"sr": {"checkpoint_sha256": "1e3"}, "sr_training_sources": ["10"]}
    config_checks.coerce_scalars(config, schema)
    assert config == {"sr": {"checkpoint_sha256": "1e3"}, "sr_training_sources": ["10"]}


def test_nested_command_line_values_are_read_as_numbers():
    """`--config siren="{...}"` reaches the config through YAML's BaseLoader: all strings."""
    from volinr import config_checks

    overlay = yaml.load(
        "{learning_rate: 1e-3, iterations: 10, layers: [2, 3], compile: true}",
        Loader=yaml.BaseLoader,
    )
    assert overlay["iterations"] == "10"
    evaluation = yaml.load("{tissue_window: [-100, null]}", Loader=yaml.BaseLoader)
    config = {"siren": overlay, "evaluation": evaluation}
    config_checks.coerce_scalars(config, config_checks.load_schema(SCHEMA))
    assert config["siren"] == {
        "learning_rate": 0.001,
        "iterations": 10,
        "layers": [2, 3],
        "compile": True,
    }
    assert config["evaluation"]["tissue_window"] == [-100, None]


BAD_CONFIGS = [
    # non-finite numbers: NaN passes every JSON-schema range
    ("evaluation: {tissue_window: [.nan, null]}", "evaluation.tissue_window[0]: nan is not a"),
    ("evaluation: {tissue_window: [-1024, .inf]}", "evaluation.tissue_window[1]: inf is not a"),
    ("siren: {learning_rate: .nan}", "siren.learning_rate: nan is not a finite number"),
    ("siren: {omega0: .nan}", "siren.omega0: nan is not a finite number"),
    ("siren: {divergence_lr_factor: .nan}", "siren.divergence_lr_factor: nan"),
    ("max_training_correlation: .nan", "max_training_correlation: nan"),
    ("sr: {training: {max_seconds: .nan}}", "sr.training.max_seconds: nan"),
    ("sr: {training: {max_seconds: 1e400}}", "sr.training.max_seconds: inf"),
    (
        "dataset: {kind: phantom, phantom: {spacing_mm: [.inf, 1, 1]}}",
        "dataset.phantom.spacing_mm[0]: inf",
    ),
    # empty ranges
    ("evaluation: {tissue_window: [100, -100]}", "evaluation.tissue_window: [100, -100] is empty"),
    ("evaluation: {tissue_window: [50, 50]}", "evaluation.tissue_window: [50, 50] is empty"),
    (
        "{dataset: {kind: phantom}, volume: {evaluation_slices: [20, 10]}}",
        "volume.evaluation_slices: [20, 10] is an empty range",
    ),
    (
        "{dataset: {kind: phantom}, volume: {evaluation_slices: [10, 10]}}",
        "volume.evaluation_slices: [10, 10] is an empty range",
    ),
    ("dataset: {kind: phantom, slices: [30, 5]}", "dataset.slices: [30, 5] is an empty range"),
    # files that do not exist
    ("published: no/such/published.yaml", "published: no/such/published.yaml is not an existing"),
    ("sr: {checkpoint: models/nope.pt}", "sr.checkpoint: models/nope.pt is not an existing file"),
    ("dataset: {kind: nifti, path: no/such.nii.gz}", "dataset.path: no/such.nii.gz is not an"),
    ("dataset: {kind: array, path: no/such.npy}", "dataset.path: no/such.npy is not an existing"),
    ("dataset: {kind: array}", "dataset.kind is array but dataset.path is empty"),
    (
        "dataset: {kind: array, path: data/headsq/headsq_axial_mid.png}",  # a file, no sidecar
        "has no sidecar headsq_axial_mid.json",
    ),
    (
        "{dataset: {kind: phantom}, volume: {sr_training: other_volume, "
        "sr_dataset: {kind: array, path: no/such.npy}}}",
        "volume.sr_dataset.path: no/such.npy is not an existing file",
    ),
    (
        "dataset: {kind: dicom_series, path: README.md}",  # exists, but is a file
        "dataset.path: README.md is not an existing folder",
    ),
    ("evaluation_image: {source: no/such.dcm}", "evaluation_image.source: no/such.dcm does not"),
    ("sr_training_sources: [no/such.dcm]", "sr_training_sources[0]: no/such.dcm does not exist"),
    # contradictions
    ("figures: {seed: 7}", "figures.seed: 7 is not one of siren.seeds [0]"),
    ("sr: {checkpoint_sha256: ''}", "sr.checkpoint is set but sr.checkpoint_sha256 is empty"),
    (
        "dataset: {kind: download, download: {urls: ['https://a.example/x.zip', "
        "'https://a.example/y.zip'], sha256: ['" + "0" * 64 + "']}}",
        "dataset.download.sha256: 1 checksums for 2 URLs",
    ),
    ("dataset: {kind: download}", "dataset.kind is download but dataset.download.urls is empty"),
    (
        "{dataset: {kind: phantom}, volume: {sr_training: same_volume}}",
        "volume.sr_training same_volume needs volume.evaluation_slices",
    ),
]


@pytest.mark.parametrize("overlay, message", BAD_CONFIGS, ids=[m for _, m in BAD_CONFIGS])
def test_what_the_schema_cannot_say_is_refused_naming_the_key(overlay, message):
    _, problems = _checked(overlay)
    assert any(message in p for p in problems), problems


SCHEMA_REFUSALS = [
    ("siren: {omega0: .inf}", "inf is greater than the maximum of 10000"),
    ("siren: {iterations: 12.5}", "12.5 is not of type 'integer'"),
    ("siren: {iterations: 100000000000000000000000}", "is greater than the maximum of 100000000"),
    ("siren: {iterations: 1e30}", "is greater than the maximum of 100000000"),
    ("siren: {seeds: [100000000000000000000000]}", "is greater than the maximum of 4294967295"),
    ("siren: {width: 100000000}", "100000000 is greater than the maximum of 4096"),
    ("siren: {layers: [2, 2]}", "[2, 2] has non-unique elements"),
    ("siren: {seeds: [0, 0]}", "[0, 0] has non-unique elements"),
    ("siren_container: {quantizations: [q8, q8]}", "['q8', 'q8'] has non-unique elements"),
    ("siren_container: {quantizations: [q8]}", "does not contain items matching"),
    ("rate_distortion: {methods: [classical, bogus]}", "'bogus' is not one of"),
    ("sr_training_sources: ['pydicom:CT_small.dcm', 'pydicom:CT_small.dcm']", "non-unique"),
    ("dataset: {kind: phantom, allow_modalities: []}", "[] should be non-empty"),
    ("evaluation: {tissue_window: [null, 100]}", "None is not of type 'number'"),
    ("evaluation: {tissue_window: [-1024]}", "[-1024] is too short"),
    ("sr: {checkpoint_sha256: xyz}", "'xyz' does not match"),
    ("sr: {training: {learning_rate: 1e30}}", "1e+30 is greater than the maximum of 1"),
    ("dataset: {kind: phantom, phantom: {shape: [100000, 96, 96]}}", "maximum of 1024"),
    ("siren: {iterations: many}", "'many' is not of type 'integer'"),
    ("siren: {compile: maybe}", "'maybe' is not of type 'boolean'"),
    ("threads: true", "True is not of type 'integer'"),
    ("siren: null", "None is not of type 'object'"),
]


@pytest.mark.parametrize("overlay, message", SCHEMA_REFUSALS, ids=[o for o, _ in SCHEMA_REFUSALS])
def test_out_of_range_duplicate_and_mistyped_values_are_refused_by_the_schema(overlay, message):
    with pytest.raises(WorkflowError, match=re.escape(message)):
        _checked(overlay)


def test_a_config_without_the_papers_methods_is_a_run_without_the_papers_tables():
    """The paper's tables are made from the paper points of three methods; a user comparing
    codecs alone lists only those."""
    from volinr import config_checks

    config, problems = _checked("rate_distortion: {methods: [classical]}")
    assert problems == []
    assert not config_checks.paper_tables_made(config["rate_distortion"]["methods"])
    assert config_checks.paper_tables_made(_checked("{}")[0]["rate_distortion"]["methods"])
    _, problems = _checked("classical: {codecs: [jpeg2000_per_slice]}")
    assert any("jpeg2000_per_slice" in p for p in problems)


def test_every_shipped_config_has_no_problem():
    from volinr import config_checks

    for name in ("config.yaml", "paper.yaml", "tiny.yaml", "volume_demo.yaml", "volume_tiny.yaml"):
        config = _load(name)
        validate(config, SCHEMA, set_default=True)
        assert config_checks.config_problems(config, ROOT) == [], name


def dry_run(tmp_path, config_text, *extra):
    path = tmp_path / "overlay.yaml"
    path.write_text(config_text)
    command = SNAKEMAKE + ["--directory", tmp_path, "-n", "-p", "--cores", "1"]
    run = subprocess.run(
        [str(c) for c in command + ["--configfile", path, *extra]],
        capture_output=True,
        text=True,
        env=workflow_env(),
        timeout=300,
    )
    return run.returncode, run.stdout + run.stderr


@pytest.mark.parametrize(
    "config_text, extra, message",
    [
        ("evaluation:\n  tissue_window: [.nan, null]\n", [], "evaluation.tissue_window[0]: nan"),
        ("siren:\n  omega0: .inf\n", [], "inf is greater than the maximum of 10000"),
        ("siren:\n  layers: [3, 3]\n", [], "[3, 3] has non-unique elements"),
        ("figures:\n  seed: 7\n", [], "figures.seed: 7 is not one of siren.seeds"),
        ("sr:\n  checkpoint: models/nope.pt\n", [], "sr.checkpoint: models/nope.pt is not an"),
        (
            "threads: 1\n",
            ["--config", "evaluation={tissue_window: [.nan, null]}"],
            "evaluation.tissue_window[0]: nan",
        ),
    ],
    ids=[
        "nan-window",
        "inf-omega0",
        "duplicate-layers",
        "figure-seed",
        "missing-checkpoint",
        "cli",
    ],
)
def test_a_bad_config_stops_snakemake_before_any_job(tmp_path, config_text, extra, message):
    code, output = dry_run(tmp_path, config_text, *extra)
    assert code != 0 and "Error validating config file." in output
    assert message in output
    assert "Traceback" not in output and not (tmp_path / "results").exists()


@pytest.mark.parametrize(
    "config_text, extra",
    [
        ("siren:\n  learning_rate: 1e-3\n  iterations: 12.0\n", []),
        ("threads: 1\n", ["--config", "siren={learning_rate: 1e-3, iterations: 12}"]),
    ],
    ids=["configfile", "command-line"],
)
def test_natural_numbers_reach_the_jobs_as_numbers(tmp_path, config_text, extra):
    code, output = dry_run(tmp_path, config_text, *extra)
    assert code == 0, output[-3000:]
    # the fit receives the validated siren section as JSON, and its iterations as a flag
    assert '"learning_rate": 0.001,' in output and "--iterations 12 " in output


@pytest.mark.skipif(torch.cuda.is_available(), reason="'auto' would mean the GPU here")
@pytest.mark.parametrize(
    "device, rule, threads, runs_on",
    [
        ("cpu", "method_points", "--threads 1 ", "cpu"),
        ("auto", "method_points", "--threads 1 ", "cpu"),  # no GPU here: a CPU job, on the CPU
        ("cuda", "method_points_torch", "--threads 2 ", "cuda"),
    ],
)
def test_the_neural_codec_holds_the_gpu_only_on_a_gpu(tmp_path, device, rule, threads, runs_on):
    # two cores: a CPU codec job still gets one thread, a GPU one the config's two
    code, output = dry_run(tmp_path, f"device: {device}\nthreads: 2\n", "--cores", "2")
    assert code == 0, output[-3000:]
    jobs = output.split("\nrule ")
    codec = [job for job in jobs if "--method neural_codec" in job]
    assert codec and all(job.startswith(f"{rule}:") for job in codec)
    assert all(threads in job and f"--device {runs_on} " in job for job in codec)
    # the other torch methods keep the config's device
    siren = [job for job in jobs if "--method siren_hr" in job]
    assert siren and all(f"--device {device} " in job for job in siren)
    if device == "cuda":
        assert all("gpu=1" in job for job in codec)
    else:
        assert not any("gpu=1" in job for job in codec)


def test_a_suite_dataset_cannot_nest_a_suite_or_move_its_results():
    _, problems = _checked(
        "suite: {head: {anatomy: head, licence: x, config: {results_dir: elsewhere}}}"
    )
    assert any("suite.head.config.results_dir" in p for p in problems)
    _, problems = _checked("suite: {head: {anatomy: head, licence: x, config: {}}}")
    assert problems == []


def test_the_codecs_suite_is_the_public_suite_with_the_codecs_alone():
    from snakemake.utils import update_config

    from volinr import config_checks

    overlay = _load("suite.yaml")
    update_config(overlay, _load("suite_codecs.yaml"))
    config, problems = _checked(yaml.safe_dump(overlay))
    assert problems == []
    assert set(config["suite"]) == set(_load("suite.yaml")["suite"])
    assert config["rate_distortion"]["methods"] == ["classical", "neural_codec"]
    # the default run's iterations, the schema's default, not the suite's CPU-sized 600
    schema = config_checks.load_schema(SCHEMA)["properties"]["neural_codec"]["properties"]
    assert config["neural_codec"]["iterations"] == schema["iterations"]["default"] == 1500
