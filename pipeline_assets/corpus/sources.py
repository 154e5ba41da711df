"""Where documents come from: built-in local text, landing folders, user-configured paths or HF datasets.

Every source yields ``RawRecord``s (origin + undecoded payload); ``ingest.py`` validates them. The
built-in sources read text that ships with any machine that has this project installed, so the
default graph runs offline:

- ``python_docs``: the Python reference manual's topic texts (``pydoc_data.topics``), prose.
- ``python_stdlib``: standard-library source files, code with docstrings.
- ``package_readmes``: long descriptions from installed distributions' METADATA, web-like prose
  with boilerplate and near-duplicates (badges, install snippets, the same README in two packages).
- ``licenses``: licence texts (``/usr/share/common-licenses``, Debian copyright files, dist-info
  licence files), highly duplicated legal English.
"""

from __future__ import annotations

import hashlib
import json
import re
import sysconfig
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Literal

from pipeline_assets.corpus.config import DOMAINS

SourceKind = Literal["python_docs", "python_stdlib", "package_readmes", "licenses", "folder", "hf"]
SOURCE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
SOURCE_FILE = "llmdag_source.json"  # optional per-folder settings: {"domain": ..., "text_field": ...}
READY_MARKER = "_READY"  # an empty file a user (or a copy script) writes last: "this folder is complete"
TEXT_SUFFIXES = (".txt", ".md", ".rst")


@dataclass(frozen=True)
class SourceSpec:
    name: str
    kind: SourceKind
    domain: str
    path: str | None = None  # folder (landing / user) or local HF dataset dir
    hf_dataset: str | None = None  # hub id, loaded with datasets.load_dataset
    hf_split: str = "train"
    text_field: str = "text"

    def validate(self) -> None:
        if not SOURCE_NAME.match(self.name):
            raise ValueError(
                f"source name {self.name!r} is not a valid partition key: use letters, digits, '_', '.', '-'"
            )


@dataclass(frozen=True)
class RawRecord:
    origin: str  # "<file>:<line>" or "<file>": where a quarantined record can be found again
    payload: bytes | dict | str  # a JSONL line (undecoded), a row, or a whole text file
    default_id: str
    fmt: Literal["jsonl", "row", "text", "unsupported"] = "text"


BUILTIN_SOURCES: dict[str, SourceSpec] = {
    "python_docs": SourceSpec("python_docs", "python_docs", "prose"),
    "python_stdlib": SourceSpec("python_stdlib", "python_stdlib", "code"),
    "package_readmes": SourceSpec("package_readmes", "package_readmes", "web"),
    "licenses": SourceSpec("licenses", "licenses", "legal"),
}


def _stable_order(paths: list[Path]) -> list[Path]:
    """Hash order: a byte cap then samples across the whole tree, not the alphabetically first dirs."""
    return sorted(paths, key=lambda p: hashlib.sha1(str(p).encode()).hexdigest())


def _capped_files(paths: list[Path], max_bytes: int | None) -> Iterator[Path]:
    total = 0
    for path in _stable_order(paths):
        size = path.stat().st_size
        if max_bytes is not None and total + size > max_bytes:
            continue  # keep scanning: a smaller file may still fit
        total += size
        yield path


def _file_record(path: Path, root: Path | None = None) -> RawRecord:
    rel = str(path.relative_to(root)) if root else str(path)
    return RawRecord(origin=str(path), payload=path.read_bytes(), default_id=rel)


def _python_docs(max_bytes: int | None) -> Iterator[RawRecord]:
    from pydoc_data.topics import topics

    total = 0
    for name in sorted(topics):
        text = topics[name]
        total += len(text.encode())
        if max_bytes is not None and total > max_bytes:
            break
        yield RawRecord(origin=f"pydoc_data.topics[{name!r}]", payload=text, default_id=name)


def _python_stdlib(max_bytes: int | None) -> Iterator[RawRecord]:
    root = Path(sysconfig.get_paths()["stdlib"])
    files = [p for p in root.rglob("*.py") if "site-packages" not in p.parts and p.is_file()]
    for path in _capped_files(files, max_bytes):
        yield _file_record(path, root)


def _package_readmes(max_bytes: int | None) -> Iterator[RawRecord]:
    seen: set[str] = set()
    dists = sorted(metadata.distributions(), key=lambda d: (d.metadata["Name"] or "").lower())
    total = 0
    for dist in dists:
        name = (dist.metadata["Name"] or "").lower()
        if not name or name in seen:
            continue
        seen.add(name)
        raw = dist.read_text("METADATA") or dist.read_text("PKG-INFO") or ""
        # The long description is the message body after the RFC 822 headers, or a Description header.
        body = raw.split("\n\n", 1)[1] if "\n\n" in raw else (dist.metadata.get("Description") or "")
        total += len(body.encode())
        if max_bytes is not None and total > max_bytes:
            break
        yield RawRecord(origin=f"{name} METADATA", payload=body, default_id=name)


def _licenses(max_bytes: int | None) -> Iterator[RawRecord]:
    files = [p for p in Path("/usr/share/common-licenses").glob("*") if p.is_file()]
    files += [p for p in Path("/usr/share/doc").glob("*/copyright") if p.is_file()]
    for site in {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}:
        for pattern in ("*.dist-info/LICENSE*", "*.dist-info/COPYING*", "*.dist-info/licenses/**/*"):
            files += [p for p in Path(site).glob(pattern) if p.is_file()]
    for path in _capped_files(files, max_bytes):
        yield _file_record(path)


def _folder(spec: SourceSpec) -> Iterator[RawRecord]:
    root = Path(spec.path or "")
    if not root.is_dir():
        raise FileNotFoundError(f"source {spec.name!r}: folder {root} does not exist")
    if (root / "dataset_info.json").exists() or (root / "state.json").exists():
        yield from _hf(spec)  # a `datasets.save_to_disk` directory dropped into the landing folder
        return
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        rel = str(path.relative_to(root))
        if path.name in (SOURCE_FILE, READY_MARKER) or path.name.startswith("."):
            continue
        if path.suffix == ".jsonl":
            with path.open("rb") as f:
                for line_no, line in enumerate(f, 1):
                    if line.strip():
                        yield RawRecord(f"{path}:{line_no}", line, f"{rel}:{line_no}", "jsonl")
        elif path.suffix == ".parquet":
            import pyarrow.parquet as pq

            for row_no, row in enumerate(pq.read_table(path).to_pylist()):
                yield RawRecord(f"{path}:{row_no}", row, f"{rel}:{row_no}", "row")
        elif path.suffix in TEXT_SUFFIXES:
            yield _file_record(path, root)
        else:
            # Not silently skipped: ingest counts it as quarantined with reason "unsupported_file".
            yield RawRecord(str(path), b"", rel, "unsupported")


def _hf(spec: SourceSpec) -> Iterator[RawRecord]:
    import datasets

    if spec.hf_dataset:
        ds = datasets.load_dataset(spec.hf_dataset, split=spec.hf_split)  # hub or local script; needs network
        label = spec.hf_dataset
    else:
        ds = datasets.load_from_disk(spec.path)
        if isinstance(ds, datasets.DatasetDict):
            if spec.hf_split not in ds:
                raise ValueError(f"source {spec.name!r}: split {spec.hf_split!r} not in {list(ds)}")
            ds = ds[spec.hf_split]
        label = spec.path
    for row_no, row in enumerate(ds):
        yield RawRecord(f"{label}[{row_no}]", dict(row), str(row_no), "row")


def iter_records(spec: SourceSpec, max_bytes: int | None) -> Iterator[RawRecord]:
    """All records of a source; built-in sources stop at ``max_bytes`` (user sources are never capped)."""
    builtin = {
        "python_docs": _python_docs, "python_stdlib": _python_stdlib,
        "package_readmes": _package_readmes, "licenses": _licenses,
    }
    if spec.kind in builtin:
        yield from builtin[spec.kind](max_bytes)
    elif spec.kind == "folder":
        yield from _folder(spec)
    elif spec.kind == "hf":
        yield from _hf(spec)
    else:
        raise ValueError(f"unknown source kind {spec.kind!r}; valid: {list(builtin) + ['folder', 'hf']}")


@dataclass(frozen=True)
class LandingProblem:
    """A landing folder that cannot become a source as it is, and how to fix it."""

    folder: str
    message: str


# ---------------------------------------------------------------------------------------------------
# landing settings (llmdag_source.json), parsed without letting one bad folder stop the others


def read_source_settings(folder: Path) -> dict:
    """``llmdag_source.json`` of ``folder`` ({} when absent); a ValueError names the file, the problem, the fix."""
    path = folder / SOURCE_FILE
    if not path.exists():
        return {}
    hint = f'expected e.g. {{"domain": "web", "text_field": "text"}} with domain one of {", ".join(DOMAINS)}'
    try:
        settings = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: not valid JSON ({e}); fix or delete it ({hint})") from e
    if not isinstance(settings, dict):
        raise ValueError(f"{path}: must be a JSON object, got {type(settings).__name__}; {hint}")
    domain = settings.get("domain", "web")
    if domain not in DOMAINS:
        raise ValueError(f"{path}: unknown domain {domain!r}; use one of {', '.join(DOMAINS)}")
    for field in ("text_field", "split"):
        if not isinstance(settings.get(field, ""), str):
            raise ValueError(f"{path}: {field!r} must be a string, got {settings[field]!r}")
    return settings


def landing_sources_checked(landing: Path) -> tuple[dict[str, SourceSpec], list[LandingProblem]]:
    """Every valid subfolder of the landing directory is one source, named by the folder; a bad folder is
    reported (with how to fix it), never raised, so one folder's mistake never hides the others."""
    if not landing.is_dir():
        return {}, []
    specs: dict[str, SourceSpec] = {}
    problems: list[LandingProblem] = []
    for folder in sorted(p for p in landing.iterdir() if p.is_dir() and not p.name.startswith(".")):
        if not SOURCE_NAME.match(folder.name):
            problems.append(LandingProblem(folder.name, (
                f"landing folder {folder} ignored: {folder.name!r} is not a valid source name; rename it to "
                "letters, digits, '_', '.', '-' (at most 64, starting with a letter or digit)")))
            continue
        try:
            settings = read_source_settings(folder)
        except (OSError, ValueError) as e:
            problems.append(LandingProblem(folder.name, f"landing folder {folder} ignored: {e}"))
            continue
        specs[folder.name] = SourceSpec(
            name=folder.name, kind="folder", path=str(folder),
            domain=settings.get("domain", "web"), text_field=settings.get("text_field", "text"),
            hf_split=settings.get("split", "train"),
        )
    return specs, problems


def landing_sources(landing: Path) -> dict[str, SourceSpec]:
    """The landing folders that are valid sources (see ``landing_sources_checked`` for the others)."""
    return landing_sources_checked(landing)[0]


def available_builtin_sources() -> dict[str, SourceSpec]:
    """Built-in sources that have material on this machine (a slim image may lack /usr/share/doc)."""
    return {name: spec for name, spec in BUILTIN_SOURCES.items() if next(iter_records(spec, None), None)}
