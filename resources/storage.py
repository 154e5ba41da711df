"""ArtifactStore: where every asset writes, and how no run ever sees or destroys another run's work.

Layout, per asset key, partition (``_`` when unpartitioned) and profile::

    <root>/<asset key>/<partition>/<profile>/
        20261201T081502Z-1a2b3c4d/     an immutable version: one materialization, complete
        current -> 20261201T081502Z-…  what downstream reads: the newest version whose blocking checks passed
        .work-…/                       a version being written (locked by its writer while it lives)

A writer fills a work dir of its own, renames it to a version dir when complete (``writing``), and the
asset flips ``current`` only after its blocking checks passed (``publish``): an atomic symlink swap, so
a reader sees the old version or the new one, never half of one. Two runs of the same asset write two
versions; the later publish wins and neither deletes the other's files. Retention: ``publish`` keeps
the current version and the ``keep`` newest others, and removes work dirs whose writer is gone.

Paths: every method that builds or takes a path re-validates its segments (``pipeline_assets/names.py``:
partition keys are source names) and refuses a path that resolves outside the artifact root once
symlinks are followed: a symlinked asset, slot, version or work dir leading elsewhere is an error,
raised before anything is created or written through it.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
from pydantic import Field

from pipeline_assets.names import SEGMENT, check_segment, is_source_name, validate_source_name

UNPARTITIONED = "_"
CURRENT = "current"
# Asset key parts, partition keys and profile names all become path segments: nothing else is allowed.
__all__ = ["SEGMENT", "ArtifactStore", "Draft", "Version", "check_segment", "default_root", "fingerprint"]


def default_root() -> str:
    """``LLMDAG_HOME``, else ``$DAGSTER_HOME/llmdag``, else ``./.llmdag`` (documented in the README)."""
    if os.environ.get("LLMDAG_HOME"):
        return os.environ["LLMDAG_HOME"]
    if os.environ.get("DAGSTER_HOME"):
        return str(Path(os.environ["DAGSTER_HOME"]) / "llmdag")
    return str(Path.cwd() / ".llmdag")


@dataclass(frozen=True)
class Version:
    """One complete, immutable version directory of an asset (partition, profile)."""

    path: Path

    @property
    def name(self) -> str:
        return self.path.name


@dataclass
class Draft:
    """What ``ArtifactStore.writing`` hands out: fill ``work``; after the block ``version`` is set."""

    work: Path
    version: Version | None = None


@contextlib.contextmanager
def _locked(lock_path: Path, blocking: bool) -> Iterator[bool]:
    """An flock held for the block; released by the kernel when its process dies (kill -9 included)."""
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    try:  # O_NOFOLLOW: a lock file that is a symbolic link must not create or touch its target
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
    except OSError as e:
        if lock_path.is_symlink():
            raise ValueError(f"lock file {lock_path} is a symbolic link (to {lock_path.resolve()}): refusing "
                             "to open it; remove it") from e
        raise
    with os.fdopen(fd, "r+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _is_locked(lock_path: Path) -> bool:
    if not lock_path.exists():
        return False
    with _locked(lock_path, blocking=False) as got:
        return not got


class ArtifactStore(dg.ConfigurableResource):
    """Local artifact root. Assets record paths; big artifacts never go through pickled IO managers."""

    root: str = Field(description="Artifact root directory (LLMDAG_HOME; see README 'Where things go').")
    profile: str = Field(default="tiny", description="Profile name: part of every artifact path.")
    keep: int = Field(default=2, ge=0, description="Versions kept besides the current one, per slot.")

    # --- paths ----------------------------------------------------------------------------------------------

    def _root(self) -> Path:
        return Path(self.root).expanduser().resolve()

    def _inside(self, path: Path, what: str = "path") -> Path:
        """``path`` if it resolves (symlinks followed) inside the artifact root, else ValueError."""
        root = self._root()
        resolved = Path(path).resolve()
        if not resolved.is_relative_to(root):
            raise ValueError(f"{what} {path} resolves outside the artifact root {root} (to {resolved}): a "
                             "symbolic link leads elsewhere; remove it, artifacts are written only under the root")
        return resolved

    def slot(self, key: str | Sequence[str], partition: str | None = None) -> Path:
        """``<root>/<key>/<partition>/<profile>``: every version of one asset partition for this profile."""
        parts = key.split("/") if isinstance(key, str) else list(key)
        for p in parts:
            check_segment(p, "asset key part")
        # A partition key is a source name: Dagster accepts any dynamic partition key (the UI, GraphQL).
        partition = UNPARTITIONED if partition is None else validate_source_name(partition, "partition key")
        check_segment(self.profile, "profile")
        path = self._root().joinpath(*parts, partition, self.profile)
        self._inside(path, "artifact dir")  # a symlinked key or partition dir must not lead elsewhere
        return path

    def has_current(self, key: str | Sequence[str], partition: str | None = None) -> bool:
        return (self.slot(key, partition) / CURRENT).is_dir()

    def current(self, key: str | Sequence[str], partition: str | None = None) -> Path:
        """The published version of ``key`` (resolved: a reader keeps its version if ``current`` moves)."""
        slot = self.slot(key, partition)
        link = slot / CURRENT
        if not link.is_dir():
            label = "/".join(key) if not isinstance(key, str) else key
            raise FileNotFoundError(f"{label}{f' [{partition}]' if partition else ''} has no published version "
                                    f"for profile {self.profile!r} under {link.parent}: materialize it first")
        version = self._inside(link, "published version")
        if version.parent != slot.resolve() or version.name.startswith("."):
            raise ValueError(f"{link} points at {version}, not at a version dir of {slot}: refusing to read it")
        return version

    def partitions_with_current(self, key: str | Sequence[str], partitions: Sequence[str]) -> list[str]:
        """The ``partitions`` that have a published version; a key that is not a valid source name has none
        (nothing can be written for it), so a hostile key registered through the UI is left out here."""
        return [p for p in partitions if is_source_name(p) and self.has_current(key, p)]

    @contextlib.contextmanager
    def exclusive(self, directory: Path) -> Iterator[None]:
        """Hold ``directory`` for this run alone (e.g. a training run dir two runs would both resume into)."""
        self._inside(directory.parent, "locked dir")
        with _locked(directory.with_name(directory.name + ".lock"), blocking=False) as got:
            if not got:
                raise RuntimeError(f"another live run holds {directory}; wait for it or cancel it (its lock "
                                   f"is released when it ends, even by kill -9)")
            yield

    # --- writing --------------------------------------------------------------------------------------------

    @contextlib.contextmanager
    def writing(self, key: str | Sequence[str], partition: str | None = None, run_id: str | None = None,
                resume_key: str | None = None) -> Iterator[Draft]:
        """Yield a work dir of this writer's own; on success it becomes a complete version (not yet current).

        With ``resume_key`` (a fingerprint of inputs + config) a failed attempt's work dir is handed to
        the next attempt with the same key, so datatrove skips the ranks it completed. Its lock makes
        sure two live runs never share it: the second one gets a fresh dir instead.
        """
        if resume_key is not None:
            check_segment(resume_key, "resume key")
        slot = self.slot(key, partition)
        slot.mkdir(parents=True, exist_ok=True)
        self._inside(slot, "artifact dir")  # a link made between the check and the mkdir
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        version = f"{stamp}-{(run_id or uuid.uuid4().hex)[:8]}"
        candidates = [slot / f".work-r-{resume_key}"] if resume_key else []
        candidates.append(slot / f".work-{version}-{uuid.uuid4().hex[:6]}")
        with contextlib.ExitStack() as stack:
            for work in candidates:
                if stack.enter_context(_locked(work.with_name(work.name + ".lock"), blocking=False)):
                    break
            if resume_key:  # an older key's dir can never be resumed (inputs changed): drop it if nobody owns it
                for stale in slot.glob(".work-r-*"):
                    if stale.is_dir() and stale != work and not _is_locked(stale.with_name(stale.name + ".lock")):
                        _remove(stale)
            if work.is_symlink():
                raise ValueError(f"work dir {work} is a symbolic link (to {work.resolve()}): refusing to write "
                                 "through it; remove it")
            work.mkdir(exist_ok=True)
            draft = Draft(work)
            try:
                yield draft
            except BaseException:
                if not work.name.startswith(".work-r-"):
                    _remove(work)
                raise
            final = slot / version
            while final.exists():  # two writers in the same second with the same run id prefix
                final = slot / f"{version}-{uuid.uuid4().hex[:4]}"
            os.rename(work, final)
            _fsync_dir(slot)
        if not work.name.startswith(".work-r-"):
            # A resume dir's lock file stays: deleting it could let two later writers lock two different files.
            _remove(work.with_name(work.name + ".lock"))
        draft.version = Version(final)

    def publish(self, version: Version) -> None:
        """Make ``version`` what downstream reads (atomic symlink swap), then apply the retention rule."""
        self._check_version(version)
        slot = version.path.parent
        tmp = slot / f".current-{uuid.uuid4().hex[:8]}"
        os.symlink(version.name, tmp)
        os.replace(tmp, slot / CURRENT)
        _fsync_dir(slot)
        self.prune(slot)

    def _check_version(self, version: Version) -> None:
        """A version dir this store wrote: a real directory in a slot inside the root (not a link, not hidden)."""
        path = version.path
        if path.is_symlink() or not path.is_dir() or path.name.startswith(".") or path.name == CURRENT:
            raise ValueError(f"{path} is not a version dir (a real directory written by ArtifactStore.writing)")
        self._inside(path, "version dir")

    def prune(self, slot: Path) -> list[str]:
        """Keep the current version and the ``keep`` newest others; drop work dirs whose writer died."""
        self._inside(slot, "artifact dir")
        link = slot / CURRENT
        current = os.readlink(link) if link.is_symlink() else None
        versions = sorted(p.name for p in slot.iterdir() if p.is_dir() and not p.name.startswith(".")
                          and p.name != CURRENT)
        others = [v for v in versions if v != current]
        removed = others[: max(len(others) - self.keep, 0)]
        for name in removed:
            _remove(slot / name)
        for work in slot.glob(".work-*"):
            if work.is_dir() and not work.name.startswith(".work-r-") and not _is_locked(
                    work.with_name(work.name + ".lock")):
                _remove(work)
                _remove(work.with_name(work.name + ".lock"))
        return removed


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fingerprint(*inputs: Path | str | dict) -> str:
    """Short hash of input files (name, size, mtime) and config values: the resume key of a work dir.

    Inputs are immutable version dirs, so their path already names the content; size and mtime guard
    the rare in-place edit by hand.
    """
    h = hashlib.sha1()
    for item in inputs:
        if isinstance(item, Path):
            for path in sorted(p for p in ([item] if item.is_file() else item.rglob("*")) if p.is_file()):
                st = path.stat()
                h.update(f"{path}:{st.st_size}:{st.st_mtime_ns};".encode())
        else:
            h.update(json.dumps(item, sort_keys=True, default=str).encode())
    return h.hexdigest()[:16]
