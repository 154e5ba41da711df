"""posttrain/side_process.py: a spawned child's result, its error and its death come back to the caller, and a
caller that leaves early takes the child down with it."""

from __future__ import annotations

import os
import time

import pytest

from pipeline_assets.posttrain.side_process import SideProcess


def square(x: int) -> int:
    return x * x


def fail(message: str) -> None:
    raise ValueError(message)


def die() -> None:
    os._exit(3)


def sleep_forever(pid_file: str) -> None:
    with open(pid_file, "w") as f:
        f.write(str(os.getpid()))
    time.sleep(600)


def test_the_result_comes_back() -> None:
    with SideProcess(square, {"x": 7}) as side:
        assert side.result() == 49


def test_an_error_comes_back_with_the_child_traceback() -> None:
    with SideProcess(fail, {"message": "bad arm"}) as side, pytest.raises(RuntimeError, match="ValueError: bad arm"):
        side.result()


def test_a_child_that_dies_is_an_error_not_a_hang() -> None:
    with SideProcess(die, {}) as side, pytest.raises(RuntimeError, match="died without a result.*exit code 3"):
        side.result()


def test_leaving_early_terminates_the_child(tmp_path) -> None:
    pid_file = tmp_path / "pid"
    with pytest.raises(KeyError), SideProcess(sleep_forever, {"pid_file": str(pid_file)}):
        for _ in range(300):
            if pid_file.exists() and pid_file.read_text():
                break
            time.sleep(0.1)
        raise KeyError("the caller failed")
    pid = int(pid_file.read_text())
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_a_killed_caller_takes_the_child_with_it(tmp_path) -> None:
    """A SIGKILLed run worker leaves no training arm behind to write into the work dir a retry reuses."""
    import signal
    import subprocess
    import sys
    from pathlib import Path

    pid_file = tmp_path / "pid"
    caller = subprocess.Popen(
        [sys.executable, "-c", "import time, test_side_process as t; from pipeline_assets.posttrain.side_process "
         f"import SideProcess\nwith SideProcess(t.sleep_forever, {{'pid_file': {str(pid_file)!r}}}):\n"
         "    time.sleep(600)"],
        env={**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent), *sys.path])})
    for _ in range(300):
        if pid_file.exists() and pid_file.read_text():
            break
        time.sleep(0.1)
    pid = int(pid_file.read_text())
    caller.send_signal(signal.SIGKILL)
    caller.wait()
    for _ in range(50):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    os.kill(pid, signal.SIGKILL)
    pytest.fail("the side process outlived its killed caller")
