"""A real one-node Slurm cluster (Debian's slurm-wlm 22.05 + munge) for tests, started as root in ~3 s.

Recipe from ../shared/notes/ops.md §9: SlurmUser=root, proctrack/linuxproc, task/none, no accounting,
``slurmd -N localhost`` (the host name differs). Ports are picked free on 127.0.0.1; everything lives in a
temp dir and ``SLURM_CONF`` points at it, so the machine's own Slurm setup (if any) is never touched.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

BINARIES = ("slurmctld", "slurmd", "sbatch", "squeue", "scancel", "munged")


def missing_binaries() -> list[str]:
    return [b for b in BINARIES if not shutil.which(b) and not Path(f"/usr/sbin/{b}").exists()]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _bin(name: str) -> str:
    return shutil.which(name) or f"/usr/sbin/{name}"


def _start_munge() -> None:
    run = Path("/run/munge")
    run.mkdir(parents=True, exist_ok=True)
    shutil.chown(run, "munge", "munge")
    if subprocess.run(["munge", "-n"], capture_output=True).returncode == 0:
        return  # already running
    subprocess.run(["runuser", "-u", "munge", "--", _bin("munged")], check=True)


@contextmanager
def slurm_cluster(tmp: Path, cpus: int = 2) -> Iterator[dict[str, str]]:
    """Yield the environment (``SLURM_CONF``) of a running one-node cluster; stops its daemons after."""
    if missing := missing_binaries():
        raise RuntimeError(f"Slurm is not installed ({missing}): apt-get install -y slurm-wlm munge")
    _start_munge()
    for d in ("state", "spool", "log"):
        (tmp / d).mkdir(parents=True, exist_ok=True)
    ctld_port, d_port = _free_port(), _free_port()
    conf = tmp / "slurm.conf"
    conf.write_text(f"""\
ClusterName=llmdagtest
SlurmctldHost=localhost(127.0.0.1)
SlurmctldPort={ctld_port}
SlurmdPort={d_port}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
StateSaveLocation={tmp / 'state'}
SlurmdSpoolDir={tmp / 'spool'}
SlurmctldPidFile={tmp / 'slurmctld.pid'}
SlurmdPidFile={tmp / 'slurmd.pid'}
SlurmctldLogFile={tmp / 'log' / 'slurmctld.log'}
SlurmdLogFile={tmp / 'log' / 'slurmd.log'}
MpiDefault=none
KillWait=2
NodeName=localhost NodeAddr=127.0.0.1 CPUs={cpus} RealMemory=4000 State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
""")
    env = {"SLURM_CONF": str(conf)}
    full_env = {**os.environ, **env}
    subprocess.run([_bin("slurmctld"), "-f", str(conf)], check=True, env=full_env)
    subprocess.run([_bin("slurmd"), "-f", str(conf), "-N", "localhost"], check=True, env=full_env)
    try:
        deadline = time.monotonic() + 30
        while True:
            state = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, env=full_env)
            if state.returncode == 0 and state.stdout.strip() in ("idle", "mixed", "allocated"):
                break
            if time.monotonic() > deadline:
                log = (tmp / "log" / "slurmctld.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"Slurm did not come up: sinfo {state.stdout!r} {state.stderr!r}\n{log}")
            time.sleep(0.3)
        yield env
    finally:
        subprocess.run(["scancel", "--user", "root"], env=full_env, capture_output=True)
        # slurmd first (it would wait ~9 s on an absent controller), each matched by this cluster's conf path.
        for daemon in ("slurmd", "slurmctld"):
            pattern = f"{daemon} -f {conf}"
            subprocess.run(["pkill", "-TERM", "-f", pattern], capture_output=True)
            deadline = time.monotonic() + 10
            while subprocess.run(["pgrep", "-f", pattern], capture_output=True).returncode == 0:
                if time.monotonic() > deadline:
                    subprocess.run(["pkill", "-KILL", "-f", pattern], capture_output=True)
                    break
                time.sleep(0.2)
