"""Content-safety filters on a labelled fixture: recall per reason, benign look-alikes kept, datatrove stats.

    .venv/bin/pytest tests/test_content_safety.py -s    # -s prints recall per reason and the FP rate
"""

from __future__ import annotations

import base64
import json
import pickle
import re
from collections import Counter
from pathlib import Path

import pytest
from datatrove.data import Document
from datatrove.executor import LocalPipelineExecutor
from datatrove.pipeline.readers import JsonlReader
from datatrove.pipeline.writers import JsonlWriter
from profanity_check import predict_prob

from pipeline_assets.corpus.config import ContentSafetyConfig
from pipeline_assets.corpus.safety import (
    RULES_DIR,
    MalwareFilter,
    ToxicityFilter,
    has_encoded_executable,
    safety_recipe,
)

FIXTURE = Path(__file__).parent / "fixtures" / "content_safety.jsonl"
ITEMS = [json.loads(line) for line in FIXTURE.read_text().splitlines() if line.strip()]
BY_LABEL = {label: [it for it in ITEMS if it["label"] == label] for label in ("toxic", "malware", "benign")}
# The model scores profanity and insults; a threat in clean words peaks at 0.75 ("you little rat").
KNOWN_MISSES = {"toxic_threat_review"}


def _reasons(filters, items: list[dict]) -> dict[str, tuple[list[str], dict]]:
    """id -> (drop reasons from every filter, the document's metadata), each filter run on every item."""
    docs = [Document(text=it["text"], id=it["id"]) for it in items]
    reasons: dict[str, list[str]] = {d.id: [] for d in docs}
    for f in filters:
        for doc, result in zip(docs, f.filter_batch(docs), strict=True):
            if result is not True:
                reasons[doc.id].append(result[1])
    return {d.id: (reasons[d.id], d.metadata) for d in docs}


@pytest.fixture(scope="module")
def verdicts() -> dict[str, tuple[list[str], dict]]:
    return _reasons([ToxicityFilter(), MalwareFilter()], ITEMS)


def test_fixture_covers_every_reason():
    rules = re.findall(r"^rule (\w+)", "".join(p.read_text() for p in RULES_DIR.glob("*.yar")), re.MULTILINE)
    expected = Counter(it["expect_reason"] for it in ITEMS)
    for reason in ["toxicity", "malware_encoded_executable", *(f"malware_{r}" for r in rules)]:
        assert expected[reason] >= 1, f"no fixture item expects {reason}"
    assert [len(BY_LABEL[k]) >= n for k, n in (("toxic", 12), ("malware", 15), ("benign", 25))] == [True] * 3
    assert len({it["id"] for it in ITEMS}) == len(ITEMS)


@pytest.mark.parametrize("item", BY_LABEL["malware"], ids=lambda it: it["id"])
def test_malware_payload_dropped_with_its_rule(verdicts, item):
    reasons, metadata = verdicts[item["id"]]
    assert reasons == [item["expect_reason"]], item["note"]
    assert f"malware_{metadata['malware_rules'][0]}" == item["expect_reason"]


@pytest.mark.parametrize("item", [it for it in BY_LABEL["toxic"] if it["id"] not in KNOWN_MISSES],
                         ids=lambda it: it["id"])
def test_toxic_text_dropped(verdicts, item):
    assert verdicts[item["id"]][0] == ["toxicity"], (item["note"], verdicts[item["id"]][1])


@pytest.mark.parametrize("item", BY_LABEL["benign"], ids=lambda it: it["id"])
def test_benign_look_alike_kept(verdicts, item):
    reasons, metadata = verdicts[item["id"]]
    assert reasons == [], (item["note"], metadata)


def test_rates(verdicts):
    """Recall per reason on harmful items and the false-positive rate on benign ones, printed and asserted."""
    recall = {}
    for reason in sorted({it["expect_reason"] for it in ITEMS if it["expect_reason"]}):
        items = [it for it in ITEMS if it["expect_reason"] == reason]
        recall[reason] = sum(reason in verdicts[it["id"]][0] for it in items) / len(items)
    false_positives = [it["id"] for it in BY_LABEL["benign"] if verdicts[it["id"]][0]]
    missed = {it["id"] for it in BY_LABEL["toxic"] if "toxicity" not in verdicts[it["id"]][0]}
    print(f"\nrecall: {json.dumps({k: round(v, 3) for k, v in recall.items()})}")
    print(f"benign false-positive rate: {len(false_positives)}/{len(BY_LABEL['benign'])} {false_positives}")
    assert all(v == 1.0 for k, v in recall.items() if k.startswith("malware_")), recall
    assert missed == KNOWN_MISSES, f"toxic items kept: {missed}"
    assert recall["toxicity"] >= 0.9
    assert false_positives == []


def test_metadata_on_every_document(verdicts):
    for it in ITEMS:
        reasons, metadata = verdicts[it["id"]]
        assert 0.0 <= metadata["toxicity_max"] <= 1.0 and metadata["toxic_units"] <= metadata["toxicity_units"]
        assert isinstance(metadata["malware_rules"], list)
        assert bool(metadata["malware_rules"]) == any(r.startswith("malware_") for r in reasons)


def test_one_abusive_paragraph_is_not_diluted(verdicts):
    long_doc = next(it for it in ITEMS if it["id"] == "toxic_long_one_paragraph")
    paragraphs = long_doc["text"].split("\n\n")
    assert len(paragraphs) == 10 and verdicts[long_doc["id"]][1]["toxic_units"] == 1
    # Scored as one document the page looks clean: that is why units are scored.
    assert predict_prob([long_doc["text"]])[0] < 0.5
    clean = "\n\n".join(p for p in paragraphs if "plot 14" not in p)
    assert _reasons([ToxicityFilter()], [{"id": "clean", "text": clean}])["clean"][0] == []


def test_encoded_executable_needs_a_real_header():
    not_pe = base64.b64encode(b"MZ" + b"quarterly numbers, nothing executable in here at all " * 3).decode()
    assert not has_encoded_executable(f"token: {not_pe}")
    elf = base64.b64encode(b"\x7fELF\x02\x01\x01" + bytes(80)).decode()
    assert has_encoded_executable(f"blob: {elf}")
    assert not has_encoded_executable(f"blob: A{elf}")  # inside a longer run, the ELF magic is misaligned
    assert not has_encoded_executable(f"blob: {elf[:60]}")  # shorter than 64 chars


def test_drop_reasons_in_datatrove_stats_and_exclusion_files(tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    (src / "docs.jsonl").write_text("".join(json.dumps(it) + "\n" for it in ITEMS))
    removed = {name: tmp_path / "removed" / f"{i}_{name}" for i, name in enumerate(("toxicity", "malware"), 1)}
    LocalPipelineExecutor([
        JsonlReader(str(src), compression=None),
        ToxicityFilter(exclusion_writer=JsonlWriter(str(removed["toxicity"]), compression=None)),
        MalwareFilter(exclusion_writer=JsonlWriter(str(removed["malware"]), compression=None)),
        JsonlWriter(str(tmp_path / "out"), compression=None),
    ], tasks=1, logging_dir=str(tmp_path / "logs")).run()

    expected = Counter(it["expect_reason"] for it in ITEMS if it["expect_reason"] and it["id"] not in KNOWN_MISSES)
    steps = json.loads((tmp_path / "logs" / "stats.json").read_text())
    stats = {}
    for step in steps:
        if "FILTER" in step["name"]:
            stats.update({k.removeprefix("dropped_"): v["total"] if isinstance(v, dict) else v
                          for k, v in step["stats"].items() if k.startswith("dropped_")})
    assert stats == dict(expected)

    def read(folder: Path) -> list[dict]:
        return [json.loads(line) for f in sorted(folder.glob("*.jsonl")) for line in f.read_text().splitlines()]

    by_id = {it["id"]: it for it in ITEMS}
    for name, folder in removed.items():
        for doc in read(folder):
            assert doc["metadata"]["filter_reason"] == by_id[doc["id"]]["expect_reason"]
            assert doc["metadata"]["filter_reason"].startswith("malware_" if name == "malware" else "toxicity")
    kept = read(tmp_path / "out")
    assert {d["id"] for d in kept} == {it["id"] for it in BY_LABEL["benign"]} | KNOWN_MISSES
    assert all("toxicity_max" in d["metadata"] and d["metadata"]["malware_rules"] == [] for d in kept)


def test_filters_pickle_after_use():
    """Workers get pickled steps: the models stay in a per-process cache, not on the filter."""
    docs = [Document(text="You are a worthless idiot.", id="a"), Document(text="<?php eval($_POST['x']); ?>", id="b")]
    for f in (ToxicityFilter(), MalwareFilter()):
        f.filter_batch(docs)
        clone = pickle.loads(pickle.dumps(f))
        assert clone.filter_batch(docs) == f.filter_batch(docs)


@pytest.mark.parametrize("bad", [
    {"toxicity_threshold": 0.0},
    {"toxicity_threshold": 1.5},
    {"toxic_unit_fraction": -0.1},
    {"toxicity_max_threshold": 0.5},  # below toxicity_threshold
    {"min_unit_chars": -1},
])
def test_validate_rejects_bad_values(bad):
    ContentSafetyConfig().validate()
    with pytest.raises(ValueError, match=next(iter(bad))):
        ContentSafetyConfig(**bad).validate()
    with pytest.raises(ValueError):
        safety_recipe(ContentSafetyConfig(**bad))


def test_recipe_follows_the_flags():
    assert [n for n, _ in safety_recipe(ContentSafetyConfig())] == ["toxicity", "malware"]
    assert [n for n, _ in safety_recipe(ContentSafetyConfig(toxicity=False))] == ["malware"]
    (_, make), = safety_recipe(ContentSafetyConfig(malware=False, toxicity_threshold=0.8))
    assert isinstance(make(None), ToxicityFilter) and make(None).threshold == 0.8
