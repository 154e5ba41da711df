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
- ``synthetic_arithmetic``: verified "What is a + b? c" lines from the training split of the profile's
  arithmetic task (corpus/synthetic.py), domain ``math``.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import re
import sysconfig
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from importlib import metadata
from pathlib import Path
from typing import BinaryIO, Literal, NamedTuple

from pipeline_assets.corpus.config import DOMAINS
from pipeline_assets.names import SOURCE_NAME  # the one rule for source names / partition keys

SourceKind = Literal["python_docs", "python_stdlib", "package_readmes", "licenses", "synthetic_arithmetic",
                     "folder", "hf"]
SOURCE_FILE = "llmdag_source.json"  # optional per-folder settings: {"domain": ..., "text_field": ...}
READY_MARKER = "_READY"  # an empty file a user (or a copy script) writes last: "this folder is complete"
TEXT_SUFFIXES = (".txt", ".md", ".rst")  # matched case-insensitively, as every suffix below
JSONL_SUFFIXES = {".jsonl": None, ".jsonl.gz": "gzip", ".jsonl.zst": "zstd", ".jsonl.zstd": "zstd"}
PARQUET_SUFFIX = ".parquet"
BOM = b"\xef\xbb\xbf"  # editors on Windows start UTF-8 files with it; it is not part of the first record
# A JSONL line carries its text JSON-escaped (``\\uXXXX`` for non-ASCII from an ``ensure_ascii`` writer,
# up to 3x for emoji) plus metadata: a line this many times the document cap can still hold a document
# under the cap, and anything longer is refused before it is held in memory.
LINE_BYTES_PER_DOC_BYTE = 4
PREVIEW_BYTES = 2048  # what a refused record keeps: enough for ingest's 500-character preview in any UTF-8


@dataclass(frozen=True)
class SourceSpec:
    name: str
    kind: SourceKind
    domain: str
    path: str | None = None  # folder (landing / user) or local HF dataset dir
    hf_dataset: str | None = None  # hub id, loaded with datasets.load_dataset
    hf_split: str = "train"
    text_field: str = "text"
    # synthetic_arithmetic only: the task space the problems are drawn from (the profile's).
    operand_max: int = 99
    operators: tuple[str, ...] = ("+", "-")

    def validate(self) -> None:
        if not SOURCE_NAME.match(self.name):
            raise ValueError(
                f"source name {self.name!r} is not a valid partition key: use letters, digits, '_', '.', '-'"
            )


@dataclass(frozen=True)
class RawRecord:
    origin: str  # "<file>:<line>" or "<file>": where a quarantined record can be found again
    payload: bytes | dict | str  # a JSONL line (undecoded), a row, a whole text file, or a refusal's preview
    default_id: str
    fmt: Literal["jsonl", "row", "text", "rejected"] = "text"
    reason: str | None = None  # set when fmt is "rejected": why the reader refused it (the quarantine reason)


def _rejected(origin: str, default_id: str, reason: str, preview: bytes | str = b"") -> RawRecord:
    return RawRecord(origin, preview[:PREVIEW_BYTES], default_id, "rejected", reason)


def _error_text(e: BaseException) -> str:
    return f"{type(e).__name__}: {e}"


def _display(path: Path | str) -> str:
    """A path as valid UTF-8: an undecodable file name must not make the record unwritable."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


BUILTIN_SOURCES: dict[str, SourceSpec] = {
    "python_docs": SourceSpec("python_docs", "python_docs", "prose"),
    "python_stdlib": SourceSpec("python_stdlib", "python_stdlib", "code"),
    "package_readmes": SourceSpec("package_readmes", "package_readmes", "web"),
    "licenses": SourceSpec("licenses", "licenses", "legal"),
    "synthetic_arithmetic": SourceSpec("synthetic_arithmetic", "synthetic_arithmetic", "math"),
}


def _stable_order(paths: list[Path], name: Callable[[Path], str]) -> list[Path]:
    """Hash order of each file's `name`: a byte cap then samples across the whole tree, not the alphabetically
    first dirs. The name is the path below where the tree lives (a checkout's venv), not the absolute path:
    hashed whole, two clones of one commit sampled different licence files (45 vs 34 train documents) and
    trained different models from the same code."""
    return sorted(paths, key=lambda p: hashlib.sha1(name(p).encode()).hexdigest())


def _capped_files(paths: list[Path], max_bytes: int | None, name: Callable[[Path], str]) -> Iterator[Path]:
    total = 0
    for path in _stable_order(paths, name):
        size = path.stat().st_size
        if max_bytes is not None and total + size > max_bytes:
            continue  # keep scanning: a smaller file may still fit
        total += size
        yield path


def _file_record(path: Path, root: Path | None = None, max_bytes: int | None = None,
                 read_path: Path | None = None) -> RawRecord:
    """A whole text file as one record; one over ``max_bytes`` is refused after reading only its preview."""
    rel = _display(path.relative_to(root)) if root else _display(path)
    with (read_path or path).open("rb") as f:
        # The size of the open file, not of the name: a swapped or growing file cannot slip past the cap.
        if max_bytes is not None and os.fstat(f.fileno()).st_size > max_bytes + len(BOM):
            return _rejected(_display(path), rel, "oversized", f.read(PREVIEW_BYTES))
        data = f.read() if max_bytes is None else f.read(max_bytes + len(BOM) + 1)
    if max_bytes is not None and len(data) > max_bytes + len(BOM):
        return _rejected(_display(path), rel, "oversized", data)
    return RawRecord(origin=_display(path), payload=data.removeprefix(BOM), default_id=rel)


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
    for path in _capped_files(files, max_bytes, lambda p: str(p.relative_to(root))):
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


def _synthetic_arithmetic(spec: SourceSpec, max_bytes: int | None) -> Iterator[RawRecord]:
    from pipeline_assets.corpus.synthetic import arithmetic_documents

    total = 0
    for doc_id, text in arithmetic_documents(spec.operand_max, tuple(spec.operators)):
        total += len(text.encode())
        if max_bytes is not None and total > max_bytes:
            break
        yield RawRecord(origin=f"synthetic_arithmetic[{doc_id}]", payload=text, default_id=doc_id)


def _licenses(max_bytes: int | None) -> Iterator[RawRecord]:
    # file -> the root its id is relative to: None for the system's, the site dir for the venv's (whose
    # absolute path is the checkout's)
    roots: dict[Path, Path | None] = {p: None for p in Path("/usr/share/common-licenses").glob("*") if p.is_file()}
    roots |= {p: None for p in Path("/usr/share/doc").glob("*/copyright") if p.is_file()}
    for site in sorted({Path(sysconfig.get_paths()["purelib"]), Path(sysconfig.get_paths()["platlib"])}):
        for pattern in ("*.dist-info/LICENSE*", "*.dist-info/COPYING*", "*.dist-info/licenses/**/*"):
            roots |= {p: site for p in site.glob(pattern) if p.is_file()}

    def name(path: Path) -> str:  # "typer.dist-info/licenses/LICENSE": no checkout path, no version
        root = roots[path]
        if root is None:
            return str(path)
        dist, *rest = path.relative_to(root).parts
        return "/".join((re.sub(r"-[^-]+\.dist-info$", ".dist-info", dist), *rest))

    for path in _capped_files(list(roots), max_bytes, name):
        record = _file_record(path)
        yield replace(record, default_id=name(path))


class _Entry(NamedTuple):
    path: Path  # as found below the source folder: names the record
    read_path: Path  # what is opened: a symlink's resolved target, so the checked file is the one read
    reason: str | None = None  # set: refused without reading
    detail: str = ""


def _classify(entry: os.DirEntry, real_root: Path) -> _Entry | Path | None:
    """An entry to read or refuse, a folder (Path) to descend into, or None for a file that is not data."""
    path = Path(entry.path)
    if entry.name.startswith(".") and not entry.is_dir(follow_symlinks=False):
        return None
    if entry.name in (SOURCE_FILE, READY_MARKER):
        return None
    if entry.is_symlink():
        target = path.resolve()
        # Followed links would ingest whatever they point at (a link to /etc/passwd) or loop forever.
        if target.is_dir():
            return _Entry(path, path, "symlinked_folder", f"{_display(path)} -> {_display(target)}")
        if not target.exists():
            return _Entry(path, path, "broken_symlink", f"{_display(path)} -> {_display(target)}")
        if not target.is_relative_to(real_root):
            return _Entry(path, path, "symlink_outside_source", f"{_display(path)} -> {_display(target)}")
        return _Entry(path, target) if target.is_file() else _Entry(path, path, "not_a_regular_file")
    if entry.is_dir(follow_symlinks=False):
        return path
    if entry.is_file(follow_symlinks=False):
        return _Entry(path, path)
    return _Entry(path, path, "not_a_regular_file")  # a FIFO would block the read forever


def _entries(root: Path) -> list[_Entry]:
    """Every file below ``root`` to read or refuse, sorted; an unlistable folder is itself a refused entry."""
    real_root = root.resolve()
    found: list[_Entry] = []
    pending = [root]
    while pending:
        folder = pending.pop()
        try:
            with os.scandir(folder) as listing:
                children = list(listing)
        except OSError as e:
            found.append(_Entry(folder, folder, "read_error", _error_text(e)))
            continue
        for child in children:
            try:
                kind = _classify(child, real_root)
            except OSError as e:
                kind = _Entry(Path(child.path), Path(child.path), "read_error", _error_text(e))
            if isinstance(kind, Path):
                pending.append(kind)
            elif kind is not None:
                found.append(kind)
    return sorted(found, key=lambda e: e.path.parts)


def _file_format(path: Path) -> tuple[str, str | None]:
    """(format, compression) from the suffixes, any case: ``.JSONL`` and ``.jsonl.gz`` are JSONL."""
    name = path.name.lower()
    for suffix, compression in JSONL_SUFFIXES.items():
        if name.endswith(suffix):
            return "jsonl", compression
    if name.endswith(PARQUET_SUFFIX):
        return "parquet", None
    if name.endswith(TEXT_SUFFIXES):
        return "text", None
    return "unsupported", None


def _decompression_errors() -> tuple[type[BaseException], ...]:
    errors: tuple[type[BaseException], ...] = (gzip.BadGzipFile, EOFError, zlib.error)
    try:
        import zstandard
    except ImportError:
        return errors
    return (*errors, zstandard.ZstdError)


def _open_jsonl(path: Path, compression: str | None) -> BinaryIO:
    if compression == "gzip":
        return gzip.open(path, "rb")
    if compression == "zstd":
        import zstandard  # ImportError: the caller refuses the file as "zstd_unavailable"

        raw = zstandard.ZstdDecompressor().stream_reader(path.open("rb"), closefd=True)
        return io.BufferedReader(raw)  # the zstd reader has no readline of its own
    return path.open("rb")


def _skip_line(f: BinaryIO) -> None:
    """Discard up to the next newline a chunk at a time: an over-long line is never held whole."""
    while True:
        chunk = f.readline(1 << 20)
        if not chunk or chunk.endswith(b"\n"):
            return


def _jsonl_records(entry: _Entry, rel: str, compression: str | None,
                   max_line_bytes: int | None) -> Iterator[RawRecord]:
    limit = -1 if max_line_bytes is None else max_line_bytes + 1  # +1: room for the newline itself
    origin = _display(entry.path)
    with _open_jsonl(entry.read_path, compression) as f:
        line_no = 0
        while line := f.readline(limit):
            line_no += 1
            if line_no == 1:
                line = line.removeprefix(BOM)
            if max_line_bytes is not None and len(line) > max_line_bytes and not line.endswith(b"\n"):
                _skip_line(f)
                yield _rejected(f"{origin}:{line_no}", f"{rel}:{line_no}", "line_too_long", line)
            elif line.strip():
                yield RawRecord(f"{origin}:{line_no}", line, f"{rel}:{line_no}", "jsonl")


def _parquet_records(entry: _Entry, rel: str) -> Iterator[RawRecord]:
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    origin = _display(entry.path)
    row_no = 0
    with pq.ParquetFile(entry.read_path) as pf:
        for batch in pf.iter_batches(batch_size=256):
            # Temporal columns as text in Arrow: a timestamp past year 9999 has no Python datetime.
            batch = pa.RecordBatch.from_arrays(
                [pc.cast(col, pa.string()) if pa.types.is_temporal(col.type) else col for col in batch.columns],
                names=batch.schema.names)
            for row in _rows(batch):
                if isinstance(row, BaseException):
                    yield _rejected(f"{origin}:{row_no}", f"{rel}:{row_no}", "unconvertible_value",
                                    _error_text(row))
                else:
                    yield RawRecord(f"{origin}:{row_no}", row, f"{rel}:{row_no}", "row")
                row_no += 1


def _rows(batch) -> Iterator[dict | BaseException]:
    """The batch's rows; when one will not convert to Python (a nested out-of-range date), only it fails."""
    try:
        yield from batch.to_pylist()
        return
    except (ValueError, OverflowError, TypeError):
        pass
    for i in range(batch.num_rows):
        try:
            yield batch.slice(i, 1).to_pylist()[0]
        except (ValueError, OverflowError, TypeError) as e:
            yield e


def _file_records(entry: _Entry, root: Path, max_doc_bytes: int | None) -> Iterator[RawRecord]:
    """The records of one file; whatever goes wrong reading it ends that file, counted, never the source."""
    rel = _display(entry.path.relative_to(root))
    origin = _display(entry.path)
    if entry.reason:
        yield _rejected(origin, rel, entry.reason, entry.detail)
        return
    fmt, compression = _file_format(entry.path)
    max_line_bytes = None if max_doc_bytes is None else LINE_BYTES_PER_DOC_BYTE * max_doc_bytes
    try:
        if fmt == "jsonl":
            yield from _jsonl_records(entry, rel, compression, max_line_bytes)
        elif fmt == "parquet":
            yield from _parquet_records(entry, rel)
        elif fmt == "text":
            yield _file_record(entry.path, root, max_doc_bytes, entry.read_path)
        else:
            yield _rejected(origin, rel, "unsupported_file")
    except Exception as e:  # the file's records so far stand; the rest of it is one quarantined record
        yield _rejected(origin, rel, _failure_reason(e, fmt, compression), _error_text(e))


def _failure_reason(e: Exception, fmt: str, compression: str | None) -> str:
    if isinstance(e, ImportError) and compression == "zstd":
        return "zstd_unavailable"
    if compression and isinstance(e, _decompression_errors()):
        return "corrupt_compressed"
    if isinstance(e, (FileNotFoundError, PermissionError, IsADirectoryError)):
        return "read_error"  # vanished, or made unreadable, between the listing and the read
    if fmt == "parquet":
        return "corrupt_parquet"  # pyarrow's ArrowInvalid / ArrowIOError: not a readable parquet file
    return "read_error"


def _folder(spec: SourceSpec, max_doc_bytes: int | None = None) -> Iterator[RawRecord]:
    root = Path(spec.path or "")
    if not root.is_dir():
        raise FileNotFoundError(f"source {spec.name!r}: folder {root} does not exist")
    if (root / "dataset_info.json").exists() or (root / "state.json").exists():
        # A `datasets.save_to_disk` directory dropped into the landing folder: a damaged one costs the
        # rows from the damage on (one quarantined record), like any other file.
        try:
            yield from _hf(spec)
        except Exception as e:
            yield _rejected(_display(root), ".", "corrupt_dataset", _error_text(e))
        return
    for entry in _entries(root):
        yield from _file_records(entry, root, max_doc_bytes)


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


def iter_records(spec: SourceSpec, max_bytes: int | None,
                 max_doc_bytes: int | None = None) -> Iterator[RawRecord]:
    """All records of a source; built-in sources stop at ``max_bytes`` (user sources are never capped).

    With ``max_doc_bytes``, a folder's text file or JSONL line too big to hold a document under it is
    refused (``oversized`` / ``line_too_long``) before it is read, so memory stays bounded. A file
    that cannot be read yields one refused record and the next file goes on.
    """
    builtin = {
        "python_docs": _python_docs, "python_stdlib": _python_stdlib,
        "package_readmes": _package_readmes, "licenses": _licenses,
    }
    if spec.kind in builtin:
        yield from builtin[spec.kind](max_bytes)
    elif spec.kind == "synthetic_arithmetic":
        yield from _synthetic_arithmetic(spec, max_bytes)
    elif spec.kind == "folder":
        yield from _folder(spec, max_doc_bytes)
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
    try:
        folders = sorted(p for p in landing.iterdir() if p.is_dir() and not p.name.startswith("."))
    except OSError as e:
        return {}, [LandingProblem(str(landing), f"landing directory {landing} cannot be listed: {e}")]
    for folder in folders:
        if folder.is_symlink():
            # A link would curate whatever it points at, outside the directory people drop data into.
            problems.append(LandingProblem(folder.name, (
                f"landing folder {folder} ignored: it is a symbolic link to {folder.resolve()}; links are "
                "not followed, copy or move the folder into the landing directory instead")))
            continue
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


def available_builtin_sources(operand_max: int = 99, operators: tuple[str, ...] = ("+", "-")
                              ) -> dict[str, SourceSpec]:
    """Built-in sources that have material on this machine (a slim image may lack /usr/share/doc); the
    synthetic arithmetic stream is drawn from the given task space (the profile's)."""
    specs = {name: replace(spec, operand_max=operand_max, operators=tuple(operators))
             if spec.kind == "synthetic_arithmetic" else spec for name, spec in BUILTIN_SOURCES.items()}
    return {name: spec for name, spec in specs.items() if next(iter_records(spec, None), None)}
