"""Where steps run (``LLMDAG_LAUNCHER``) and each engine's site settings, apart from the profile's sizes.

The profile (tiny / small / scale) says how big the models and data are; the launcher says where the work
runs: ``local`` (this machine), ``slurm`` (sbatch on the cluster whose ``sbatch`` is on the PATH, honouring
``SLURM_CONF``), ``ray`` (a Ray cluster, or an in-process one) or ``k8s`` (each Dagster step a Kubernetes
job). Site details (partition, account, venv, Ray address, ...) are resource config, so the launchpad can
change them per run without a code change.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Literal, get_args

import dagster as dg
from pydantic import Field

Launcher = Literal["local", "slurm", "ray", "k8s"]
LAUNCHERS: tuple[str, ...] = get_args(Launcher)


def default_launcher() -> str:
    """``LLMDAG_LAUNCHER``, ``local`` when unset; anything else is a clear error at load time."""
    name = os.environ.get("LLMDAG_LAUNCHER", "local")
    if name not in LAUNCHERS:
        raise ValueError(f"LLMDAG_LAUNCHER={name!r}; valid: {', '.join(LAUNCHERS)}")
    return name


def current_venv_activate() -> str | None:
    """This interpreter's venv ``activate`` script: Slurm tasks run the same install as Dagster."""
    activate = Path(sys.prefix) / "bin" / "activate"
    return str(activate) if sys.prefix != sys.base_prefix and activate.is_file() else None


class SlurmSettings(dg.Config):
    """One site's Slurm: every field maps to an ``sbatch`` option (None = the cluster's own default)."""

    partition: str | None = Field(default=None, description="--partition; None = the cluster's default.")
    account: str | None = Field(default=None, description="--account.")
    qos: str | None = Field(default=None, description="--qos; None = the cluster's default.")
    time: str = Field(default="02:00:00", description="--time per task.")
    nodes: int = Field(default=1, ge=1, description="Nodes per training job (curation tasks take one).")
    gpus_per_node: int = Field(default=0, ge=0, description="GPUs per node for training jobs.")
    cpus_per_task: int = Field(default=1, ge=1)
    mem_per_cpu_gb: float = Field(default=2, gt=0)
    venv: str | None = Field(default=None, description="Script sourced before a task (a venv's bin/activate); "
                             "None = this Dagster process's venv.")
    sbatch_args: dict[str, str] = Field(default_factory=dict, description="Extra sbatch options, e.g. "
                                        '{"constraint": "a100", "exclusive": ""}.')
    poll_s: float = Field(default=30, gt=0, description="How often to look for finished tasks.")
    deadline_s: float = Field(default=86_400, gt=0, description="Fail the asset if a job has not finished this "
                              "many seconds after submission (queue time included).")

    def activate_script(self) -> str | None:
        return self.venv or current_venv_activate()

    def extra_sbatch_args(self) -> dict[str, str]:
        """The options datatrove's executor has no argument for; the partition when none was set is omitted."""
        return {**({"account": self.account} if self.account else {}), **self.sbatch_args}


class RaySettings(dg.Config):
    """One site's Ray cluster."""

    address: str | None = Field(default=None, description="Ray cluster address ('auto', 'ray://host:10001'); "
                                "None = an in-process cluster for the step.")
    runtime_env: dict = Field(default_factory=dict, description="Ray runtime_env for the tasks (env_vars, pip, "
                              "working_dir ...).")
    cpus_per_task: int = Field(default=1, ge=1)
    mem_per_cpu_gb: float = Field(default=1, gt=0, description="A Ray memory reservation per CPU: tasks wait "
                                  "until a node has it free.")
