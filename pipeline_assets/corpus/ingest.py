"""Ingest one source into clean JSONL documents, quarantining every record that would break datatrove.

Why our own gate in front of datatrove's readers: ``JsonlReader`` silently drops the rest of a file
after a non-UTF-8 byte, crashes on a non-object line or a non-string ``text``, and its filters can
run for minutes on one 50 MB record (../shared/notes/datatrove.md §8). Here every bad record is
counted with a reason and kept in ``quarantine.jsonl``; nothing is silently lost, and nothing in a
record or a file ends the source: ``docs_in == docs_out + quarantined`` always.

Output: ``documents/{rank:05d}.jsonl`` (one file per datatrove task) with ``{"id", "text",
"metadata"}`` records, ``metadata.source`` and ``metadata.domain`` set; ``quarantine.jsonl``. Both are
strict JSON (no NaN/Infinity): a metadata value JSON cannot hold is converted (timestamps to ISO text,
UTF-8 bytes to text, Decimal to text) or, when that would be a guess (NaN/inf, non-UTF-8 bytes), set
to null and counted in ``values_nulled``; any other value quarantines the record.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from collections import Counter
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

from pipeline_assets import faults
from pipeline_assets.corpus.sources import RawRecord, SourceSpec, iter_records

PREVIEW_CHARS = 500


@dataclass(frozen=True)
class Decoded:
    doc: dict | None
    reason: str | None = None  # why it is quarantined (doc is None)
    values_nulled: int = 0  # metadata values JSON cannot express, written as null


class _Unserializable(TypeError):
    pass


def _json_safe(value: object) -> tuple[object, int]:
    """(``value`` as strict-JSON-able data, how many values became null); raises _Unserializable."""
    if value is None or isinstance(value, (str, bool, int)):
        return value, 0
    if isinstance(value, float):
        return (value, 0) if math.isfinite(value) else (None, 1)
    if isinstance(value, dict):
        out, nulled = {}, 0
        for k, v in value.items():
            if not isinstance(k, str):
                raise _Unserializable(f"key {k!r} is not a string")
            out[k], n = _json_safe(v)
            nulled += n
        return out, nulled
    if isinstance(value, (list, tuple)):
        items = [_json_safe(v) for v in value]
        return [v for v, _ in items], sum(n for _, n in items)
    if isinstance(value, (dt.datetime, dt.date, dt.time)):
        return value.isoformat(), 0
    if isinstance(value, (Decimal, dt.timedelta)):
        return str(value), 0  # text keeps a Decimal exact
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8"), 0
        except UnicodeDecodeError:
            return None, 1
    raise _Unserializable(f"{type(value).__name__} value")


def _parse_jsonl(line: str) -> tuple[object, str | None]:
    try:
        return json.loads(line), None
    except json.JSONDecodeError:
        return None, "malformed_json"
    except RecursionError:
        return None, "json_too_deep"
    except ValueError as e:  # not a JSONDecodeError: Python's 4,300-digit int-to-str limit
        return None, "int_too_large" if "integer string conversion" in str(e) else "malformed_json"


def _text_of(row: dict, field: str) -> tuple[str | None, str | None]:
    text = row.get(field)
    if text is None or (isinstance(text, float) and math.isnan(text)):  # pandas writes a missing text as NaN
        return None, "missing_text"
    if isinstance(text, bytes):  # a parquet binary column
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError:
            return None, "non_utf8"
    if not isinstance(text, str):
        return None, "non_string_text"
    if not text.strip():
        return None, "empty_text"
    if "\x00" in text:
        return None, "binary_content"
    return text, None


def _decode(record: RawRecord, spec: SourceSpec) -> Decoded:
    payload = record.payload
    if record.fmt == "rejected":
        return Decoded(None, record.reason)
    if isinstance(payload, bytes):
        try:
            payload = payload.decode("utf-8")
        except UnicodeDecodeError:
            return Decoded(None, "non_utf8")
    if record.fmt == "jsonl":
        payload, reason = _parse_jsonl(payload)
        if reason:
            return Decoded(None, reason)
        if not isinstance(payload, dict):
            return Decoded(None, "not_an_object")
    row = {"text": payload} if isinstance(payload, str) else payload
    text, reason = _text_of(row, spec.text_field)
    if reason:
        return Decoded(None, reason)
    meta = row.get("metadata") if isinstance(row.get("metadata"), dict) else {}
    extra = {k: v for k, v in row.items() if k not in (spec.text_field, "id", "metadata")}
    try:
        meta, nulled = _json_safe({**extra, **meta})
    except RecursionError:
        return Decoded(None, "json_too_deep")
    except _Unserializable:
        return Decoded(None, "unserializable_value")
    meta = {**meta, "source": spec.name, "domain": spec.domain, "origin": record.origin}
    doc_id = row.get("id")
    doc_id = str(doc_id) if isinstance(doc_id, (str, int)) and str(doc_id) else record.default_id
    return Decoded({"id": f"{spec.name}/{doc_id}", "text": text, "metadata": meta}, None, nulled)


def source_texts(spec: SourceSpec, max_bytes: int | None = None, max_doc_bytes: int | None = None) -> list[str]:
    """The texts of a source's valid records, read and validated as ``ingest_source`` does (refusals skipped)."""
    decoded = (_decode(r, spec) for r in iter_records(spec, max_bytes, max_doc_bytes))
    return [d.doc["text"] for d in decoded if d.doc is not None]


def _document_line(doc: dict) -> tuple[bytes | None, str | None]:
    """The strict-JSON line of ``doc``, or why it cannot be written."""
    try:
        return (json.dumps(doc, ensure_ascii=False, allow_nan=False) + "\n").encode("utf-8"), None
    except UnicodeEncodeError:  # a lone surrogate from a "\ud800" escape: not text any reader accepts
        return None, "invalid_unicode"
    except RecursionError:
        return None, "json_too_deep"
    except (TypeError, ValueError):
        return None, "unserializable_value"


def _preview(payload: bytes | dict | str) -> str:
    if isinstance(payload, bytes):
        # Cut again after decoding: backslashreplace writes an undecodable byte as 4 characters.
        return payload[:PREVIEW_CHARS].decode("utf-8", errors="backslashreplace")[:PREVIEW_CHARS]
    if isinstance(payload, str):
        return payload[:PREVIEW_CHARS]
    try:
        return json.dumps(payload, default=str)[:PREVIEW_CHARS]
    except (RecursionError, ValueError, TypeError):
        return f"<{type(payload).__name__} that cannot be previewed>"


def _quarantine_line(record: RawRecord, reason: str) -> bytes:
    entry = {"origin": record.origin, "reason": reason, "preview": _preview(record.payload)}
    # backslashreplace turns a lone surrogate into its own "\udXXX" JSON escape: still valid JSON.
    return (json.dumps(entry, ensure_ascii=False) + "\n").encode("utf-8", "backslashreplace")


def ingest_source(spec: SourceSpec, out_dir: Path, tasks: int, max_bytes: int | None,
                  max_doc_bytes: int) -> dict:
    """Validate every record of ``spec`` and write ``tasks`` JSONL shards plus a quarantine file."""
    spec.validate()
    docs_dir = out_dir / "documents"
    docs_dir.mkdir(parents=True, exist_ok=True)
    shards = [(docs_dir / f"{i:05d}.jsonl").open("wb") for i in range(tasks)]
    quarantine = Counter()
    seen_ids: set[str] = set()
    kept = kept_bytes = records = nulled = 0
    with (out_dir / "quarantine.jsonl").open("wb") as qf:
        for record in iter_records(spec, max_bytes, max_doc_bytes):
            records += 1
            try:
                decoded = _decode(record, spec)
            except Exception:  # a case nobody foresaw costs this record, counted, not the source
                decoded = Decoded(None, "undecodable")
            doc, reason, line = decoded.doc, decoded.reason, None
            if doc is not None and len(doc["text"].encode("utf-8", "surrogatepass")) > max_doc_bytes:
                doc, reason = None, "oversized"
            if doc is not None and doc["id"] in seen_ids:
                doc, reason = None, "duplicate_id"
            if doc is not None:
                line, reason = _document_line(doc)
            if line is None:
                quarantine[reason] += 1
                qf.write(_quarantine_line(record, reason))
                continue
            seen_ids.add(doc["id"])
            # Round-robin keeps the shards balanced so each datatrove task gets equal work.
            shards[kept % tasks].write(line)
            kept += 1
            faults.at("curation.mid_ingest", kept)  # kill-test hook (LLMDAG_FAULT_AT); no-op when unset
            kept_bytes += len(doc["text"].encode("utf-8"))
            nulled += decoded.values_nulled
    for f in shards:
        f.close()
    quarantined = sum(quarantine.values())
    if records != kept + quarantined:
        raise RuntimeError(f"{spec.name}: {records} records in but {kept} kept + {quarantined} quarantined")
    return {
        "source": spec.name, "domain": spec.domain, "kind": spec.kind,
        "docs_in": records, "docs_out": kept, "bytes": kept_bytes,
        "quarantined": quarantined, "quarantine_reasons": dict(sorted(quarantine.items())),
        "values_nulled": nulled,
    }
