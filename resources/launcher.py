"""LauncherResource: the one resource that says where curation and training run (``LLMDAG_LAUNCHER``).

``kind`` and each engine's site settings live here once, shown once in the Launchpad: curation's datatrove
pipelines (resources/datatrove.py) and out-of-process training (resources/training.py) both read them.

- ``local``: datatrove's local executor on this machine's cores; training in the step's own process, or through
  Dagster Pipes when ``train_processes_per_node > 1``: ``torchrun`` for pretraining, ``accelerate launch`` with
  ``accelerate_config`` (resources/accelerate/) for the TRL stages that support it.
- ``slurm``: datatrove arrays via ``sbatch``; training as an ``sbatch`` job of ``srun torchrun`` / ``accelerate``.
- ``ray``: datatrove's Ray executor (``ray.address``, or an in-process cluster); training as ``local``.
- ``k8s``: every step is its own pod (pipeline_assets/k8s.py); inside it, as ``local``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import dagster as dg
from pydantic import Field

from resources import datatrove, training
from resources.engines import Launcher, RaySettings, SlurmSettings


class LauncherResource(dg.ConfigurableResource):
    kind: Launcher = Field(default="local", description="Where curation and training run: local, slurm, ray or "
                           "k8s (LLMDAG_LAUNCHER).")
    datatrove_workers: int = Field(default=2, description="Curation tasks at once; -1 = all.")
    train_processes_per_node: int = Field(default=1, ge=1, description="torchrun --nproc_per_node for "
                                          "pretraining (GPUs per node on CUDA); 1 on local = in the step's process.")
    accelerate_config: Literal["ddp", "fsdp2"] = Field(
        default="ddp", description="The TRL stages' `accelerate launch` config (resources/accelerate/<name>.yaml): "
        "ddp, or fsdp2 (CUDA only).")
    rdzv_port: int = Field(default=29500, description="c10d rendezvous port on a Slurm job's first node.")
    slurm: SlurmSettings = Field(default_factory=SlurmSettings)
    ray: RaySettings = Field(default_factory=RaySettings)

    def run_datatrove(self, pipeline: list, logging_dir: Path, tasks: int, workers: int | None = None) -> None:
        """Run ``pipeline`` as ``tasks`` ranks; blocks until every rank has a completion marker.

        Completed ranks are skipped on a rerun (datatrove's ``logging_dir/completions``), so a killed
        materialization resumes where it stopped.
        """
        workers = self.datatrove_workers if workers is None else workers
        if self.kind == "slurm":
            datatrove.run_slurm(pipeline, logging_dir, tasks, workers, self.slurm)
        elif self.kind == "ray":
            datatrove.run_ray(pipeline, logging_dir, tasks, workers, self.ray)
        else:
            datatrove.run_local(pipeline, logging_dir, tasks, workers)

    def trains_out_of_process(self) -> bool:
        return self.kind == "slurm" or self.train_processes_per_node > 1

    def run_trainer(self, context: dg.AssetExecutionContext, module: str, args: list[str], work_dir: Path,
                    runner: Literal["torchrun", "accelerate"] = "torchrun") -> dict[str, Any]:
        """``python -m module *args`` under ``runner`` (here, or as a Slurm job); rank 0's Pipes result."""
        accelerate = None
        if runner == "accelerate":
            accelerate = training.accelerate_config(self.accelerate_config)
            if self.accelerate_config == "fsdp2" and not self._has_gpus():
                raise dg.Failure("accelerate_config=fsdp2 needs CUDA GPUs (accelerate drops FSDP on CPU and every "
                                 "process would train alone); use ddp, or slurm.gpus_per_node > 0")
        return training.run_module(context, module, args, work_dir,
                                   slurm=self.slurm if self.kind == "slurm" else None,
                                   processes_per_node=self.train_processes_per_node, rdzv_port=self.rdzv_port,
                                   accelerate=accelerate)

    def _has_gpus(self) -> bool:
        if self.kind == "slurm":
            return self.slurm.gpus_per_node > 0
        import torch

        return torch.cuda.is_available()
