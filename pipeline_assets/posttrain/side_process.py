"""A function run in a spawned child process beside the caller's own work, its result or error brought back.

Why by hand: ``concurrent.futures.ProcessPoolExecutor`` cannot stop a running task when the caller fails
(its ``shutdown(cancel_futures=True)`` only drops queued ones) and leaves the child running when the caller
is SIGKILLed; a training arm left behind would keep writing into a work dir that a retry reuses. Here the
child dies with its parent (``PR_SET_PDEATHSIG``) and is killed when the caller leaves the block early.

    with SideProcess(fn, kwargs) as side:   # fn: a module-level function (spawn pickles it by name)
        ...                                 # the caller's own work, concurrently
        result = side.result()              # fn's return value, or RuntimeError with the child's traceback
"""

from __future__ import annotations

import ctypes
import multiprocessing
import signal
import sys
import traceback
from collections.abc import Callable
from typing import Any

_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def _child(conn: Any, fn: Callable[..., Any], kwargs: dict[str, Any]) -> None:
    _die_with_parent()
    try:
        conn.send(("ok", fn(**kwargs)))
    except BaseException:  # noqa: BLE001 - every failure goes back to the caller, who raises it
        conn.send(("error", traceback.format_exc()))
    finally:
        conn.close()


class SideProcess:
    def __init__(self, fn: Callable[..., Any], kwargs: dict[str, Any]) -> None:
        ctx = multiprocessing.get_context("spawn")  # fork would copy torch's thread pools and locks mid-use
        self._recv, send = ctx.Pipe(duplex=False)
        self._proc = ctx.Process(target=_child, args=(send, fn, kwargs), name=getattr(fn, "__name__", "side"))
        self._proc.start()
        send.close()  # the child holds the only write end: its death without a result reads as EOF

    def result(self) -> Any:
        try:
            status, value = self._recv.recv()
        except EOFError:
            self._proc.join()
            raise RuntimeError(f"side process {self._proc.name} died without a result "
                               f"(exit code {self._proc.exitcode})") from None
        self._proc.join()
        if status == "error":
            raise RuntimeError(f"side process {self._proc.name} failed:\n{value}")
        return value

    def __enter__(self) -> SideProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._proc.is_alive():
            # SIGKILL, not terminate()'s SIGTERM: a child that inherited SIGTERM ignored (from whatever started
            # the pipeline) would otherwise outlive this block, and join() below would wait for it for ever.
            self._proc.kill()
        self._proc.join()
        self._recv.close()
