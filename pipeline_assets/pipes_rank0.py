"""The trainer's side of Dagster Pipes: rank 0 of a torchrun job streams its log and reports its result.

Only rank 0 opens Pipes (every rank inherits the bootstrap environment; one writer keeps one message stream).
Outside a Pipes launch (a user running the trainer by hand) this is a no-op and logs go to stdout.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from typing import Any

RESULT_MESSAGE = "training_result"  # the custom message's "kind": resources/training.py waits for it


def is_rank0() -> bool:
    """True in the process that writes a stage's files: rank 0 of a torchrun/accelerate job, or no job at all."""
    return int(os.environ.get("RANK", "0")) == 0


class Rank0Reporter:
    def __init__(self, pipes: Any | None) -> None:
        self.pipes = pipes

    @property
    def log(self) -> Callable[[str], None]:
        return self.pipes.log.info if self.pipes is not None else print

    def result(self, **payload: Any) -> None:
        if self.pipes is not None:
            self.pipes.report_custom_message({"kind": RESULT_MESSAGE, **payload})


@contextlib.contextmanager
def rank0_pipes() -> Iterator[Rank0Reporter]:
    from dagster_pipes import DAGSTER_PIPES_CONTEXT_ENV_VAR, open_dagster_pipes

    if not is_rank0() or DAGSTER_PIPES_CONTEXT_ENV_VAR not in os.environ:
        yield Rank0Reporter(None)
        return
    with open_dagster_pipes() as pipes:
        yield Rank0Reporter(pipes)
