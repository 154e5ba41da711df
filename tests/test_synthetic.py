"""The synthetic arithmetic stream: training-split problems only, verified, and not collapsed by dedup."""

from __future__ import annotations

import json
import re

import dagster as dg
from datatrove.data import Document

from pipeline_assets.corpus.blocks import ArithmeticVerifier
from pipeline_assets.corpus.synthetic import arithmetic_documents
from pipeline_assets.definitions import build_definitions
from pipeline_assets.tasks.arithmetic import arithmetic_split

LINE = re.compile(r"What is (\d+) ([+-]) (\d+)\? (-?\d+)")


def test_documents_hold_only_correct_training_split_problems():
    docs = list(arithmetic_documents(49, ("+",), documents=50))
    assert docs == list(arithmetic_documents(49, ("+",), documents=50))  # deterministic
    problems = [LINE.fullmatch(line).groups() for _, text in docs for line in text.splitlines()]
    assert len(problems) == 50 * 16
    for a, op, b, c in problems:
        assert int(a) + int(b) == int(c) and int(a) <= 49 and int(b) <= 49 and op == "+"
        assert arithmetic_split(int(a), op, int(b)) == "train"


def test_verifier_drops_wrong_answers_eval_problems_and_prose():
    heldout = next((a, b) for a in range(50) for b in range(50) if arithmetic_split(a, "+", b) == "test")
    verifier = ArithmeticVerifier()
    assert verifier.filter(Document(text="What is 3 + 4? 7\nWhat is 12 + 30? 42\n", id="ok")) is True
    assert verifier.filter(Document(text="What is 3 + 4? 8\n", id="wrong")) == (False, "wrong_answer")
    text = f"What is {heldout[0]} + {heldout[1]}? {sum(heldout)}\n"
    assert verifier.filter(Document(text=text, id="test")) == (False, "heldout_problem")
    assert verifier.filter(Document(text="Some prose.\n", id="prose")) == (False, "not_a_problem_line")


def test_the_stream_survives_curation_into_the_mixture(tmp_path):
    defs = build_definitions(root=str(tmp_path / "root"), landing=str(tmp_path / "landing"), builtin_sources=True)
    keys = {k: dg.AssetKey(["corpus", k]) for k in ("raw_documents", "filtered_documents", "minhash_signatures",
                                                    "duplicate_clusters", "deduplicated_documents",
                                                    "decontaminated_documents", "training_mixture")}
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("sources", ["synthetic_arithmetic"])

        def run(names, partition=None):
            selection = [keys[n] if n in keys else dg.AssetKey(n.split("/")) for n in names]
            assert dg.materialize(list(defs.assets), selection=selection, partition_key=partition,
                                  instance=instance, resources=defs.resources).success

        run(["corpus/quality_classifier"])  # filtering reads it (math is not scored by it)
        run(["raw_documents", "filtered_documents", "minhash_signatures"], "synthetic_arithmetic")
        run(["duplicate_clusters", "evals/benchmarks"])
        run(["deduplicated_documents", "decontaminated_documents"], "synthetic_arithmetic")
        run(["training_mixture"])
    manifest = json.loads((tmp_path / "root/corpus/training_mixture/_/tiny/current/manifest.json").read_text())
    unique = sum(e["unique_documents"] for e in manifest["train"] + manifest["val"])
    # Random problems are not near-duplicates of each other: with datatrove's digit normalization 400 -> 1.
    assert unique >= 380, manifest
    assert manifest["domain_weights"]["realized"] == {"math": 1.0}
