"""Training out of process: a trainer module under torchrun or ``accelerate launch``, here or as a Slurm job,
through Dagster Pipes.

Two runners: ``torchrun`` for pretraining (our own DDP loop), ``accelerate launch`` with a checked-in config
(resources/accelerate/) for the TRL stages, whose Trainer builds its distributed setup from accelerate's env.

- ``local`` with one process per node (tiny's default): the asset calls the trainer in its own process, the
  fast path (no second interpreter, no second torch import).
- ``local`` with ``processes_per_node > 1``: the runner on this machine, through Dagster Pipes: the trainer's
  rank 0 streams its log lines into the run and reports its result as a Pipes message; an interrupted step
  stops the runner and every rank it started.
- ``slurm``: ``sbatch --wait`` of a job that runs ``srun <runner>`` across its allocation (``slurm.nodes`` x
  ``processes_per_node``, c10d rendezvous on the first node), with Pipes over the shared filesystem (the
  context in the job's environment, messages in a file under the work dir); terminating the run ``scancel``s it.

Every path resumes the same way: the trainer starts from the newest complete checkpoint in its run dir.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import dagster as dg

from pipeline_assets.pipes_rank0 import RESULT_MESSAGE
from resources.engines import SlurmSettings

STOP_GRACE_S = 20  # after SIGTERM, how long the runner and its ranks get before SIGKILL
ACCELERATE_CONFIGS = Path(__file__).with_name("accelerate")  # ddp.yaml, fsdp2.yaml: `accelerate launch` configs


def accelerate_config(name: str) -> Path:
    """The checked-in ``accelerate launch`` config ``name`` (resources/accelerate/<name>.yaml)."""
    path = ACCELERATE_CONFIGS / f"{name}.yaml"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in ACCELERATE_CONFIGS.glob("*.yaml")))
        raise ValueError(f"accelerate config {name!r} not found; known: {known}")
    return path


def run_module(context: dg.AssetExecutionContext, module: str, args: list[str], work_dir: Path, *,
               slurm: SlurmSettings | None, processes_per_node: int, rdzv_port: int,
               accelerate: Path | None = None) -> dict[str, Any]:
    """Run ``python -m module *args`` under torchrun (``accelerate`` None) or ``accelerate launch --config_file
    accelerate`` through Pipes; returns rank 0's result message.

    ``slurm``: None = on this machine, else an sbatch job on that site. ``work_dir`` (on the filesystem every
    node shares) holds the Slurm script, its log and the Pipes message file.
    """
    work_dir.mkdir(parents=True, exist_ok=True)
    env = {"HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    if slurm is None:
        messages = _run_here(context, local_command(module, args, processes_per_node, accelerate), env)
    else:
        script = batch_script(module, args, work_dir, slurm, processes_per_node, rdzv_port, accelerate)
        messages = _run_on_slurm(context, script, work_dir, env, slurm, processes_per_node)
    results = [m for m in messages if isinstance(m, dict) and m.get("kind") == RESULT_MESSAGE]
    if not results:
        raise dg.Failure(f"{module} exited without reporting its result through Pipes (see the run's log)")
    return results[-1]


def local_command(module: str, args: list[str], processes_per_node: int, accelerate: Path | None) -> list[str]:
    """The runner's command line on this machine (a free rendezvous port: parallel runs never collide)."""
    if accelerate is None:
        return [_beside_python("torchrun"), "--standalone", f"--nproc_per_node={processes_per_node}", "-m", module,
                *args]
    return [_beside_python("accelerate"), "launch", "--config_file", str(accelerate), "--num_machines=1",
            f"--num_processes={processes_per_node}", "--main_process_port=0", "-m", module, *args]


def _run_here(context: dg.AssetExecutionContext, command: list[str], env: dict[str, str]) -> list:
    """The runner as a child process; an interrupted step stops it and every rank it started.

    Not ``PipesSubprocessClient``: it forwards only Dagster's own interrupt, as a SIGINT to the runner alone,
    which a process that inherited SIGINT ignored (a daemon or CI job started from a non-interactive shell)
    never acts on; its ranks trained on after the run ended.
    """
    with dg.open_pipes_session(context=context, context_injector=dg.PipesTempFileContextInjector(),
                               message_reader=dg.PipesTempFileMessageReader()) as session:
        proc = spawn(command, {**os.environ, **env, **session.get_bootstrap_env_vars()})
        try:
            rc = proc.wait()
        except BaseException:
            context.log.warning(f"interrupted: stopping {Path(command[0]).name} (pid {proc.pid}) and its ranks")
            stop_tree(proc)
            raise
        if rc != 0:
            raise dg.Failure(f"{Path(command[0]).name} exited with code {rc} (the ranks' tracebacks are in the "
                             "step's stderr)")
    return session.get_custom_messages()


_PR_SET_PDEATHSIG = 1


def _runner_preexec() -> None:
    """In the runner, before exec: default SIGINT/SIGTERM, and SIGTERM when the step's process dies.

    A process started with SIGTERM ignored (a CI job, a daemon under nohup) passes SIG_IGN on through exec: the
    runner would shrug off ``stop_tree``'s SIGTERM until it installs its own handlers, seconds into its imports.
    The death signal covers a SIGKILLed step, which runs no cleanup: without it the ranks trained on (measured,
    tests/test_scale_out.py); torchrun's agent stops its ranks on SIGTERM.
    """
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def spawn(command: list[str], env: dict[str, str]) -> subprocess.Popen:
    """Start a runner (torchrun, accelerate launch) that ``stop_tree`` can stop with every rank it starts."""
    return subprocess.Popen(command, env=env, preexec_fn=_runner_preexec)  # noqa: PLW1509 - no threads hold locks it uses


def stop_tree(proc: subprocess.Popen) -> None:
    """SIGTERM to the runner and every rank it started, SIGKILL to whatever is left after the grace period.

    The ranks are found by walking the runner's children (psutil): torchrun starts each rank in a session of
    its own, so the runner's process group does not hold them.
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
                 rdzv_port: int, accelerate: Path | None = None) -> str:
    """One sbatch script: one runner per node (srun), c10d rendezvous on the first node."""
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
    user_args = [module, *map(shlex.quote, args)]
    if accelerate is None:
        runner = " ".join(["torchrun", "--nnodes=$SLURM_JOB_NUM_NODES", f"--nproc_per_node={processes_per_node}",
                           "--rdzv-backend=c10d", f"--rdzv-endpoint=$HEAD:{rdzv_port}", "--rdzv-id=$SLURM_JOB_ID",
                           "-m", *user_args])
    else:
        # The node's rank is known only inside each srun task, hence the per-task shell.
        per_node = " ".join(["exec accelerate launch", "--config_file", shlex.quote(str(accelerate)),
                             "--num_machines=$SLURM_JOB_NUM_NODES",
                             f"--num_processes=$((SLURM_JOB_NUM_NODES * {processes_per_node}))",
                             "--machine_rank=$SLURM_NODEID", "--main_process_ip=$HEAD",
                             f"--main_process_port={rdzv_port}", "--rdzv_backend=c10d", "-m", *user_args])
        runner = "bash -c " + shlex.quote(per_node)
    return "\n".join([
        *lines, "set -euo pipefail",
        *([f"source {shlex.quote(activate)}"] if activate else []),
        'export HEAD=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)',
        "srun --kill-on-bad-exit=1 " + runner, ""])


def _beside_python(tool: str) -> str:
    """``tool`` from this interpreter's venv, else the PATH's: the runner must run the install Dagster runs."""
    found = Path(sys.executable).with_name(tool)
    return str(found) if found.exists() else (shutil.which(tool) or tool)
