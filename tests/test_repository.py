"""The repository is self-contained: no test or source file reads data from outside the clone
(a user's clone has no shared folder beside it), and the data it ships carry their attribution."""

import json
import re
import subprocess
from pathlib import Path

from conftest import ROOT
from volinr.io import sha256_file

# This file names the patterns itself, so it is not scanned.
OUTSIDE = re.compile(
    "|".join(
        [
            re.escape(".." + "/shared"),
            r"parent\s*/\s*['\"]" + "shared",
            re.escape("/work" + "/shared"),
        ]
    )
)
CHECKED = ("src", "tests", "workflow", "config", ".test", "profiles", "benchmarks", "Makefile")


def tracked_text_files():
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", *CHECKED],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    for name in listed:
        path = ROOT / name
        binary = path.suffix in (".npy", ".pt", ".png", ".npz", ".dcm")
        if path.is_file() and not binary and path != Path(__file__).resolve():
            yield path


def test_no_file_reads_data_from_outside_the_clone():
    offenders = [
        f"{path.relative_to(ROOT)}:{number}: {line.strip()}"
        for path in tracked_text_files()
        for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1)
        if OUTSIDE.search(line)
    ]
    assert offenders == [], "refers to data outside the repository:\n" + "\n".join(offenders)


def test_the_outside_pattern_catches_what_it_should():
    # The form the headsq tests used before the data moved into the repository.
    assert OUTSIDE.search('HEADSQ = ROOT.parent / "' + "sha" + 'red/data/headsq"')
    assert OUTSIDE.search("np.load('" + ".." + "/sha" + "red/data/headsq/headsq.npy')")
    assert not OUTSIDE.search('HEADSQ = ROOT / "data/headsq"')


def test_shipped_headsq_volume_is_intact_and_attributed():
    folder = ROOT / "data/headsq"
    info = json.loads((folder / "headsq.json").read_text())
    assert sha256_file(folder / "headsq.npy") == info["sha256_npy"]
    attribution = (ROOT / "data/README.md").read_text()
    for fact in ("pyvista/vtk-data", "126ee906", "quarter.1", "Apache"):
        assert fact in attribution


def test_every_committed_json_file_is_strict_json():
    """JSON has no NaN or Infinity (volinr writes an infinity as null, see io.write_json)."""

    def refuse(name):
        raise ValueError(f"{name} is not JSON")

    listed = subprocess.run(
        ["git", "ls-files", "*.json"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    assert listed
    for name in listed:
        json.loads((ROOT / name).read_text(), parse_constant=refuse)
