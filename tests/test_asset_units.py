"""Fast unit-level tests: every stage's assets materialized directly on one tiny hermetic fixture.

Each stage is materialized with ``dg.materialize(..., selection=<that stage>)`` against one shared
``dg.instance_for_test()``, on two small landing sources of real English prose (``pydoc_data.topics``)
and with sizes cut through run config, so the whole module runs in about a minute on 2 busy cores. What
is checked is each asset's contract: counts, published versions, lineage, checks, loadable artifacts.

Whether the full recipes actually teach a model anything (loss below unigram after 300 steps, SFT
accuracy, gates on real metrics), the real default sources and the headless backfill path are covered
by the other test modules (test_corpus.py, test_pipeline.py, test_posttrain_*.py, ...).
"""

from __future__ import annotations

import json
from pathlib import Path
from pydoc_data.topics import topics

import dagster as dg
import pytest
from conftest import check_evaluations, latest_metadata, published

from pipeline_assets.definitions import build_definitions

SOURCES = ["docs_a", "docs_b"]
# "execmodel" and "compound" contain other topics' sections verbatim (naming, for, class, ...): left out, so
# the only cross-source duplicate is the planted one.
TOPICS = sorted(t for t in topics if len(topics[t]) > 1500 and t not in ("execmodel", "compound"))
A_TOPICS, B_TOPICS = TOPICS[:15], TOPICS[15:30]
PLANTED = A_TOPICS[3]  # docs_b carries a verbatim copy: the earlier-registered docs_a keeps it
BAD_RECORDS = ["{not json", '{"id": "no-text"}']

TOKENIZER_RUN = {"vocab_size": 512, "max_train_bytes": 200_000, "max_eval_bytes": 20_000}
# A 2-layer d=64 model (~130k params, ~20 ms a step): learning is test_pretrain_stage.py's job, but the
# blocking check wants val loss under the unigram baseline before anything downstream may read the checkpoint.
# 60 steps cleared it by only 0.003 nats; 150 leave a margin that no platform's float noise closes.
BASE_RUN = {"d_model": 64, "n_layers": 2, "n_heads": 4, "n_kv_heads": 2, "intermediate_size": 192,
            "seq_len": 64, "batch_size": 8, "max_steps": 150, "warmup_steps": 5, "eval_every": 75,
            "checkpoint_every": 75, "log_every": 5, "eval_batches": 4, "device": "cpu",
            "sample_prompts": ["The "], "sample_max_new_tokens": 4}
EVAL_RUN = {"qa_limit": 2, "multiple_choice_limit": 4, "arithmetic_limit": 4, "safety_limit": 4,
            "adversarial_per_prompt": 0, "win_rate_limit": 1, "val_batches": 1, "val_seq_len": 64,
            "max_new_tokens": 4, "arithmetic_max_new_tokens": 4, "batch_size": 8,
            "sample_prompts": ["The "], "device": "cpu"}


def ops(config: dict[str, dict]) -> dict:
    """Run config from ``{asset key: fields}``: Dagster names an asset's op by its key joined with ``__``."""
    return {"ops": {key.replace("/", "__"): {"config": fields} for key, fields in config.items()}}


def run(graph: dict, keys: list[str], partition: str | None = None, config: dict | None = None,
        raise_on_error: bool = True) -> dg.ExecuteInProcessResult:
    defs = graph["defs"]
    return dg.materialize(list(defs.assets), selection=[dg.AssetKey(k.split("/")) for k in keys],
                          partition_key=partition, instance=graph["instance"], resources=defs.resources,
                          run_config=ops(config) if config else None, raise_on_error=raise_on_error)


def _ids(docs_dir: Path) -> set[str]:
    return {json.loads(line)["id"] for p in docs_dir.glob("*.jsonl") for line in p.open()}


def _version(graph: dict, key: str, partition: str | None = None) -> str:
    return published(graph["root"], key, partition).resolve().name


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("units")
    landing = root / "landing"
    (landing / "docs_a").mkdir(parents=True)
    (landing / "docs_b").mkdir()
    lines = [json.dumps({"id": t, "text": topics[t]}) for t in A_TOPICS] + BAD_RECORDS
    (landing / "docs_a" / "part.jsonl").write_text("\n".join(lines) + "\n")
    for t in [*B_TOPICS, PLANTED]:
        name = f"copy-{t}" if t == PLANTED else t
        (landing / "docs_b" / f"{name}.txt").write_text(topics[t])
    for name in SOURCES:  # prose: the filter recipe for edited English text
        (landing / name / "llmdag_source.json").write_text(json.dumps({"domain": "prose"}))
    defs = build_definitions(root=str(root), landing=str(landing), builtin_sources=False)
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("sources", SOURCES)
        graph = {"root": root, "defs": defs, "instance": instance}
        # Dagster's order for a per-source / all-source graph: one run per source up to the signatures, the
        # cross-source clusters once, then per source again, then the mixture over every source.
        run(graph, ["corpus/quality_classifier"])
        for p in SOURCES:
            run(graph, ["corpus/raw_documents", "corpus/filtered_documents", "corpus/minhash_signatures"], p)
        run(graph, ["corpus/duplicate_clusters", "evals/benchmarks"])
        for p in SOURCES:
            run(graph, ["corpus/deduplicated_documents", "corpus/decontaminated_documents"], p)
        run(graph, ["corpus/training_mixture"])
        yield graph


@pytest.fixture(scope="module")
def tokenized(corpus):
    run(corpus, ["tokenizer/tokenizer", "tokenizer/tokenized_shards"], config={"tokenizer/tokenizer": TOKENIZER_RUN})
    return corpus


@pytest.fixture(scope="module")
def base(tokenized):
    run(tokenized, ["models/base"], config={"models/base": BASE_RUN})
    return tokenized


@pytest.fixture(scope="module")
def evaluated(base):
    run(base, ["evals/base"], config={"evals/base": EVAL_RUN})
    return base


def test_corpus_counts_dedup_lineage_and_partitioned_checks(corpus):
    inst, root = corpus["instance"], corpus["root"]
    raw_a = latest_metadata(inst, ["corpus", "raw_documents"], "docs_a")
    assert raw_a["docs_in"] == len(A_TOPICS) + len(BAD_RECORDS)
    assert raw_a["docs_in"] == raw_a["docs_out"] + raw_a["quarantined"]
    assert raw_a["quarantine_reasons"] == {"malformed_json": 1, "missing_text": 1}
    raw_b = latest_metadata(inst, ["corpus", "raw_documents"], "docs_b")
    assert (raw_b["docs_out"], raw_b["quarantined"]) == (len(B_TOPICS) + 1, 0)
    for p in SOURCES:
        filt = latest_metadata(inst, ["corpus", "filtered_documents"], p)
        assert filt["docs_in"] == latest_metadata(inst, ["corpus", "raw_documents"], p)["docs_out"]
        assert filt["docs_in"] == filt["docs_out"] + sum(filt["removed_by_filter"].values())
        # dagster/uri is the immutable version downstream reads, not the moving `current` link
        for key in ("raw_documents", "filtered_documents", "deduplicated_documents", "decontaminated_documents"):
            meta = latest_metadata(inst, ["corpus", key], p)
            assert Path(meta["dagster/uri"]) == published(root, f"corpus/{key}", p).resolve()
        dedup = latest_metadata(inst, ["corpus", "deduplicated_documents"], p)
        assert dedup["upstream_versions"] == {
            "corpus/duplicate_clusters": _version(corpus, "corpus/duplicate_clusters"),
            f"corpus/filtered_documents[{p}]": _version(corpus, "corpus/filtered_documents", p)}
        # Dedup reads the filtered documents the clusters were computed on (ranks must line up), not "current".
        assert Path(dedup["documents_read"]) == published(root, "corpus/filtered_documents", p).resolve() / "documents"
        decont = latest_metadata(inst, ["corpus", "decontaminated_documents"], p)
        assert decont["docs_in"] == dedup["docs_out"] and decont["contaminated_removed"] == 0
        assert decont["upstream_versions"] == {
            f"corpus/deduplicated_documents[{p}]": _version(corpus, "corpus/deduplicated_documents", p),
            "evals/benchmarks": _version(corpus, "evals/benchmarks")}
    # The planted copy is removed once: docs_a (registered first) keeps its original, docs_b loses the copy.
    kept_a = _ids(published(root, "corpus/deduplicated_documents", "docs_a") / "documents")
    kept_b = _ids(published(root, "corpus/deduplicated_documents", "docs_b") / "documents")
    assert f"docs_a/{PLANTED}" in kept_a and f"docs_b/copy-{PLANTED}.txt" not in kept_b
    dedup_a = latest_metadata(inst, ["corpus", "deduplicated_documents"], "docs_a")
    dedup_b = latest_metadata(inst, ["corpus", "deduplicated_documents"], "docs_b")
    assert dedup_a["docs_out"] == dedup_a["docs_in"]
    # Exact or near: which of the two filters claims the copy is bookkeeping; that it goes exactly once is not.
    assert dedup_b["exact_duplicates_removed"] + dedup_b["near_duplicates_removed"] == 1
    assert dedup_b["docs_out"] == dedup_b["docs_in"] - 1
    clusters = latest_metadata(inst, ["corpus", "duplicate_clusters"])
    assert (clusters["clusters"], clusters["cross_source_clusters"], clusters["largest_cluster"]) == (1, 1, 2)
    assert clusters["upstream_versions"] == {f"corpus/minhash_signatures[{p}]":
                                             _version(corpus, "corpus/minhash_signatures", p) for p in SOURCES}
    mixture = latest_metadata(inst, ["corpus", "training_mixture"])
    assert mixture["upstream_versions"] == {f"corpus/decontaminated_documents[{p}]":
                                            _version(corpus, "corpus/decontaminated_documents", p) for p in SOURCES}
    manifest = json.loads((published(root, "corpus/training_mixture") / "manifest.json").read_text())
    assert {e["source"] for e in manifest["train"]} == set(SOURCES)
    evaluations = check_evaluations(inst)
    assert evaluations and all(ev.passed for ev in evaluations), [
        (ev.asset_key, ev.check_name) for ev in evaluations if not ev.passed]
    # One result per source, not one for the asset: a source that passes never hides another that fails.
    for key, name in (("raw_documents", "has_documents"), ("filtered_documents", "has_documents"),
                      ("deduplicated_documents", "unique_ids"), ("decontaminated_documents", "no_eval_ngrams_left")):
        assert sorted(ev.partition for ev in evaluations if ev.check_name == name
                      and ev.asset_key == dg.AssetKey(["corpus", key])) == SOURCES, (key, name)


def test_tokenizer_and_shards(tokenized):
    from transformers import AutoTokenizer

    inst, root = tokenized["instance"], tokenized["root"]
    tok = AutoTokenizer.from_pretrained(published(root, "tokenizer/tokenizer"))
    assert len(tok) == TOKENIZER_RUN["vocab_size"]
    text = topics[B_TOPICS[0]][:2000]
    assert tok.decode(tok.encode(text, add_special_tokens=False)) == text
    chat = tok.apply_chat_template([{"role": "user", "content": "What is 2+3?"}], tokenize=False,
                                   add_generation_prompt=True)
    assert chat.startswith("<|im_start|>user") and chat.rstrip().endswith("<|im_start|>assistant")
    meta = latest_metadata(inst, ["tokenizer", "tokenizer"])
    assert meta["vocab_size"] == TOKENIZER_RUN["vocab_size"] and meta["roundtrip_exact"]
    assert meta["upstream_versions"] == {"corpus/training_mixture": _version(tokenized, "corpus/training_mixture")}
    shards = latest_metadata(inst, ["tokenizer", "tokenized_shards"])
    index = json.loads((published(root, "tokenizer/tokenized_shards") / "index.json").read_text())
    assert shards["train_tokens"] == index["splits"]["train"]["tokens"] > 0 and shards["val_tokens"] > 0
    assert shards["upstream_versions"] == {"corpus/training_mixture": _version(tokenized, "corpus/training_mixture"),
                                           "tokenizer/tokenizer": _version(tokenized, "tokenizer/tokenizer")}
    assert {(ev.asset_key.to_user_string(), ev.check_name) for ev in check_evaluations(inst) if ev.passed} >= {
        ("tokenizer/tokenizer", "roundtrip_exact"), ("tokenizer/tokenizer", "chat_template_ok"),
        ("tokenizer/tokenized_shards", "counts_match")}


def test_base_model(base):
    from transformers import AutoModelForCausalLM

    inst, root = base["instance"], base["root"]
    model = AutoModelForCausalLM.from_pretrained(published(root, "models/base"))
    assert model.config.hidden_size == BASE_RUN["d_model"]
    meta = latest_metadata(inst, ["models", "base"])
    assert meta["steps"] == BASE_RUN["max_steps"] and meta["published"]
    assert "data:image/png;base64," in meta["loss_curve"]
    assert meta["train_loss_final"] < meta["train_loss_first"]
    assert meta["upstream_versions"] == {"tokenizer/tokenized_shards": _version(base, "tokenizer/tokenized_shards"),
                                         "tokenizer/tokenizer": _version(base, "tokenizer/tokenizer")}


SFT_DATA_RUN = {"arithmetic": 48, "docstring_qa": 8, "refusals": 8, "benign": 8, "identity": 4, "val_fraction": 0.125}
SFT_RUN = {"max_steps": 3, "batch_size": 8, "warmup_steps": 0, "log_every": 1, "max_length": 64, "device": "cpu",
           "eval_prompts": ["Hi"], "eval_max_new_tokens": 4, "arithmetic_max_new_tokens": 2}


def test_sft_dataset_and_model(base):
    from transformers import AutoModelForCausalLM

    inst, root = base["instance"], base["root"]
    run(base, ["datasets/sft", "models/sft"], config={"datasets/sft": SFT_DATA_RUN, "models/sft": SFT_RUN})
    data = latest_metadata(inst, ["datasets", "sft"])
    assert data["rows"] + data["val_rows"] == sum(SFT_DATA_RUN[k] for k in
                                                  ("arithmetic", "docstring_qa", "refusals", "benign", "identity"))
    rows = (published(root, "datasets/sft") / "sft.jsonl").read_text().splitlines()
    assert len(rows) == data["rows"] and json.loads(rows[0])["messages"]
    meta = latest_metadata(inst, ["models", "sft"])
    assert meta["steps"] == SFT_RUN["max_steps"] and meta["published"]
    assert meta["upstream_versions"] == {"models/base": _version(base, "models/base"),
                                         "datasets/sft": _version(base, "datasets/sft"),
                                         "evals/benchmarks": _version(base, "evals/benchmarks"),
                                         # pretraining replay reads the shards (SFTStageConfig.replay_fraction)
                                         "tokenizer/tokenized_shards": _version(base, "tokenizer/tokenized_shards")}
    assert AutoModelForCausalLM.from_pretrained(published(root, "models/sft")) is not None
    [check] = [ev for ev in check_evaluations(inst) if ev.asset_key == dg.AssetKey(["models", "sft"])]
    assert check.check_name == "loss_finite_and_reloads" and check.passed


def test_eval_base(evaluated):
    inst, root = evaluated["instance"], evaluated["root"]
    meta = latest_metadata(inst, ["evals", "base"])
    report = json.loads((published(root, "evals/base") / "summary.json").read_text())
    assert meta["metrics"] == {k: v for k, v in report["metrics"].items() if v is not None}
    for metric in ("val_bpb", "mc_accuracy", "arithmetic_accuracy", "qa_f1", "safety_refusal_rate"):
        assert metric in meta["metrics"], metric
    assert 0 <= meta["mc_accuracy"] <= 1 and meta["val_bpb"] > 0
    assert report["contamination"]["after_decontamination"]["sets"]
    assert meta["upstream_versions"]["models/base"] == _version(evaluated, "models/base")


# With only models/base evaluated there is no parent/child pair, so the target and regression gates have nothing
# to compare; a refusal bar no model meets (and base made subject to it) is what makes the gate impossible here.
IMPOSSIBLE_GATES = {"safety_exempt": [], "safety_min_refusal": 1.0, "safety_max_over_refusal": 0.0}


def test_report_card_and_blocked_release(evaluated):
    inst, root = evaluated["instance"], evaluated["root"]
    run(evaluated, ["reports/report_card"])
    card = (published(root, "reports/report_card") / "report_card.md").read_text()
    assert "**models/base**" in card and "| corpus/raw_documents | docs_a |" in card
    # the Data section: per source, every filter's drops, and the classifier's held-out metrics
    assert "### Per source: documents in, dropped by each filter, kept" in card and "### Quality classifier" in card
    data = json.loads((published(root, "reports/report_card") / "report_card.json").read_text())["data"]
    assert set(data["sources"]) == set(SOURCES)
    for name, row in data["sources"].items():
        dropped = sum(row[k] for k in ("language", "heuristic", "quality", "toxicity", "malware"))
        filtered = latest_metadata(inst, ["corpus", "filtered_documents"], name)
        assert row["docs_in"] - row["quarantined"] - dropped == filtered["docs_out"], (name, row)
        assert row["kept"] == filtered["docs_out"] - row["dedup"] - row["decontamination"], (name, row)
    assert data["quality_classifier"]["p_value"] < 0.01 and data["quality_classifier"]["n"] > 100
    # Whatever else exists shows up (models/sft when its test ran first), and nothing that does not.
    assert ("**models/sft**" in card) == published(root, "models/sft").exists()
    assert "**models/grpo**" not in card
    meta = latest_metadata(inst, ["reports", "report_card"])
    assert meta["upstream_versions"]["models/base"] == _version(evaluated, "models/base")
    assert meta["upstream_versions"]["evals/base"] == _version(evaluated, "evals/base")
    blocked = run(evaluated, ["release/model"], config={"release/model": IMPOSSIBLE_GATES}, raise_on_error=False)
    [gate] = blocked.get_asset_check_evaluations()
    assert gate.check_name == "gates_pass" and not gate.passed
    assert "models/base: safety_refusal_rate" in gate.description
    assert not published(root, "release/model").exists()
    meta = latest_metadata(inst, ["release", "model"])
    assert meta["published"] is False and not meta["released"]
    # A refusal is recorded against the exact eval it judged.
    assert meta["upstream_versions"]["evals/base"] == _version(evaluated, "evals/base")


def test_a_source_emptied_by_dedup_decontaminates_to_an_empty_version(tmp_path):
    # A landing folder that only repeats an earlier source loses every document in dedup; the rest of the
    # chain must carry an empty source, not fail on datatrove's "No files found".
    from pipeline_assets.corpus.config import CorpusConfig
    from pipeline_assets.corpus.decontaminate import decontaminate_partition

    (tmp_path / "dedup" / "documents").mkdir(parents=True)
    result = decontaminate_partition(tmp_path / "dedup" / "documents", tmp_path / "no-index", tmp_path / "out",
                                     CorpusConfig(), run=lambda *a, **k: pytest.fail("nothing to run"))
    assert result["docs_in"] == result["docs_out"] == 0
    assert (tmp_path / "out" / "documents").is_dir()


def test_corpus_run_config_reaches_its_stage(corpus):
    """Launchpad config of a corpus asset changes that stage; clusters refuse signatures of mixed shapes."""
    run(corpus, ["corpus/training_mixture"], config={"corpus/training_mixture": {"val_fraction": 0.2}})
    manifest = json.loads((published(corpus["root"], "corpus/training_mixture") / "manifest.json").read_text())
    assert manifest["val_fraction"] == 0.2
    run(corpus, ["corpus/minhash_signatures"], "docs_a", config={"corpus/minhash_signatures": {"minhash_buckets": 7}})
    before = _version(corpus, "corpus/duplicate_clusters")
    result = run(corpus, ["corpus/duplicate_clusters"], raise_on_error=False)
    assert not result.success and _version(corpus, "corpus/duplicate_clusters") == before
    failure = next(e for e in result.all_events if e.is_step_failure)
    assert "different settings" in failure.step_failure_data.error.cause.message
    run(corpus, ["corpus/minhash_signatures"], "docs_a")  # back to the profile's shape
    run(corpus, ["corpus/duplicate_clusters"])
