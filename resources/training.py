"""TrainingLauncher: where a training step's trainer runs, and how its results come back to Dagster.

- ``local`` with one process per node (tiny's default): the asset calls the trainer in its own process, the
  fast path (no second interpreter, no second torch import).
- ``local`` with ``processes_per_node > 1``: ``torchrun --standalone`` on this machine, through Dagster Pipes
  (``PipesSubprocessClient``): the trainer's rank 0 streams its log lines into the run and reports its result
  as a Pipes message; terminating the run forwards the interrupt to torchrun, which stops every rank.
- ``slurm``: ``sbatch --wait`` of a job that runs ``srun torchrun --rdzv-backend c10d`` across its allocation
  (``slurm.nodes`` x ``processes_per_node``), with Pipes over the shared filesystem (the context in the job's
  environment, messages in a file under the run dir); terminating the run ``scancel``s the job.

Every path resumes the same way: the trainer starts from the newest complete checkpoint in its run dir.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Literal

import dagster as dg
from pydantic import Field

from pipeline_assets.pipes_rank0 import RESULT_MESSAGE
from resources.engines import SlurmSettings


class TrainingLauncher(dg.ConfigurableResource):
    kind: Literal["local", "slurm"] = Field(default="local", description="local: this machine; slurm: an sbatch "
                                            "job (LLMDAG_LAUNCHER=slurm). Ray and k8s steps train in their own pod "
                                            "or worker, locally.")
    processes_per_node: int = Field(default=1, ge=1, description="torchrun --nproc_per_node (GPUs per node on "
                                    "CUDA); 1 on local = in the step's own process.")
    rdzv_port: int = Field(default=29500, description="c10d rendezvous port on the job's first node (slurm).")
    slurm: SlurmSettings = Field(default_factory=SlurmSettings)

    def out_of_process(self) -> bool:
        return self.kind == "slurm" or self.processes_per_node > 1

    def run_module(self, context: dg.AssetExecutionContext, module: str, args: list[str],
                   work_dir: Path) -> dict[str, Any]:
        """Run ``python -m module *args`` under torchrun through Pipes; returns rank 0's result message.

        ``work_dir`` (on the filesystem every node shares) holds the Slurm script, its log and the Pipes
        message file.
        """
        work_dir.mkdir(parents=True, exist_ok=True)
        env = {"HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
        if self.kind == "local":
            command = [_torchrun(), "--standalone", f"--nproc_per_node={self.processes_per_node}", "-m", module, *args]
            invocation = dg.PipesSubprocessClient(env={**os.environ, **env}).run(command=command, context=context)
            messages = invocation.get_custom_messages()
        else:
            messages = self._run_on_slurm(context, module, args, work_dir, env)
        results = [m for m in messages if isinstance(m, dict) and m.get("kind") == RESULT_MESSAGE]
        if not results:
            raise dg.Failure(f"{module} exited without reporting its result through Pipes (see the run's log)")
        return results[-1]

    def _run_on_slurm(self, context: dg.AssetExecutionContext, module: str, args: list[str], work_dir: Path,
                      env: dict[str, str]) -> list:
        if not shutil.which("sbatch"):
            raise dg.Failure("LLMDAG_LAUNCHER=slurm but no sbatch on the PATH (set PATH / SLURM_CONF)")
        settings = self.slurm
        messages_file = work_dir / f"pipes-{context.run.run_id[:8]}.jsonl"
        messages_file.unlink(missing_ok=True)
        reader = dg.PipesFileMessageReader(str(messages_file))
        with dg.open_pipes_session(context=context, context_injector=dg.PipesEnvContextInjector(),
                                   message_reader=reader) as session:
            script = work_dir / "train.sbatch"
            script.write_text(self.batch_script(module, args, work_dir))
            job_env = {**os.environ, **env, **session.get_bootstrap_env_vars()}
            proc = subprocess.Popen(["sbatch", "--wait", "--parsable", "--export=ALL", str(script)], env=job_env,
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            job_id = ""
            try:
                job_id = (proc.stdout.readline() if proc.stdout else "").strip().split(";")[0]
                context.log.info(f"Slurm job {job_id}: {settings.nodes} node(s) x {self.processes_per_node} "
                                 f"process(es); log {work_dir / 'slurm-%j.out'.replace('%j', job_id)}")
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

    def batch_script(self, module: str, args: list[str], work_dir: Path) -> str:
        """One sbatch script: one torchrun per node (srun), c10d rendezvous on the first node."""
        s = self.slurm
        directives = {
            "job-name": f"llmdag-train-{work_dir.name}"[:60],
            "nodes": s.nodes, "ntasks-per-node": 1,
            "cpus-per-task": s.cpus_per_task * self.processes_per_node,
            "mem-per-cpu": f"{round(s.mem_per_cpu_gb * 1024)}M", "time": s.time,
            "output": str(work_dir / "slurm-%j.out"),
            **({"partition": s.partition} if s.partition else {}), **({"qos": s.qos} if s.qos else {}),
            **({"gpus-per-node": s.gpus_per_node} if s.gpus_per_node else {}),
            **s.extra_sbatch_args(),
        }
        lines = ["#!/bin/bash"] + [f"#SBATCH --{k}={v}" if v != "" else f"#SBATCH --{k}"
                                   for k, v in directives.items()]
        activate = s.activate_script()
        torchrun = ["torchrun", "--nnodes=$SLURM_JOB_NUM_NODES", f"--nproc_per_node={self.processes_per_node}",
                    "--rdzv-backend=c10d", f"--rdzv-endpoint=$HEAD:{self.rdzv_port}", "--rdzv-id=$SLURM_JOB_ID",
                    "-m", module, *map(shlex.quote, args)]
        return "\n".join([
            *lines, "set -euo pipefail",
            *([f"source {shlex.quote(activate)}"] if activate else []),
            'HEAD=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)',
            "srun --kill-on-bad-exit=1 " + " ".join(torchrun), ""])


def _torchrun() -> str:
    found = Path(sys.executable).with_name("torchrun")
    return str(found) if found.exists() else (shutil.which("torchrun") or "torchrun")
