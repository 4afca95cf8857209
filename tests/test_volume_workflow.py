"""Volume mode end to end: the 3D DAG on a small phantom (.test/config_volume), and a user's
bad DICOM folder stopped before any output."""

import hashlib
import json
import subprocess
import zipfile

import numpy as np
import pandas as pd
import pytest

from conftest import ROOT, SNAKEMAKE, workflow_env
from volinr.data.dicom_series import read_dicom_series
from volinr.data.export import write_dicom_series
from volinr.data.nifti import read_nifti
from volinr.data.phantom import synthetic_head_phantom
from volinr.io import load_array

pytestmark = pytest.mark.slow


def test_volume_dag_evaluates_the_slab_with_a_split_that_keeps_its_margin(volume_run):
    evaluated, meta = load_array(volume_run / "data/eval.npy")
    assert evaluated.shape == (16, 32, 32) and meta["evaluation_slices"] == [12, 28]
    assert meta["spacing_mm"] == pytest.approx([2.0, 1.5, 1.5])
    lr, _ = load_array(volume_run / "data/lr.npy")
    assert lr.shape == (4, 8, 8)
    split = json.loads((volume_run / "data/split.json").read_text())
    trained = {record["slice"] for record in split["training"]}
    assert trained == set(range(0, 10)) | set(range(30, 40))  # slab 12..28, margin 2
    for family in ("siren_lr_sr", "siren_hr"):
        recon, recon_meta = load_array(volume_run / f"rd/{family}/L2_s0/float32.npy")
        assert recon.shape == evaluated.shape
    _, sr_meta = load_array(volume_run / "rd/siren_lr_sr/L2_s0/float32.npy")
    assert sr_meta["z_restore"] == "sr-coronal"


def test_volume_tables_print_na_for_the_papers_slice_numbers(volume_run):
    table = pd.read_csv(volume_run / "tables/table4_ours.csv")
    assert table["best_psnr_db_paper"].isna().all()
    assert np.isfinite(table["best_psnr_db_ours"]).all()
    assert table["parameters_paper"].tolist() == [17153]  # architecture still applies
    markdown = (volume_run / "tables/table4_ours.md").read_text()
    assert "volume" in markdown.splitlines()[0] and "n/a" in markdown
    per_slice = pd.read_csv(volume_run / "rd/siren_lr_sr/L2_s0/float32.slices.csv")
    assert per_slice["slice"].tolist() == list(range(16))
    assert np.isfinite(per_slice[["psnr_8bit_db", "ssim"]].to_numpy()).all()
    figures = {p.name for p in (volume_run / "figures").glob("*.png")}
    assert {"volume_per_slice.png", "volume_orthogonal.png"} <= figures


def test_exports_reopen_with_the_original_geometry(volume_run):
    evaluated, meta = load_array(volume_run / "data/eval.npy")
    recon, _ = load_array(volume_run / "rd/siren_lr_sr/L2_s0/float32.npy")
    nifti = read_nifti(volume_run / "export/siren_lr_sr/L2_s0.nii.gz")
    np.testing.assert_allclose(nifti.voxels, recon, atol=1e-3)
    assert nifti.meta["spacing_mm"] == pytest.approx(meta["spacing_mm"])
    series = read_dicom_series(volume_run / "export/siren_lr_sr/L2_s0_dicom")
    np.testing.assert_allclose(series.voxels, recon, atol=0.51)  # stored rounded to integers
    assert series.meta["spacing_mm"] == pytest.approx(meta["spacing_mm"])
    np.testing.assert_allclose(series.meta["slice_positions_mm"], meta["slice_positions_mm"])


@pytest.mark.parametrize("problem", ["gap", "two series"])
def test_a_bad_dicom_folder_stops_the_workflow_before_any_output(tmp_path, problem):
    phantom = synthetic_head_phantom((24, 32, 32), seed=3)
    folder = tmp_path / "user_series"
    files = write_dicom_series(folder, phantom.voxels, phantom.meta, "user CT")
    if problem == "gap":
        sorted(files)[12].unlink()
    else:
        other = synthetic_head_phantom((24, 32, 32), seed=4)
        write_dicom_series(tmp_path / "second", other.voxels, other.meta, "second CT")
        for path in (tmp_path / "second").iterdir():
            path.rename(folder / f"b_{path.name}")
    command = SNAKEMAKE + [
        "--directory",
        str(tmp_path),
        "--configfile",
        str(ROOT / ".test/config_volume/config.yaml"),
        "--config",
        f"dataset={{'kind': 'dicom_series', 'path': '{folder}'}}",
        "--cores",
        "1",
        "results/data/eval.npy",
    ]
    run = subprocess.run(command, capture_output=True, text=True, env=workflow_env(), timeout=300)
    assert run.returncode != 0
    log = (tmp_path / "results/logs/prepare_volume.log").read_text()
    expected = "gap" if problem == "gap" else "series"
    assert expected in log.lower() and str(folder) in log
    assert not list((tmp_path / "results/data").glob("*.npy"))
    assert not list((tmp_path / "results/data").glob("*.json"))


def _zip_folder(folder, path):
    with zipfile.ZipFile(path, "w") as archive:
        for file in sorted(folder.iterdir()):
            archive.write(file, f"series/{file.name}")
    return path.read_bytes()


@pytest.mark.parametrize("tampered", [False, True])
def test_the_download_rule_fetches_verifies_and_prepares_a_series(tmp_path, server, tampered):
    phantom = synthetic_head_phantom((40, 32, 32), seed=5)  # the tiny config evaluates 12..28
    write_dicom_series(tmp_path / "series", phantom.voxels, phantom.meta, "served CT")
    data = _zip_folder(tmp_path / "series", tmp_path / "series.zip")
    url = server.put("series.zip", data)
    digest = hashlib.sha256(data).hexdigest()
    if tampered:
        digest = hashlib.sha256(data + b"x").hexdigest()
    dataset = {"kind": "download", "download": {"urls": [url], "sha256": [digest]}}
    workdir = tmp_path / "run"
    command = SNAKEMAKE + [
        "--directory",
        str(workdir),
        "--configfile",
        str(ROOT / ".test/config_volume/config.yaml"),
        "--config",
        f"dataset={dataset!r}",
        "--cores",
        "1",
        "results/data/eval.npy",
    ]
    run = subprocess.run(command, capture_output=True, text=True, env=workflow_env(), timeout=300)
    data_dir = workdir / "results/data"
    if tampered:
        assert run.returncode != 0
        assert digest in (workdir / "results/logs/download_dataset.log").read_text()
        assert not (data_dir / "download/files").exists()
        assert not list(data_dir.glob("*.npy"))
        return
    assert run.returncode == 0, run.stderr[-3000:]
    manifest = json.loads((data_dir / "download/manifest.json").read_text())
    assert manifest["files"][0]["sha256_seen"] == digest
    volume, meta = load_array(data_dir / "volume.npy")
    np.testing.assert_allclose(volume, phantom.voxels, atol=0.51)
    assert meta["kind"] == "dicom_series"


def test_the_volume_demo_plans_on_the_shipped_headsq_array(tmp_path):
    """config/volume_demo.yaml: the real headsq CT (kind array, its .npy and sidecar as the
    preparation's inputs), SR trained on other patients' DICOM frames, never on headsq."""
    command = SNAKEMAKE + [
        "--directory",
        str(tmp_path),
        "--configfile",
        str(ROOT / "config/volume_demo.yaml"),
        "-n",
        "-p",
        "--cores",
        "2",
        "--resources",
        "gpu=1",
    ]
    run = subprocess.run(command, capture_output=True, text=True, env=workflow_env(), timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    plan = run.stdout
    headsq = ROOT / "data/headsq/headsq.npy"
    assert f'"path": "{headsq}"' in plan and '"kind": "array"' in plan
    assert str(headsq.with_suffix(".json")) in plan  # a changed sidecar prepares it again
    assert "prepare_sr_volume" not in plan  # no second volume: SR trains on DICOM frames
    assert "--source pydicom-data:eCT_Supplemental.dcm" in plan
    for job in ("prepare_volume", "pretrain_sr", "fit_siren", "export_reconstruction"):
        assert job in plan
    assert not (tmp_path / "results").exists()
