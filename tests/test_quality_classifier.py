"""corpus/quality.py: the fastText quality classifier, its held-out metrics and its datatrove filter step."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from datatrove.executor import LocalPipelineExecutor
from datatrove.pipeline.readers import JsonlReader
from datatrove.pipeline.writers import JsonlWriter

from pipeline_assets.corpus.config import CorpusConfig, QualityClassifierConfig
from pipeline_assets.corpus.filters import heuristic_recipe
from pipeline_assets.corpus.quality import (
    SCORE_KEY,
    QualityFilter,
    builtin_reference,
    folder_reference,
    skeleton,
    train_classifier,
)

PLANTED = [json.loads(line) for line in (Path(__file__).parent / "fixtures" / "planted_web.jsonl").open()]
CLEAN = [d for d in PLANTED if d["label"] in ("clean", "benign")]


def _shuffled(text: str, seed: int) -> str:
    """Word salad written independently of quality.word_salad: each paragraph's words in random order."""
    rng = random.Random(seed)
    paras = []
    for para in text.split("\n\n"):
        words = para.split()
        rng.shuffle(words)
        paras.append(" ".join(words))
    return "\n\n".join(paras)


@pytest.fixture(scope="module")
def classifier(tmp_path_factory):
    out = tmp_path_factory.mktemp("quality")
    cfg = QualityClassifierConfig()
    web = [s for s in heuristic_recipe("web", CorpusConfig()) if s[0] != "language"]
    result = train_classifier(cfg, builtin_reference(web, cfg.reference_max_bytes), out)
    return {"dir": out, "result": result, "model": str(out / result["model"]), "cfg": cfg}


def test_heldout_metrics_beat_chance_at_the_stated_prevalence(classifier):
    r = classifier["result"]
    held = r["heldout"]
    assert held["n_lq"] / held["n"] == pytest.approx(classifier["cfg"].heldout_lq_share, abs=0.01)
    assert r["auc_p_value"] < 1e-6 and held["auc"] > 0.9 and r["auc_ci95"][0] > 0.5
    assert held["f1"] > 0.6 and r["heldout_hq_kept"] >= 0.9  # the gate's bound (corpus/checks.py)
    assert set(r["reference"]) == {"python_docs", "package_readmes_kept_by_heuristics", "licenses"}
    # no held-out reference chunk is a training line (exact copies are dropped before the split)
    train = set((classifier["dir"] / "train.txt").read_text().splitlines())
    heldout = [json.loads(line) for line in (classifier["dir"] / "heldout.jsonl").open()]
    hq = {f"__label__hq {skeleton(h['text'])}" for h in heldout if h["label"] == "hq"}
    assert len(hq) > 100 and len(hq & train) / len(hq) < 0.02


def test_filter_keeps_unseen_prose_and_drops_its_word_salad_in_a_datatrove_pipeline(classifier, tmp_path):
    docs = [(d["id"], d["text"]) for d in CLEAN] + [(f"salad-{d['id']}-{s}", _shuffled(d["text"], s))
                                                      for d in CLEAN for s in range(3)]
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "docs.jsonl").write_text("".join(json.dumps({"id": i, "text": t}) + "\n" for i, t in docs))
    threshold = classifier["cfg"].thresholds["web"]
    LocalPipelineExecutor([
        JsonlReader(str(tmp_path / "in")),
        QualityFilter(classifier["model"], threshold, exclusion_writer=JsonlWriter(str(tmp_path / "removed"))),
        JsonlWriter(str(tmp_path / "out")),
    ], tasks=1, logging_dir=str(tmp_path / "logs")).run()

    def read(folder: str) -> dict[str, dict]:
        import gzip
        return {json.loads(line)["id"]: json.loads(line) for p in (tmp_path / folder).glob("*.jsonl.gz")
                for line in gzip.open(p, "rt")}

    kept, removed = read("out"), read("removed")
    assert set(kept) == {d["id"] for d in CLEAN}, sorted(set(kept) ^ {d["id"] for d in CLEAN})
    assert len(removed) == 3 * len(CLEAN)
    assert {d["metadata"]["filter_reason"] for d in removed.values()} == {"low_quality"}
    assert all(SCORE_KEY in d["metadata"] for d in [*kept.values(), *removed.values()])
    stats = json.loads((tmp_path / "logs" / "stats.json").read_text())
    assert any(s["stats"].get("dropped_low_quality", 0) for s in stats)


def test_users_point_it_at_their_own_reference(tmp_path):
    (tmp_path / "ref").mkdir()
    for d in CLEAN:
        (tmp_path / "ref" / f"{d['id']}.txt").write_text(d["text"])
    reference = folder_reference(str(tmp_path / "ref"))
    assert list(reference) == [str(tmp_path / "ref")] and len(reference[str(tmp_path / "ref")]) == len(CLEAN)
    r = train_classifier(QualityClassifierConfig(reference_path=str(tmp_path / "ref"), chunk_words=30,
                                                 heldout_fraction=0.3), reference, tmp_path / "out")
    assert r["reference"] == {str(tmp_path / "ref"): len(CLEAN)} and (tmp_path / "out" / r["model"]).exists()


def test_config_rejects_bad_values(tmp_path):
    with pytest.raises(ValueError, match="thresholds"):
        QualityClassifierConfig(thresholds={"web": 1.5}).validate()
    with pytest.raises(ValueError, match="reference_path"):
        QualityClassifierConfig(reference_path=str(tmp_path / "missing")).validate()
    with pytest.raises(ValueError, match="heldout_lq_share"):
        QualityClassifierConfig(heldout_lq_share=0).validate()
