"""Run model-written Python against asserts in a locked-down subprocess; `code_execution_reward` for GRPO.

    python -m pipeline_assets.posttrain.sandbox 'def add(a, b):\n    return a + b' 'assert add(2, 3) == 5'

No command is needed in the pipeline: rl.py picks `code_execution_reward` by name (`reward_funcs=
("code_execution",)`) for datasets with a `tests` column. What one run gets (each is tested in
tests/test_posttrain_sft_rl.py):
  * a fresh temp dir as cwd, HOME and TMPDIR, removed afterwards;
  * `python -I -S`: no PYTHON* env vars, no user or site packages (stdlib only), and an env with nothing
    but PATH/LANG/HOME/TMPDIR, so no proxy variables or credentials leak in;
  * rlimits set in `preexec_fn` before exec: address space (RLIMIT_AS; a memory bomb gets MemoryError or
    dies), CPU seconds, file size (RLIMIT_FSIZE), no core dumps;
  * a wall-clock timeout; the child runs in its own session and the whole process group is SIGKILLed on
    expiry, so children it forked die too;
  * no network: a new network namespace via `unshare -rn` (unprivileged user + net namespace: only a
    down loopback exists, every connect fails). Where user namespaces are disabled (some containers,
    kernels with unprivileged_userns_clone=0) it falls back to a guard that replaces `socket.socket.connect`
    and friends before the code runs: enough against accidental network use by a model, NOT against code
    that deliberately uses `_socket` or ctypes. `SandboxResult.network` says which one applied; run untrusted
    code at scale inside a container or gVisor with networking off instead.
Not covered: fork bombs are only bounded by the timeout (RLIMIT_NPROC counts every process of the user,
so it cannot be set per sandbox without breaking the caller).
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

_NETWORK_GUARD = '''\
import socket as _s
def _no_network(*args, **kwargs):
    raise OSError("network access is disabled in the llmdag sandbox")
for _name in ("connect", "connect_ex", "sendto", "bind"):
    setattr(_s.socket, _name, _no_network)
_s.create_connection = _no_network
_s.getaddrinfo = _no_network
del _s, _name, _no_network
'''


@dataclass(frozen=True)
class SandboxLimits:
    """Per-run limits. Defaults fit short test-style snippets (stdlib only)."""

    timeout_s: float = 5.0  # wall clock, including interpreter start (~20 ms)
    memory_mb: int = 256  # RLIMIT_AS; `python -I -S` itself maps ~15 MB
    cpu_s: int = 5  # RLIMIT_CPU backstop for a busy loop when the wall clock is generous
    max_file_mb: int = 8  # RLIMIT_FSIZE: largest file the code may write
    max_output_chars: int = 2000  # of stdout/stderr kept in the result
    isolate_network: bool = True

    def validate(self) -> SandboxLimits:
        if self.timeout_s <= 0:
            raise ValueError(f"SandboxLimits.timeout_s={self.timeout_s} must be > 0")
        for name in ("memory_mb", "cpu_s", "max_file_mb", "max_output_chars"):
            if getattr(self, name) < 1:
                raise ValueError(f"SandboxLimits.{name}={getattr(self, name)} must be >= 1")
        if self.memory_mb < 32:
            raise ValueError(f"SandboxLimits.memory_mb={self.memory_mb} is below what the interpreter needs to "
                             "start (~32 MB); raise it")
        return self


@dataclass(frozen=True)
class SandboxResult:
    passed: bool  # exit status 0 within the limits: every assert held
    returncode: int | None  # None when killed on timeout; negative = killed by that signal
    timed_out: bool
    stdout: str
    stderr: str
    duration_s: float
    network: str  # "namespace" (unshare -rn), "guard" (socket patched), or "allowed"


@lru_cache(maxsize=1)
def network_namespace_available() -> bool:
    """True when `unshare -rn` can create an unprivileged user + network namespace here."""
    exe = shutil.which("unshare")
    if exe is None:
        return False
    try:
        probe = subprocess.run([exe, "-rn", "true"], capture_output=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return False
    return probe.returncode == 0


def _limit(limits: SandboxLimits) -> None:
    """preexec_fn: runs in the child between fork and exec; only async-signal-safe-ish calls here."""
    mem = limits.memory_mb * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_AS, (mem, mem))
    resource.setrlimit(resource.RLIMIT_CPU, (limits.cpu_s, limits.cpu_s + 1))
    fsize = limits.max_file_mb * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def _clip(text: bytes, n: int) -> str:
    s = text.decode("utf-8", errors="replace")
    return s if len(s) <= n else s[:n] + f"... [{len(s) - n} more chars]"


def run_python(code: str, limits: SandboxLimits | None = None) -> SandboxResult:
    """Run `code` as a script under the sandbox; passed = exit status 0."""
    limits = (limits or SandboxLimits()).validate()
    if limits.isolate_network and network_namespace_available():
        network, prefix, preamble = "namespace", [shutil.which("unshare") or "unshare", "-rn"], ""
    elif limits.isolate_network:
        network, prefix, preamble = "guard", [], _NETWORK_GUARD
    else:
        network, prefix, preamble = "allowed", [], ""
    with tempfile.TemporaryDirectory(prefix="llmdag-sandbox-") as workdir:
        script = os.path.join(workdir, "main.py")
        with open(script, "w", encoding="utf-8") as f:
            f.write(preamble + code)
        env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": workdir, "TMPDIR": workdir}
        start = time.perf_counter()
        proc = subprocess.Popen(
            [*prefix, sys.executable, "-I", "-S", script], cwd=workdir, env=env, stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
            preexec_fn=lambda: _limit(limits),  # noqa: PLW1509 - rlimits must be set before exec
        )
        try:
            out, err = proc.communicate(timeout=limits.timeout_s)
            timed_out = False
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)  # the session leader's group: forked children die too
            out, err = proc.communicate()
            timed_out = True
        duration = time.perf_counter() - start
    return SandboxResult(
        passed=not timed_out and proc.returncode == 0,
        returncode=None if timed_out else proc.returncode,
        timed_out=timed_out,
        stdout=_clip(out, limits.max_output_chars),
        stderr=_clip(err, limits.max_output_chars),
        duration_s=round(duration, 3),
        network=network,
    )


_FENCE = re.compile(r"```(?:python|py)?\s*\n(.*?)```", re.DOTALL)


def extract_code(completion: str) -> str:
    """The first ```python fenced block when there is one, else the whole completion."""
    match = _FENCE.search(completion)
    return match.group(1) if match else completion


def run_tests(code: str, tests: str | Sequence[str], limits: SandboxLimits | None = None) -> SandboxResult:
    """`code` followed by `tests` (assert statements), in one sandboxed script."""
    body = tests if isinstance(tests, str) else "\n".join(tests)
    return run_python(f"{code}\n\n{body}\n", limits)


def _text(completion: Any) -> str:
    # TRL passes conversational completions as [{"role": "assistant", "content": ...}], plain ones as str.
    if isinstance(completion, list):
        return completion[-1]["content"] if completion else ""
    return str(completion)


def code_execution_reward(completions: list[Any], tests: list[Any], **kwargs: Any) -> list[float]:
    """GRPO reward: 1.0 when the completion's code passes its row's `tests` in the sandbox, else 0.0.

    The dataset needs a `tests` column (a string of asserts or a list of them), e.g.
    {"prompt": [...], "tests": ["assert add(2, 3) == 5"]}.
    """
    return [float(run_tests(extract_code(_text(c)), t).passed) for c, t in zip(completions, tests, strict=True)]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Run code + asserts in the llmdag sandbox; exit 0 when they pass.")
    p.add_argument("code", help="Python source to test")
    p.add_argument("tests", nargs="*", help="assert statements")
    p.add_argument("--timeout-s", type=float, default=SandboxLimits.timeout_s, help="wall-clock limit")
    p.add_argument("--memory-mb", type=int, default=SandboxLimits.memory_mb, help="address-space limit")
    a = p.parse_args(argv)
    r = run_tests(a.code.encode().decode("unicode_escape"), a.tests,
                  SandboxLimits(timeout_s=a.timeout_s, memory_mb=a.memory_mb))
    print(f"passed={r.passed} returncode={r.returncode} timed_out={r.timed_out} network={r.network} "
          f"duration={r.duration_s}s\n{r.stdout}{r.stderr}")
    return 0 if r.passed else 1


if __name__ == "__main__":
    raise SystemExit(main())
