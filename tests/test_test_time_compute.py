"""Test-time compute: the selection rules, pass@N, the curves and their paired target, and the report card's
section. The asset itself runs on the trained policies in test_pipeline.py and on the default run."""

from __future__ import annotations

import random
from math import comb

import pytest

from pipeline_assets.evals.stats import paired_test
from pipeline_assets.evals.test_time_compute import (
    TestTimeComputeConfig,
    curves,
    curves_png,
    final_answer,
    pass_at_k,
    select,
)


def test_final_answer_and_rules():
    assert final_answer("so 3 + 4 = 7.") == "7" and final_answer("-1,024") == "-1024"
    assert final_answer("42.0") == "42" and final_answer("no number") is None
    answers = ["5", "7", "7", None, "5", "7"]
    assert select("majority", answers, None) == "7"
    assert select("majority", ["5", "7"], None) == "5"  # a tie goes to the earliest sampled
    rewards = [0.1, 0.2, 0.3, 9.0, 2.0, 0.0]
    # best-of-N takes the top-scored sample even when it holds no answer; weighted sums per answer.
    assert select("best_of_n", answers, rewards) is None and select("weighted", answers, rewards) == "5"
    assert select("best_of_n", answers, [0.1, 0.2, 0.3, 0.0, 2.0, 0.0]) == "5"
    assert select("weighted", answers, [0.0, 1.0, 1.0, 0.0, 1.5, 1.0]) == "7"
    with pytest.raises(ValueError, match="reward-model scores"):
        select("best_of_n", answers, None)


def test_pass_at_k_is_the_unbiased_estimator():
    assert pass_at_k(16, 0, 8) == 0.0 and pass_at_k(16, 9, 8) == 1.0
    assert pass_at_k(16, 4, 1) == pytest.approx(4 / 16)
    assert pass_at_k(16, 4, 4) == pytest.approx(1 - comb(12, 4) / comb(16, 4))


def _samples(p_right: float, problems: int, n: int, seed: int) -> tuple[list[list[str]], list[str]]:
    """Each sample right with p_right, else one of 4 wrong answers: the modal answer is right when p > ~0.25."""
    rng = random.Random(seed)
    truth = [str(i) for i in range(problems)]
    return [[t if rng.random() < p_right else f"{t}x{rng.randrange(4)}" for _ in range(n)] for t in truth], truth


def test_majority_vote_beats_one_sample_when_the_mode_is_right_and_the_rules_behave():
    answers, truth = _samples(0.45, 120, 16, 0)
    # A verifier that prefers right answers (noisy) and one that prefers wrong ones.
    rng = random.Random(1)
    good = [[(1.0 if a == t else 0.0) + rng.gauss(0, 0.5) for a in row] for row, t in zip(answers, truth, strict=True)]
    bad = [[-g for g in row] for row in good]
    out = curves(answers, truth, good, resamples=6)
    assert out["ns"] == [1, 2, 4, 8, 16] and set(out) >= {"majority", "best_of_n", "weighted", "pass_at_n"}
    maj = out["majority"]["mean"]
    assert maj[3] > maj[0] + 0.2 and all(s >= 0 for s in out["majority"]["std"])
    assert out["pass_at_n"]["mean"] == sorted(out["pass_at_n"]["mean"]) and out["pass_at_n"]["mean"][-1] > maj[-1]
    assert out["best_of_n"]["mean"][-1] > out["best_of_n"]["mean"][0]
    test = paired_test(out["per_item"]["majority"][8], out["per_item"]["majority"][1])
    assert test["delta"] > 0.2 and test["p_value"] < 0.05
    # An adversarial verifier: best-of-N falls as N grows; reported, not hidden.
    worse = curves(answers, truth, bad, resamples=6)["best_of_n"]["mean"]
    assert worse[-1] < worse[0]
    # Without a reward model: majority and pass@N only.
    assert "best_of_n" not in curves(answers, truth, None, resamples=2)
    # A policy whose samples are mostly wrong gains nothing from voting (the target can fail).
    wrong, truth2 = _samples(0.1, 120, 16, 2)
    low = curves(wrong, truth2, None, resamples=4)
    assert paired_test(low["per_item"]["majority"][8], low["per_item"]["majority"][1])["delta"] <= 0.05
    assert curves_png({"grpo": out})[:4] == b"\x89PNG"


def test_config_rejects_what_cannot_run():
    TestTimeComputeConfig().validate()
    for bad in ({"ns": (2, 4)}, {"ns": (4, 1)}, {"temperature": 0.0}, {"resamples": 0}, {"limit": 0}):
        with pytest.raises(ValueError):
            TestTimeComputeConfig(**bad).validate()


def test_report_card_section(tmp_path):
    from pipeline_assets.reports.report_card import build_report_card_json, render_report_card

    answers, truth = _samples(0.45, 40, 16, 3)
    out = curves(answers, truth, None, resamples=2)
    out["tokens_per_query"] = [5.0 * n for n in out["ns"]]
    data = {"test_time_compute": {"policies": {"grpo": out}, "target": {
        "policy": "grpo", "n": 8, "accuracy": 0.7, "accuracy_at_1": 0.45, "delta": 0.25, "ci95": [0.1, 0.4],
        "p_value": 0.001, "alpha": 0.05, "passed": True},
        "tools_vs_sampling": {"policy": "grpo", "tool_policy": "tool_use", "n_problems": 60, "samples": 16,
                              "tool_accuracy": 0.9, "majority_accuracy": 0.0, "tool_tokens_per_query": 57.0,
                              "majority_tokens_per_query": 112.0, "delta": 0.9, "ci95": [0.8, 0.97],
                              "p_value": 0.0}}}
    card = build_report_card_json(data)
    assert card["test_time_compute"]["target"]["passed"] is True
    assert "per_item" not in card["test_time_compute"]["policies"]["grpo"]
    result = render_report_card(data, tmp_path)
    markdown = (tmp_path / "report_card.md").read_text()
    assert "## Test-time compute" in markdown and "**passed**" in markdown
    assert "models/tool_use answering once with the calculator 0.9" in markdown
    assert result["sections"]["test_time_compute"] == "rendered"
    assert build_report_card_json({})["test_time_compute"] is None
