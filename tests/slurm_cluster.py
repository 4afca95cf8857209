"""A single-node SLURM cluster on this machine, for the profile's end-to-end test.

Starts munged, slurmctld and slurmd (without systemd) with a slurm.conf in a temporary folder,
declares a fake GPU (gres.conf, File=/dev/null) so that GPU-requesting jobs schedule on a
machine without one, and stops exactly the processes it started. Accounting is off (no
slurmdbd); the record of completed jobs is the jobcomp text file.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from contextlib import contextmanager
from pathlib import Path

# The plugin's job step drops SLURM_CONF before its nested srun, so srun inside a job reads the
# system path; the test cluster links its temporary config there while it runs.
SYSTEM_CONF = Path("/etc/slurm/slurm.conf")
DAEMONS = ("slurmctld", "slurmd", "munged", "sbatch", "squeue", "sinfo", "scontrol")


def unavailable_reason() -> str | None:
    """Why no cluster can be started here (None: it can)."""
    missing = [name for name in DAEMONS if shutil.which(name) is None
               and not Path(f"/usr/sbin/{name}").exists()]  # fmt: skip
    if missing:
        return (f"SLURM is not installed ({', '.join(missing)} missing; .ci/run installs "
                "slurmctld slurmd slurm-client munge with apt-get as root)")  # fmt: skip
    if os.geteuid() != 0:
        return "starting slurmctld/slurmd/munged needs root"
    if not Path("/etc/munge/munge.key").exists():
        return "no munge key at /etc/munge/munge.key"
    if SYSTEM_CONF.exists() and not SYSTEM_CONF.is_symlink():
        return f"{SYSTEM_CONF} exists: this machine has a SLURM of its own, not touched"
    return None


def _binary(name: str) -> str:
    return shutil.which(name) or f"/usr/sbin/{name}"


def _node_resources() -> tuple[int, int]:
    """CPUs and memory (MB) of this machine as slurmd sees them."""
    out = subprocess.run([_binary("slurmd"), "-C"], capture_output=True, text=True).stdout
    fields = dict(item.split("=", 1) for item in out.split() if "=" in item)
    return int(fields.get("CPUs", os.cpu_count() or 1)), int(fields.get("RealMemory", 2000))


def write_config(folder: Path) -> Path:
    host = socket.gethostname().split(".")[0]
    cpus, memory_mb = _node_resources()
    for sub in ("state", "spool", "log"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    conf = folder / "slurm.conf"
    conf.write_text(
        f"""ClusterName=volinr-test
SlurmctldHost={host}(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=1000
MailProg=/bin/true
StateSaveLocation={folder}/state
SlurmdSpoolDir={folder}/spool
SlurmctldPidFile={folder}/slurmctld.pid
SlurmdPidFile={folder}/slurmd.pid
SlurmctldLogFile={folder}/log/slurmctld.log
SlurmdLogFile={folder}/log/slurmd.log
SlurmctldPort=16817
SlurmdPort=16818
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/filetxt
JobCompLoc={folder}/jobcomp.txt
JobAcctGatherType=jobacct_gather/none
MinJobAge=600
ReturnToService=2
GresTypes=gpu
NodeName={host} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={memory_mb} Gres=gpu:1 State=UNKNOWN
PartitionName=cpu Nodes={host} Default=YES MaxTime=INFINITE State=UP
PartitionName=gpu Nodes={host} Default=NO MaxTime=INFINITE State=UP
"""
    )
    (folder / "gres.conf").write_text(f"AutoDetect=off\nNodeName={host} Name=gpu File=/dev/null\n")
    return conf


@contextmanager
def slurm_cluster(folder: Path, timeout_seconds: float = 60.0):
    """Yield the environment (SLURM_CONF set) of a running single-node cluster."""
    conf = write_config(folder)
    env = dict(os.environ, SLURM_CONF=str(conf))
    started: list[subprocess.Popen] = []
    munge_run = Path("/run/munge")
    SYSTEM_CONF.parent.mkdir(parents=True, exist_ok=True)
    if SYSTEM_CONF.is_symlink():
        SYSTEM_CONF.unlink()
    SYSTEM_CONF.symlink_to(conf)
    try:
        if not (munge_run / "munge.socket.2").exists():
            munge_run.mkdir(parents=True, exist_ok=True)
            shutil.chown(munge_run, "munge", "munge")
            started.append(subprocess.Popen(
                ["runuser", "-u", "munge", "--", _binary("munged"), "--foreground"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))  # fmt: skip
            _wait(lambda: (munge_run / "munge.socket.2").exists(), timeout_seconds, "munged")
        for daemon in ("slurmctld", "slurmd"):
            log = open(folder / "log" / f"{daemon}.out", "w")
            started.append(subprocess.Popen([_binary(daemon), "-D"], env=env, stdout=log,
                                            stderr=subprocess.STDOUT))  # fmt: skip
        _wait(lambda: _node_idle(env), timeout_seconds, "the SLURM node to become idle")
        yield env
    finally:
        for process in reversed(started):
            process.terminate()
        for process in reversed(started):
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
        if SYSTEM_CONF.is_symlink():
            SYSTEM_CONF.unlink()


def _node_idle(env: dict) -> bool:
    out = subprocess.run([_binary("sinfo"), "-h", "-o", "%t"], env=env, capture_output=True,
                         text=True)  # fmt: skip
    return out.returncode == 0 and "idle" in out.stdout


def _wait(condition, timeout_seconds: float, what: str) -> None:
    deadline = time.monotonic() + timeout_seconds
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.5)
    raise TimeoutError(f"timed out after {timeout_seconds:.0f} s waiting for {what}")


def job_records(folder: Path) -> list[dict[str, str]]:
    """The jobcomp file's records, one dict of KEY=VALUE fields per completed job."""
    path = folder / "jobcomp.txt"
    if not path.exists():
        return []
    return [dict(field.split("=", 1) for field in line.split() if "=" in field)
            for line in path.read_text().splitlines() if line.strip()]  # fmt: skip
