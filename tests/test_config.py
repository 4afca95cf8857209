import copy
import re
from pathlib import Path

import pytest
import yaml
from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = str(ROOT / "workflow/schemas/config.schema.yaml")


def _load(name):
    return yaml.safe_load((ROOT / "config" / name).read_text())


@pytest.mark.parametrize(
    "name",
    [
        "config.yaml",
        "paper.yaml",
        "tiny.yaml",
        "volume_demo.yaml",
        "volume_tiny.yaml",
        "visible_human.yaml",
    ],
)
def test_shipped_configs_validate(name):
    config = _load(name)
    validate(config, SCHEMA, set_default=True)
    assert config["siren"]["width"] == 128  # filled in from the schema's defaults
    assert config["evaluation_image"]["source"] == "pydicom-data:693_UNCR.dcm"
    assert config["dataset"]["kind"] in ("slice", "phantom", "download")


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
    env = yaml.safe_load((ROOT / "envs/volinr.yaml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert sorted(pip) == sorted(project)
    assert "torch==2.13.0" in project
