"""Training out of process: a trainer module under torchrun, here or as a Slurm job, through Dagster Pipes.

- ``local`` with one process per node (tiny's default): the asset calls the trainer in its own process, the
  fast path (no second interpreter, no second torch import).
- ``local`` with ``processes_per_node > 1``: ``torchrun --standalone`` on this machine, through Dagster Pipes:
  the trainer's rank 0 streams its log lines into the run and reports its result as a Pipes message; an
  interrupted step signals torchrun and the ranks it started (not yet verified to stop ranks that inherited
  SIGTERM ignored: docs/recipes.md, Scale-out).
- ``slurm``: ``sbatch --wait`` of a job that runs ``srun torchrun --rdzv-backend c10d`` across its allocation
  (``slurm.nodes`` x ``processes_per_node``), with Pipes over the shared filesystem (the context in the job's
  environment, messages in a file under the run dir); terminating the run ``scancel``s the job.

Every path resumes the same way: the trainer starts from the newest complete checkpoint in its run dir.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import dagster as dg

from pipeline_assets.pipes_rank0 import RESULT_MESSAGE
from resources.engines import SlurmSettings

STOP_GRACE_S = 20  # after SIGTERM, how long torchrun and its ranks get before SIGKILL


def run_module(context: dg.AssetExecutionContext, module: str, args: list[str], work_dir: Path, *,
               slurm: SlurmSettings | None, processes_per_node: int, rdzv_port: int) -> dict[str, Any]:
    """Run ``python -m module *args`` under torchrun through Pipes; returns rank 0's result message.

    ``slurm``: None = torchrun on this machine, else an sbatch job on that site. ``work_dir`` (on the
    filesystem every node shares) holds the Slurm script, its log and the Pipes message file.
    """
    work_dir.mkdir(parents=True, exist_ok=True)
    env = {"HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    if slurm is None:
        command = [_torchrun(), "--standalone", f"--nproc_per_node={processes_per_node}", "-m", module, *args]
        messages = _run_here(context, command, env)
    else:
        script = batch_script(module, args, work_dir, slurm, processes_per_node, rdzv_port)
        messages = _run_on_slurm(context, script, work_dir, env, slurm, processes_per_node)
    results = [m for m in messages if isinstance(m, dict) and m.get("kind") == RESULT_MESSAGE]
    if not results:
        raise dg.Failure(f"{module} exited without reporting its result through Pipes (see the run's log)")
    return results[-1]


def _run_here(context: dg.AssetExecutionContext, command: list[str], env: dict[str, str]) -> list:
    """torchrun as a child process; an interrupted step stops it and every rank it started.

    Not ``PipesSubprocessClient``: it forwards only Dagster's own interrupt, as a SIGINT to torchrun alone, which
    a process that inherited SIGINT ignored (a daemon or CI job started from a non-interactive shell) never
    acts on; its ranks trained on after the run ended.
    """
    with dg.open_pipes_session(context=context, context_injector=dg.PipesTempFileContextInjector(),
                               message_reader=dg.PipesTempFileMessageReader()) as session:
        proc = subprocess.Popen(command, env={**os.environ, **env, **session.get_bootstrap_env_vars()})
        try:
            rc = proc.wait()
        except BaseException:
            context.log.warning(f"interrupted: stopping torchrun (pid {proc.pid}) and its ranks")
            _stop_group(proc)
            raise
        if rc != 0:
            raise dg.Failure(f"torchrun exited with code {rc} (the ranks' tracebacks are in the step's stderr)")
    return session.get_custom_messages()


def _stop_group(proc: subprocess.Popen) -> None:
    """SIGTERM to torchrun and every rank it started, SIGKILL to whatever is left after the grace period.

    The ranks are found by walking torchrun's children (psutil) rather than its process group. Open: in a
    process with SIGTERM and SIGINT ignored (this repo's CI shell) ranks were still training 50 s after the
    interrupt; docs/recipes.md, Scale-out.
    """
    import psutil

    try:
        root = psutil.Process(proc.pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return
    for p in procs:
        with contextlib.suppress(psutil.NoSuchProcess):
            p.terminate()
    _, alive = psutil.wait_procs(procs, timeout=STOP_GRACE_S)
    for p in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            p.kill()
    psutil.wait_procs(alive, timeout=5)
    proc.poll()


def _run_on_slurm(context: dg.AssetExecutionContext, script_text: str, work_dir: Path, env: dict[str, str],
                  settings: SlurmSettings, processes_per_node: int) -> list:
    if not shutil.which("sbatch"):
        raise dg.Failure("LLMDAG_LAUNCHER=slurm but no sbatch on the PATH (set PATH / SLURM_CONF)")
    messages_file = work_dir / f"pipes-{context.run.run_id[:8]}.jsonl"
    messages_file.unlink(missing_ok=True)
    reader = dg.PipesFileMessageReader(str(messages_file))
    with dg.open_pipes_session(context=context, context_injector=dg.PipesEnvContextInjector(),
                               message_reader=reader) as session:
        script = work_dir / "train.sbatch"
        script.write_text(script_text)
        job_env = {**os.environ, **env, **session.get_bootstrap_env_vars()}
        proc = subprocess.Popen(["sbatch", "--wait", "--parsable", "--export=ALL", str(script)], env=job_env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        job_id = ""
        try:
            job_id = (proc.stdout.readline() if proc.stdout else "").strip().split(";")[0]
            context.log.info(f"Slurm job {job_id}: {settings.nodes} node(s) x {processes_per_node} process(es); "
                             f"log {work_dir / f'slurm-{job_id}.out'}")
            rc = proc.wait(timeout=settings.deadline_s)
        except BaseException:
            # A terminated Dagster run (an interrupt in this wait) or the deadline: the job must not go on.
            if job_id:
                subprocess.run(["scancel", job_id], capture_output=True, timeout=60)
                context.log.warning(f"cancelled Slurm job {job_id}")
            proc.kill()
            raise
        if rc != 0:
            log = work_dir / f"slurm-{job_id}.out"
            tail = "\n".join(log.read_text(errors="replace").splitlines()[-40:]) if log.is_file() else ""
            err = proc.stderr.read().strip() if proc.stderr else ""
            raise dg.Failure(f"Slurm job {job_id} failed (sbatch exit {rc} {err}); {log}:\n{tail}")
        time.sleep(0.5)  # the reader thread's last poll of the message file
    return session.get_custom_messages()


def batch_script(module: str, args: list[str], work_dir: Path, s: SlurmSettings, processes_per_node: int,
                 rdzv_port: int) -> str:
    """One sbatch script: one torchrun per node (srun), c10d rendezvous on the first node."""
    directives = {
        "job-name": f"llmdag-train-{work_dir.parent.name}"[:60],
        "nodes": s.nodes, "ntasks-per-node": 1,
        "cpus-per-task": s.cpus_per_task * processes_per_node,
        "mem-per-cpu": f"{round(s.mem_per_cpu_gb * 1024)}M", "time": s.time,
        "output": str(work_dir / "slurm-%j.out"),
        **({"partition": s.partition} if s.partition else {}), **({"qos": s.qos} if s.qos else {}),
        **({"gpus-per-node": s.gpus_per_node} if s.gpus_per_node else {}),
        **s.extra_sbatch_args(),
    }
    lines = ["#!/bin/bash"] + [f"#SBATCH --{k}={v}" if v != "" else f"#SBATCH --{k}" for k, v in directives.items()]
    activate = s.activate_script()
    torchrun = ["torchrun", "--nnodes=$SLURM_JOB_NUM_NODES", f"--nproc_per_node={processes_per_node}",
                "--rdzv-backend=c10d", f"--rdzv-endpoint=$HEAD:{rdzv_port}", "--rdzv-id=$SLURM_JOB_ID",
                "-m", module, *map(shlex.quote, args)]
    return "\n".join([
        *lines, "set -euo pipefail",
        *([f"source {shlex.quote(activate)}"] if activate else []),
        'HEAD=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)',
        "srun --kill-on-bad-exit=1 " + " ".join(torchrun), ""])


def _torchrun() -> str:
    found = Path(sys.executable).with_name("torchrun")
    return str(found) if found.exists() else (shutil.which("torchrun") or "torchrun")
