"""DatatroveExecutorResource: the one place that picks datatrove's executor (local, Ray or Slurm).

Curation code builds a list of pipeline steps and asks this resource for an executor; the same steps
then run on 2 local cores, an in-process or remote Ray cluster, or a Slurm array. Nothing here
distributes work itself: datatrove's executors do.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Literal

import dagster as dg
from pydantic import Field


class DatatroveExecutorResource(dg.ConfigurableResource):
    kind: Literal["local", "ray", "slurm"] = Field(default="local", description="datatrove executor.")
    workers: int = Field(default=2, description="Parallel tasks at once (local/ray); -1 = all.")
    ray_address: str | None = Field(default=None, description="Ray cluster; None = in-process.")
    slurm_partition: str = Field(default="cpu", description="Slurm partition for --partition.")
    slurm_time: str = Field(default="02:00:00", description="Slurm --time per task.")
    slurm_cpus_per_task: int = Field(default=1)
    slurm_mem_per_cpu_gb: int = Field(default=2)
    slurm_poll_s: int = Field(default=30, description="How often to look for finished Slurm tasks.")

    def run(self, pipeline: list, logging_dir: Path, tasks: int, workers: int | None = None) -> None:
        """Run ``pipeline`` as ``tasks`` ranks; blocks until every rank has a completion marker.

        Completed ranks are skipped on a rerun (datatrove's ``logging_dir/completions``), so a killed
        materialization resumes where it stopped.
        """
        workers = self.workers if workers is None else workers
        if self.kind == "local":
            from datatrove.executor import LocalPipelineExecutor

            LocalPipelineExecutor(
                pipeline, tasks=tasks, workers=min(workers, tasks) if workers > 0 else -1,
                logging_dir=str(logging_dir), skip_completed=True,
            ).run()
        elif self.kind == "ray":
            import ray
            from datatrove.executor.ray import RayPipelineExecutor

            started = not ray.is_initialized()
            if started:
                ray.init(address=self.ray_address, include_dashboard=False)
            try:
                RayPipelineExecutor(
                    pipeline, tasks=tasks, workers=workers, logging_dir=str(logging_dir), skip_completed=True,
                    mem_per_cpu_gb=self.slurm_mem_per_cpu_gb,
                ).run()
            finally:
                if started:
                    ray.shutdown()
        else:
            from datatrove.executor.slurm import SlurmPipelineExecutor

            SlurmPipelineExecutor(
                pipeline, tasks=tasks, workers=workers, logging_dir=str(logging_dir), skip_completed=True,
                partition=self.slurm_partition, time=self.slurm_time, cpus_per_task=self.slurm_cpus_per_task,
                mem_per_cpu_gb=self.slurm_mem_per_cpu_gb, job_name=logging_dir.name,
            ).run()
            # sbatch returns at submission; the asset is done only when every rank has finished.
            while len(list((logging_dir / "completions").glob("*"))) < tasks:
                time.sleep(self.slurm_poll_s)
