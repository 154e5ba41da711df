"""Ingest one source into clean JSONL documents, quarantining every record that would break datatrove.

Why our own gate in front of datatrove's readers: ``JsonlReader`` silently drops the rest of a file
after a non-UTF-8 byte, crashes on a non-object line or a non-string ``text``, and its filters can
run for minutes on one 50 MB record (../shared/notes/datatrove.md §8). Here every bad record is
counted with a reason and kept in ``quarantine.jsonl``; nothing is silently lost.

Output: ``documents/{rank:05d}.jsonl`` (one file per datatrove task) with ``{"id", "text",
"metadata"}`` records, ``metadata.source`` and ``metadata.domain`` set; ``quarantine.jsonl``.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from pipeline_assets import faults
from pipeline_assets.corpus.sources import RawRecord, SourceSpec, iter_records

PREVIEW_CHARS = 500


def _decode(record: RawRecord, spec: SourceSpec) -> tuple[dict | None, str | None]:
    """Return (document, None) or (None, reason)."""
    payload = record.payload
    if record.fmt == "unsupported":
        return None, "unsupported_file"
    if isinstance(payload, bytes):
        try:
            payload = payload.decode("utf-8")
        except UnicodeDecodeError:
            return None, "non_utf8"
    if record.fmt == "jsonl":
        try:
            payload = json.loads(payload)
        except json.JSONDecodeError:
            return None, "malformed_json"
        if not isinstance(payload, dict):
            return None, "not_an_object"
    if isinstance(payload, str):
        row = {"text": payload}
    else:
        row = payload
    if spec.text_field not in row or row[spec.text_field] is None:
        return None, "missing_text"
    text = row[spec.text_field]
    if not isinstance(text, str):
        return None, "non_string_text"
    if not text.strip():
        return None, "empty_text"
    if "\x00" in text:
        return None, "binary_content"
    meta = row.get("metadata") if isinstance(row.get("metadata"), dict) else {}
    extra = {k: v for k, v in row.items() if k not in (spec.text_field, "id", "metadata")}
    meta = {**extra, **meta, "source": spec.name, "domain": spec.domain, "origin": record.origin}
    doc_id = row.get("id")
    doc_id = str(doc_id) if isinstance(doc_id, (str, int)) and str(doc_id) else record.default_id
    return {"id": f"{spec.name}/{doc_id}", "text": text, "metadata": meta}, None


def _preview(payload: bytes | dict | str) -> str:
    if isinstance(payload, bytes):
        return payload[:PREVIEW_CHARS].decode("utf-8", errors="backslashreplace")
    return (payload if isinstance(payload, str) else json.dumps(payload, default=str))[:PREVIEW_CHARS]


def ingest_source(spec: SourceSpec, out_dir: Path, tasks: int, max_bytes: int | None,
                  max_doc_bytes: int) -> dict:
    """Validate every record of ``spec`` and write ``tasks`` JSONL shards plus a quarantine file."""
    spec.validate()
    docs_dir = out_dir / "documents"
    docs_dir.mkdir(parents=True, exist_ok=True)
    shards = [(docs_dir / f"{i:05d}.jsonl").open("w", encoding="utf-8") for i in range(tasks)]
    quarantine = Counter()
    seen_ids: set[str] = set()
    kept = kept_bytes = records = 0
    with (out_dir / "quarantine.jsonl").open("w", encoding="utf-8") as qf:
        for record in iter_records(spec, max_bytes):
            records += 1
            doc, reason = _decode(record, spec)
            if doc is not None and len(doc["text"].encode("utf-8")) > max_doc_bytes:
                doc, reason = None, "oversized"
            if doc is not None and doc["id"] in seen_ids:
                doc, reason = None, "duplicate_id"
            if doc is None:
                quarantine[reason] += 1
                qf.write(json.dumps({"origin": record.origin, "reason": reason,
                                     "preview": _preview(record.payload)}, ensure_ascii=False) + "\n")
                continue
            seen_ids.add(doc["id"])
            # Round-robin keeps the shards balanced so each datatrove task gets equal work.
            shards[kept % tasks].write(json.dumps(doc, ensure_ascii=False) + "\n")
            kept += 1
            faults.at("curation.mid_ingest", kept)  # kill-test hook (LLMDAG_FAULT_AT); no-op when unset
            kept_bytes += len(doc["text"].encode("utf-8"))
    for f in shards:
        f.close()
    return {
        "source": spec.name, "domain": spec.domain, "kind": spec.kind,
        "records_in": records, "documents": kept, "bytes": kept_bytes,
        "quarantined": sum(quarantine.values()), "quarantine_reasons": dict(sorted(quarantine.items())),
    }
