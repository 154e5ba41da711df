"""datatrove steps for the engine tests, in a module of their own: a Slurm task unpickles them by reference,
so they must be importable there (the tests put this folder on the tasks' PYTHONPATH)."""

from __future__ import annotations

import time

from datatrove.pipeline.base import PipelineStep


class Sleep(PipelineStep):
    """Holds its task for ``seconds``: a job that is still running when the test interrupts the wait."""

    name = "sleep"

    def __init__(self, seconds: float) -> None:
        super().__init__()
        self.seconds = seconds

    def run(self, data, rank: int = 0, world_size: int = 1):
        time.sleep(self.seconds)
        yield from data or []


class Boom(PipelineStep):
    """Rank 1 raises: the asset must fail with that task's log."""

    name = "boom"

    def run(self, data, rank: int = 0, world_size: int = 1):
        if rank == 1:
            raise ValueError("rank one exploded on the cluster")
        yield from data or []
