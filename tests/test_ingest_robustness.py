"""Bad input at the plain-function level: every bad file or record is counted with its own reason,
never ends the source, never silently lost; ``docs_in == docs_out + quarantined`` in every case."""

from __future__ import annotations

import gzip
import json
import os
import pathlib
import subprocess
import sys
import textwrap
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard

from pipeline_assets.corpus.ingest import PREVIEW_CHARS, ingest_source
from pipeline_assets.corpus.sources import SourceSpec, iter_records, landing_sources_checked

GOOD = '{"id": "good", "text": "a good document"}\n'


def _strict(line: str) -> dict:
    def refuse(constant: str):
        raise ValueError(f"non-standard JSON constant {constant}")

    return json.loads(line, parse_constant=refuse)


def _write(root: Path, files: dict[str, str | bytes]) -> Path:
    for rel, content in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content.encode() if isinstance(content, str) else content)
    return root


def _ingest(src: Path, out: Path, max_doc_bytes: int = 1_000_000) -> tuple[dict, dict[str, dict], list[dict]]:
    """(stats, documents by id, quarantine entries), after checking the invariant and strict JSON."""
    stats = ingest_source(SourceSpec("src", "folder", "web", path=str(src)), out, 2, None, max_doc_bytes)
    docs = {d["id"]: d for p in sorted((out / "documents").glob("*.jsonl"))
            for d in map(_strict, p.read_text(encoding="utf-8").rstrip("\n").split("\n") if p.stat().st_size else [])}
    # JSONL lines end at "\n" only: splitlines() would also cut at a raw U+2028 or \x85 inside a string.
    text = (out / "quarantine.jsonl").read_text(encoding="utf-8").rstrip("\n")
    quarantine = [_strict(line) for line in text.split("\n")] if text else []
    assert stats["docs_in"] == stats["docs_out"] + stats["quarantined"]
    assert stats["docs_out"] == len(docs) and stats["quarantined"] == len(quarantine)
    assert stats["quarantine_reasons"] == {r: sum(q["reason"] == r for q in quarantine)
                                           for r in {q["reason"] for q in quarantine}}
    assert all(len(q["preview"]) <= PREVIEW_CHARS for q in quarantine)
    return stats, docs, quarantine


def _reasons(quarantine: list[dict]) -> dict[str, str]:
    """origin (relative to the source folder) -> reason."""
    return {q["origin"].split("/src/", 1)[1]: q["reason"] for q in quarantine}


def test_deep_json_and_huge_int_lines_are_quarantined_and_the_file_goes_on(tmp_path):
    deep = '{"text": "x", "n": ' + "[" * 100_000 + "]" * 100_000 + "}\n"
    nested_meta = '{"text": "y", "n": ' + "[" * 900 + "]" * 900 + "}\n"  # parses, too deep to convert
    huge_int = '{"text": "z", "n": ' + "7" * 5000 + "}\n"
    src = _write(tmp_path / "src", {"a.jsonl": deep + nested_meta + huge_int + GOOD})
    stats, docs, quarantine = _ingest(src, tmp_path / "out")
    assert _reasons(quarantine) == {"a.jsonl:1": "json_too_deep", "a.jsonl:2": "json_too_deep",
                                    "a.jsonl:3": "int_too_large"}
    assert list(docs) == ["src/good"] and stats["docs_in"] == 4


def test_parquet_timestamp_bytes_and_binary_text_columns_are_converted(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    table = pa.table({
        "text": pa.array([b"binary text", b"\xff not utf-8"], pa.binary()),
        "when": pa.array([1_600_000_000_000_000, 253_402_300_800_000_000_0], pa.timestamp("us")),  # 2nd > 9999
        "day": pa.array([18_000, 18_001], pa.date32()),
        "blob": pa.array([b"utf-8 bytes", b"\x00\xff"], pa.binary()),
        "score": pa.array([float("nan"), 1.5]),
    })
    pq.write_table(table, src / "rows.parquet")
    (src / "b.txt").write_text("plain text")
    stats, docs, quarantine = _ingest(src, tmp_path / "out")
    assert _reasons(quarantine) == {"rows.parquet:1": "non_utf8"}  # the text itself is not UTF-8
    meta = docs["src/rows.parquet:0"]["metadata"]
    assert docs["src/rows.parquet:0"]["text"] == "binary text"
    assert meta["when"].startswith("2020-09-13") and meta["day"] == "2019-04-14"
    assert meta["blob"] == "utf-8 bytes" and meta["score"] is None
    assert stats["values_nulled"] == 1 and "src/b.txt" in docs


def test_out_of_range_timestamp_in_a_row_is_kept_as_text(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    pq.write_table(pa.table({"text": ["far future"], "when": pa.array([253_402_300_800_000_000_0],
                                                                      pa.timestamp("us"))}), src / "t.parquet")
    _, docs, _ = _ingest(src, tmp_path / "out")
    assert isinstance(docs["src/t.parquet:0"]["metadata"]["when"], str)


def test_corrupt_parquet_is_one_quarantined_record_and_the_folder_goes_on(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    pq.write_table(pa.table({"text": ["one", "two"]}), src / "good.parquet")
    good = (src / "good.parquet").read_bytes()
    (src / "garbage.parquet").write_bytes(b"not a parquet file at all")
    (src / "truncated.parquet").write_bytes(good[: len(good) // 2])
    (src / "z.jsonl").write_text(GOOD)
    _, docs, quarantine = _ingest(src, tmp_path / "out")
    assert _reasons(quarantine) == {"garbage.parquet": "corrupt_parquet", "truncated.parquet": "corrupt_parquet"}
    assert set(docs) == {"src/good.parquet:0", "src/good.parquet:1", "src/good"}


def test_a_file_deleted_before_it_is_read_is_a_read_error(tmp_path):
    src = _write(tmp_path / "src", {"a.jsonl": GOOD, "b.jsonl": GOOD.replace("good", "b"), "c.txt": "c"})
    records = iter_records(SourceSpec("src", "folder", "web", path=str(src)), None, 1000)
    first = next(records)  # the folder is listed; b.jsonl vanishes before its turn
    (src / "b.jsonl").unlink()
    rest = list(records)
    assert first.origin.endswith("a.jsonl:1")
    assert [(Path(r.origin).name, r.reason) for r in rest] == [("b.jsonl", "read_error"), ("c.txt", None)]
    assert "FileNotFoundError" in rest[0].payload


def test_an_unreadable_file_and_an_unlistable_folder_are_read_errors(tmp_path, monkeypatch):
    # Tests run as root, where chmod 000 reads fine: make the OS refuse instead.
    src = _write(tmp_path / "src", {"locked.txt": "x", "sealed/a.txt": "x", "open/a.txt": "kept", "b.txt": "kept"})
    real_open, real_scandir = pathlib.Path.open, os.scandir

    def refusing_open(self, *args, **kwargs):
        if self.name == "locked.txt":
            raise PermissionError(13, "Permission denied", str(self))
        return real_open(self, *args, **kwargs)

    def refusing_scandir(path):
        if Path(path).name == "sealed":
            raise PermissionError(13, "Permission denied", str(path))
        return real_scandir(path)

    monkeypatch.setattr(pathlib.Path, "open", refusing_open)
    monkeypatch.setattr(os, "scandir", refusing_scandir)
    _, docs, quarantine = _ingest(src, tmp_path / "out")
    assert _reasons(quarantine) == {"locked.txt": "read_error", "sealed": "read_error"}
    assert set(docs) == {"src/open/a.txt", "src/b.txt"}


def test_nan_and_infinity_become_null_and_every_written_line_is_strict_json(tmp_path):
    lines = '{"id": "n", "text": "t", "score": NaN, "m": {"x": -Infinity}, "v": [Infinity, 1]}\n' + GOOD
    src = _write(tmp_path / "src", {"a.jsonl": lines})
    stats, docs, _ = _ingest(src, tmp_path / "out")  # _ingest parses every line with a strict parser
    assert docs["src/n"]["metadata"]["score"] is None and docs["src/n"]["metadata"]["v"] == [None, 1]
    assert docs["src/n"]["metadata"]["m"] == {"x": None}
    assert stats["values_nulled"] == 3


def test_lone_surrogate_and_undecodable_file_name_are_handled(tmp_path):
    src = _write(tmp_path / "src", {"a.jsonl": '{"id": "s", "text": "bad \\ud800 half"}\n' + GOOD})
    (src / os.fsdecode(b"caf\xe9.txt")).write_text("named in latin-1")
    _, docs, quarantine = _ingest(src, tmp_path / "out")
    assert _reasons(quarantine) == {"a.jsonl:1": "invalid_unicode"}
    assert "src/caf\\xe9.txt" in docs and "src/good" in docs


def test_over_long_line_and_oversized_text_file_are_refused_before_reading(tmp_path):
    cap = 10_000
    long_line = '{"id": "long", "text": "' + "w" * (5 * cap) + '"}\n'
    src = _write(tmp_path / "src", {"a.jsonl": GOOD + long_line + GOOD.replace("good", "after"),
                                    "big.txt": "x" * (cap + 1), "fits.txt": "y" * cap})
    _, docs, quarantine = _ingest(src, tmp_path / "out", max_doc_bytes=cap)
    assert _reasons(quarantine) == {"a.jsonl:2": "line_too_long", "big.txt": "oversized"}
    assert set(docs) == {"src/good", "src/after", "src/fits.txt"}
    by_reason = {q["reason"]: q for q in quarantine}
    assert by_reason["line_too_long"]["preview"].startswith('{"id": "long"')


def test_memory_stays_bounded_for_a_50_mb_line(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    with (src / "a.jsonl").open("w") as f:
        f.write('{"id": "huge", "text": "')
        for _ in range(50):
            f.write("w" * (1 << 20))
        f.write('"}\n' + GOOD)
    (src / "big.txt").write_bytes(b"x" * (50 << 20))
    # A fresh interpreter, so the peak RSS measured is this ingest's and nothing else's.
    script = textwrap.dedent(f"""
        import json, resource
        from pathlib import Path
        from pipeline_assets.corpus.ingest import ingest_source
        from pipeline_assets.corpus.sources import SourceSpec
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        stats = ingest_source(SourceSpec("src", "folder", "web", path={str(src)!r}), Path({str(tmp_path / "out")!r}),
                              1, None, 1_000_000)
        grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
        print(json.dumps({{"grown_kb": grown, "stats": stats}}))
    """)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, check=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["stats"]["quarantine_reasons"] == {"line_too_long": 1, "oversized": 1}
    assert result["stats"]["docs_out"] == 1
    assert result["grown_kb"] < 15 * 1024, result  # the line and the file are 50 MB each


def test_compressed_and_any_case_suffixes_are_read(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.jsonl.gz").write_bytes(gzip.compress(b'{"id": "gz", "text": "gzip"}\n'))
    (src / "b.jsonl.zst").write_bytes(zstandard.ZstdCompressor().compress(b'{"id": "zst", "text": "zstd"}\n'))
    (src / "C.JSONL").write_text('{"id": "upper", "text": "upper case"}\n')
    (src / "d.TXT").write_text("text")
    (src / "e.Md").write_text("# markdown")
    (src / "f.PARQUET").write_bytes(b"")  # an empty file named parquet: corrupt, not unsupported
    cut = gzip.compress(b"".join(b'{"id": "cut%d", "text": "line %d"}\n' % (i, i) for i in range(2000)))
    (src / "g.jsonl.gz").write_bytes(cut[: len(cut) // 2])  # truncated mid-stream
    (src / "h.jsonl.zst").write_bytes(b"not zstd")
    (src / "i.csv").write_text("a,b")
    _, docs, quarantine = _ingest(src, tmp_path / "out")
    cut_kept = {i for i in docs if i.startswith("src/cut")}
    assert 0 < len(cut_kept) < 2000  # the lines before the damage stand
    assert set(docs) - cut_kept == {"src/gz", "src/zst", "src/upper", "src/d.TXT", "src/e.Md"}
    assert _reasons(quarantine) == {"f.PARQUET": "corrupt_parquet", "g.jsonl.gz": "corrupt_compressed",
                                    "h.jsonl.zst": "corrupt_compressed", "i.csv": "unsupported_file"}


def test_utf8_bom_is_stripped(tmp_path):
    bom = b"\xef\xbb\xbf"
    src = _write(tmp_path / "src", {"a.jsonl": bom + GOOD.encode(), "b.txt": bom + b"text after a BOM"})
    stats, docs, _ = _ingest(src, tmp_path / "out")
    assert stats["quarantined"] == 0
    assert docs["src/b.txt"]["text"] == "text after a BOM" and "src/good" in docs


def test_symlinks_out_of_the_source_and_symlinked_folders_are_refused(tmp_path):
    outside = _write(tmp_path / "outside", {"secret.txt": "must not be ingested", "d/x.txt": "nor this"})
    src = _write(tmp_path / "src", {"inner.txt": "inside", "sub/a.txt": "a"})
    (src / "leak.txt").symlink_to("/etc/passwd")
    (src / "leak2.txt").symlink_to(outside / "secret.txt")
    (src / "linked_dir").symlink_to(outside / "d")
    (src / "loop").symlink_to(src)  # a followed link would walk this forever
    (src / "alias.txt").symlink_to(src / "inner.txt")  # inside the source: read
    (src / "dangling.txt").symlink_to(tmp_path / "nowhere")
    _, docs, quarantine = _ingest(src, tmp_path / "out")
    assert _reasons(quarantine) == {"leak.txt": "symlink_outside_source", "leak2.txt": "symlink_outside_source",
                                    "linked_dir": "symlinked_folder", "loop": "symlinked_folder",
                                    "dangling.txt": "broken_symlink"}
    assert set(docs) == {"src/inner.txt", "src/sub/a.txt", "src/alias.txt"}
    assert all("passwd" not in d["text"] and "must not" not in d["text"] for d in docs.values())


def test_a_fifo_is_refused_not_read(tmp_path):
    src = _write(tmp_path / "src", {"a.txt": "a"})
    os.mkfifo(src / "pipe.txt")  # opening it would block forever
    _, docs, quarantine = _ingest(src, tmp_path / "out")
    assert _reasons(quarantine) == {"pipe.txt": "not_a_regular_file"} and set(docs) == {"src/a.txt"}


def test_one_folders_failure_never_stops_another(tmp_path):
    landing = tmp_path / "landing"
    _write(landing / "good", {"a.jsonl": GOOD, "b.txt": "b"})
    broken = _write(landing / "broken", {"x.parquet": b"junk", "y.jsonl.gz": b"junk", "z.jsonl": "{nope\n"})
    (broken / "leak.txt").symlink_to("/etc/passwd")
    _write(tmp_path / "elsewhere", {"c.txt": "c"})
    (landing / "linked").symlink_to(tmp_path / "elsewhere")
    specs, problems = landing_sources_checked(landing)
    assert set(specs) == {"good", "broken"}
    assert [p.folder for p in problems] == ["linked"] and "symbolic link" in problems[0].message
    results = {}
    for name, spec in specs.items():
        results[name] = ingest_source(spec, tmp_path / "out" / name, 1, None, 1_000_000)
        assert results[name]["docs_in"] == results[name]["docs_out"] + results[name]["quarantined"]
    assert results["good"]["docs_out"] == 2 and results["good"]["quarantined"] == 0
    assert results["broken"]["docs_out"] == 0
    assert results["broken"]["quarantine_reasons"] == {"corrupt_compressed": 1, "corrupt_parquet": 1,
                                                       "malformed_json": 1, "symlink_outside_source": 1}


@pytest.mark.parametrize("text_field", ["text", "body"])
def test_int_id_and_custom_text_field_still_work(tmp_path, text_field):
    src = _write(tmp_path / "src", {"a.jsonl": json.dumps({"id": 1, text_field: "t", "tag": "x"}) + "\n"})
    stats = ingest_source(SourceSpec("src", "folder", "web", path=str(src), text_field=text_field),
                          tmp_path / "out", 1, None, 1000)
    assert (stats["docs_out"], stats["quarantined"], stats["docs_in"]) == (1, 0, 1)


def test_a_damaged_saved_dataset_is_one_quarantined_record(tmp_path):
    src = _write(tmp_path / "src", {"dataset_info.json": "{}", "state.json": "{not json"})
    stats, docs, quarantine = _ingest(src, tmp_path / "out")
    assert [q["reason"] for q in quarantine] == ["corrupt_dataset"] and not docs
