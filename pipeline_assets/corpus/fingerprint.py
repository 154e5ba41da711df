"""Source fingerprints, landing-folder readiness and tolerant landing settings: plain logic, no Dagster.

A fingerprint says "this source would yield the same documents as last time". The automation compares
the fingerprint of a source now with the ``source_fingerprint`` that ``corpus/raw_documents`` recorded,
so a changed source is re-curated and an unchanged one never is twice:

- a folder (landing or configured): content, not timestamps; a ``touch`` or a fresh copy of the same
  bytes changes nothing, one changed byte changes everything;
- a hub dataset: its id and split (the hub content itself is not reachable offline);
- a built-in source: the interpreter and installed distributions its text is read from (and, for
  ``licenses``, the operating system's licence files), so a Python or package upgrade re-curates.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import sys
import sysconfig
import time
from collections import OrderedDict
from importlib import metadata
from pathlib import Path

from pipeline_assets.corpus.sources import READY_MARKER, SourceSpec

DEFAULT_SETTLE_S = 30.0
_CHUNK = 1 << 20
# A file changed this recently may change again within the filesystem's timestamp granularity (a few ms
# on ext4) without its stat changing: never cache its hash (git's "racy clean" rule).
_RACY_S = 2.0
_MAX_CACHED_FILES = 200_000


# ---------------------------------------------------------------------------------------------------
# readiness: is a folder still being copied?


def _tree_entries(root: Path) -> list[tuple[str, os.stat_result]]:
    """(path, lstat) of ``root`` and everything below it; symlinked dirs are not followed (as rglob)."""
    entries = [(str(root), root.lstat())]
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            try:
                entries.append((path, os.lstat(path)))
            except FileNotFoundError:
                continue  # removed while we walk: the directory's own timestamp records that change
    return entries


def newest_change(entries: list[tuple[str, os.stat_result]]) -> float:
    """Newest mtime or ctime of the entries (directories too: a deleted file changes its directory).

    ctime as well as mtime because ``cp -p``, ``rsync -a``, ``tar x`` and ``unzip`` put the original (old)
    mtime back on each file they write; only ctime shows that they wrote it just now.
    """
    return max(max(st.st_mtime, st.st_ctime) for _, st in entries)


def waiting_reason(folder: Path, settle_s: float, now: float | None = None) -> str | None:
    """None when ``folder`` is complete (has ``_READY``, or nothing changed for ``settle_s``), else why not."""
    if (folder / READY_MARKER).exists():
        return None
    entries = _tree_entries(folder)
    if not any(stat.S_ISREG(st.st_mode) or stat.S_ISLNK(st.st_mode) for _, st in entries[1:]):
        return "empty: waiting for files"  # a folder made just before the copy starts is not a source yet
    age = (time.time() if now is None else now) - newest_change(entries)
    if age >= settle_s:
        return None
    return (f"still changing (last change {max(age, 0):.0f} s ago): taken once nothing changed for {settle_s:.0f} s "
            f"(LLMDAG_LANDING_SETTLE_S) or at once when a file named {READY_MARKER} is in it")


def settle_seconds() -> float:
    raw = os.environ.get("LLMDAG_LANDING_SETTLE_S", "")
    try:
        return float(raw) if raw else DEFAULT_SETTLE_S
    except ValueError as e:
        raise ValueError(f"LLMDAG_LANDING_SETTLE_S={raw!r} is not a number of seconds, e.g. 30") from e


# ---------------------------------------------------------------------------------------------------
# fingerprints

# Hash of a file's bytes by (path, size, mtime, ctime, inode): an unchanged folder costs a stat per file
# per sensor tick instead of reading every byte again. Any write changes ctime, so a stale hit needs a
# write within the timestamp granularity, which _RACY_S excludes.
_content_cache: OrderedDict[tuple, str] = OrderedDict()


def _file_digest(path: str, now: float) -> str:
    st = os.stat(path)
    key = (path, st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)
    if key in _content_cache:
        _content_cache.move_to_end(key)
        return _content_cache[key]
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    if now - max(st.st_mtime, st.st_ctime) > _RACY_S:
        _content_cache[key] = digest.hexdigest()
        if len(_content_cache) > _MAX_CACHED_FILES:
            _content_cache.popitem(last=False)
    return digest.hexdigest()


def source_fingerprint(path: str | Path) -> str:
    """sha256 over (relative path, size, content sha256) of every file, in path order.

    Left out: ``_READY`` and dot-files (ingest skips them too, and a ``.DS_Store`` is no new data), and
    timestamps (a re-copy of identical bytes is no change). Raises OSError when a file vanishes while it
    is read (the folder is changing: try again later).
    """
    root = Path(path)
    if not root.is_dir():
        raise FileNotFoundError(f"source folder {root} does not exist")
    now = time.time()
    files = []
    for dirpath, _, filenames in os.walk(root, followlinks=False):
        for name in filenames:
            full = os.path.join(dirpath, name)
            if name.startswith(".") or (dirpath == str(root) and name == READY_MARKER):
                continue
            if os.path.isfile(full):  # what ingest reads: regular files and links to files
                files.append((os.path.relpath(full, root).replace(os.sep, "/"), full))
    total = hashlib.sha256()
    for rel, full in sorted(files):
        total.update(f"{rel}\0{os.path.getsize(full)}\0{_file_digest(full, now)}\n".encode())
    return total.hexdigest()


def _environment() -> dict:
    """What the built-in sources read their text from: the interpreter and every installed distribution."""
    dists = sorted({f"{(d.metadata['Name'] or '').lower()}=={d.version}" for d in metadata.distributions()})
    return {"python": sys.version, "stdlib": sysconfig.get_paths()["stdlib"], "distributions": dists}


def _os_licence_files() -> list[str]:
    """The OS files the ``licenses`` source reads besides dist-info ones (those follow the distributions)."""
    files = [p for p in Path("/usr/share/common-licenses").glob("*") if p.is_file()]
    files += [p for p in Path("/usr/share/doc").glob("*/copyright") if p.is_file()]
    return sorted(f"{p}:{p.stat().st_size}" for p in files)


def builtin_fingerprint(spec: SourceSpec) -> str:
    """The spec plus the interpreter and package versions its text comes from; an upgrade re-curates."""
    payload = {"spec": _settings(spec), "environment": _environment()}
    if spec.kind == "licenses":
        payload["os_licence_files"] = _os_licence_files()
    return _sha256_json(payload)


def spec_fingerprint(spec: SourceSpec) -> str:
    """One fingerprint for any source: what ``corpus/raw_documents`` records as ``source_fingerprint``."""
    if spec.kind == "folder":
        content = source_fingerprint(spec.path or "")
    elif spec.kind == "hf" and spec.hf_dataset:
        # Offline the hub cannot be asked for a revision: the id and split are all we know.
        content = f"hf:{spec.hf_dataset}:{spec.hf_split}"
    elif spec.kind == "hf":
        content = source_fingerprint(spec.path or "")
    else:
        return builtin_fingerprint(spec)
    # The settings change what is read out of the same bytes (a configured source's domain is not in them).
    return _sha256_json({"spec": _settings(spec), "content": content})


def _settings(spec: SourceSpec) -> dict:
    """The spec without name and path: the same bytes under another mount point are the same source."""
    settings = {"kind": spec.kind, "domain": spec.domain, "text_field": spec.text_field, "split": spec.hf_split,
                "hf_dataset": spec.hf_dataset}
    if spec.kind == "synthetic_arithmetic":  # its content is a function of the task space
        settings |= {"operand_max": spec.operand_max, "operators": list(spec.operators)}
    return settings


def _sha256_json(payload: dict) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()
