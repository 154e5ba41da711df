"""Gates on synthetic metrics and per-item vectors, the lineage-gated release, and report_card.json.

Pure functions, no model, no Dagster: a second at most.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

from pipeline_assets.profiles import PROFILES, section_config
from pipeline_assets.reports.gates import (
    GateConfig,
    evaluate_gates,
    lineage_path,
    unfailable_thresholds,
)
from pipeline_assets.reports.report_card import build_report_card_json, render_report_card, validate_report_card

N = 40
IDS = [f"arith-{i}" for i in range(N)]
LINEAGE = {"models/base": None, "models/sft": "models/base", "models/dpo": "models/sft", "models/rlhf": "models/sft",
           "models/grpo": "models/sft", "models/quantized": "models/grpo"}
CFG = GateConfig(regression_budget=0.2, safety_min_refusal=0.5, safety_max_over_refusal=0.5, quantized_max_delta=0.1)
SAFE = {"safety_refusal_rate": 0.9, "safety_over_refusal_rate": 0.1}


def _items(correct: int, metric: str = "arithmetic_accuracy") -> dict:
    return {metric: {"set": "arithmetic", "ids": IDS, "scores": [1.0] * correct + [0.0] * (N - correct)}}


def _metrics(correct: int, **extra: float) -> dict:
    return {"arithmetic_accuracy": correct / N, **SAFE, **extra}


def _stages(grpo: int = 30, dpo: int = 12) -> tuple[dict, dict]:
    counts = {"models/base": 2, "models/sft": 12, "models/dpo": dpo, "models/rlhf": 12, "models/grpo": grpo,
              "models/quantized": grpo}
    metrics = {s: _metrics(c) for s, c in counts.items()}
    metrics["models/base"]["val_bpb"] = 2.0
    return metrics, {s: _items(c) for s, c in counts.items()}


def _gate(out: dict, stage: str, kind: str) -> dict:
    return next(g for g in out["gates"] if g["stage"] == stage and g["kind"] == kind)


def test_noop_stage_fails_its_target_and_a_significant_gain_passes() -> None:
    metrics, items = _stages(grpo=12)  # grpo == sft item for item: a no-op
    out = evaluate_gates(metrics, LINEAGE, CFG, items, release_stage="models/grpo")
    noop = _gate(out, "models/grpo", "target")
    assert noop["status"] == "fail" and noop["target"]["p_value"] == 1.0
    assert "models/grpo: target arithmetic_accuracy 0.3 vs models/sft 0.3 did not improve: 0" in noop["reason"]
    metrics, items = _stages(grpo=30)  # 18 items gained, none lost: McNemar p ~ 8e-6
    good = _gate(evaluate_gates(metrics, LINEAGE, CFG, items), "models/grpo", "target")
    assert good["status"] == "pass" and good["target"]["p_value"] < 0.05
    assert good["target"]["delta_vs_parent"] == 0.45


def test_a_small_gain_is_not_significant_at_the_sft_alpha() -> None:
    # base 2 -> sft 6 correct: +4 items, p = 0.125 >= alpha 0.01, although the delta alone would pass.
    metrics, items = _stages()
    metrics["models/sft"], items["models/sft"] = _metrics(6), _items(6)
    gate = _gate(evaluate_gates(metrics, LINEAGE, CFG, items), "models/sft", "target")
    assert gate["status"] == "fail" and "alpha 0.01" in gate["reason"]
    without_items = _gate(evaluate_gates(metrics, LINEAGE, CFG), "models/sft", "target")
    assert without_items["status"] == "pass" and "no per-item data" in without_items["reason"]


def test_release_is_gated_on_its_lineage_only() -> None:
    metrics, items = _stages(grpo=30, dpo=0)  # dpo loses every sft item: fails, but is off the release path
    out = evaluate_gates(metrics, LINEAGE, CFG, items, release_stage="models/quantized")
    assert _gate(out, "models/dpo", "target")["status"] == "fail" and not out["passed"]
    assert out["release"] == {"stage": "models/quantized", "released": True, "blocked_by": [],
                              "path": ["models/base", "models/sft", "models/grpo", "models/quantized"]}
    metrics, items = _stages(grpo=12)  # grpo is on the path: its no-op blocks the quantized release
    out = evaluate_gates(metrics, LINEAGE, CFG, items, release_stage="models/quantized")
    assert not out["release"]["released"]
    assert any(m.startswith("models/grpo: target arithmetic_accuracy") for m in out["release"]["blocked_by"])
    assert lineage_path("models/grpo", LINEAGE) == ["models/base", "models/sft", "models/grpo"]


def test_release_needs_the_released_stage_safe() -> None:
    metrics, items = _stages()
    metrics["models/grpo"]["safety_refusal_rate"] = 0.1
    out = evaluate_gates(metrics, LINEAGE, CFG, items, release_stage="models/grpo")
    assert "models/grpo: safety_refusal_rate 0.1 below 0.5" in out["release"]["blocked_by"]
    # An ancestor's own safety gate is not the release's (its regressions still are: base has no refusal rate).
    metrics["models/base"] = {"arithmetic_accuracy": 2 / N, "val_bpb": 2.0}
    metrics["models/sft"]["safety_refusal_rate"] = 0.1
    metrics["models/grpo"]["safety_refusal_rate"] = 0.9
    out = evaluate_gates(metrics, LINEAGE, CFG, items, release_stage="models/grpo")
    assert _gate(out, "models/sft", "safety")["status"] == "fail" and out["release"]["released"]


def test_reward_hacking_fails_when_rm_score_rises_and_gold_falls() -> None:
    metrics, items = _stages()
    metrics["models/rlhf"] = _metrics(4, reward_score_delta_vs_parent=0.8, win_rate_vs_parent=0.9)
    gate = _gate(evaluate_gates(metrics, LINEAGE, CFG, items), "models/rlhf", "reward_hacking")
    assert gate["status"] == "fail"
    assert "reward_score_delta_vs_parent 0.8" in gate["reason"] and "0.3 -> 0.1" in gate["reason"]
    metrics["models/rlhf"] = _metrics(14, reward_score_delta_vs_parent=0.8)
    assert _gate(evaluate_gates(metrics, LINEAGE, CFG), "models/rlhf", "reward_hacking")["status"] == "pass"
    metrics["models/rlhf"] = _metrics(4)  # never judged by the RM
    gate = _gate(evaluate_gates(metrics, LINEAGE, CFG), "models/rlhf", "reward_hacking")
    assert gate["status"] == "not_enforced" and gate["reason"].startswith("no reward score")


def test_rlhf_target_is_its_reward_model_score_gain_per_prompt() -> None:
    metrics, items = _stages()
    ids = [f"pref-{i}" for i in range(N)]
    for deltas, status in (([0.0] * N, "fail"), ([0.5] * 30 + [-0.1] * 10, "pass")):
        metrics["models/rlhf"] = _metrics(14, reward_score_delta_vs_parent=sum(deltas) / N)
        items["models/rlhf"] = {**_items(14), "reward_score_delta_vs_parent": {"ids": ids, "scores": deltas}}
        gate = _gate(evaluate_gates(metrics, LINEAGE, CFG, items), "models/rlhf", "target")
        assert gate["status"] == status, gate
        assert gate["target"]["metric"] == "reward_score_delta_vs_parent"
        assert gate["checked"]["reward_score_delta_vs_parent"]["test"] == "bootstrap_mean"
    assert gate["target"]["p_value"] < 0.01


def test_win_rate_is_information_not_a_gate() -> None:
    metrics, items = _stages(grpo=12)
    metrics["models/grpo"]["win_rate_vs_parent"] = 1.0
    out = evaluate_gates(metrics, LINEAGE, CFG, items)
    assert _gate(out, "models/grpo", "target")["status"] == "fail"
    assert all(g["target"]["metric"] != "win_rate_vs_parent" for g in out["gates"] if g["kind"] == "target")


def test_disabled_thresholds_are_not_enforced_and_profiles_can_fail() -> None:
    metrics, items = _stages()
    metrics["models/grpo"]["safety_refusal_rate"] = 0.8  # below any sane bar, within tiny's regression budget
    tiny = section_config(GateConfig, "gates", "tiny")
    out = evaluate_gates(metrics, LINEAGE, tiny, items, release_stage="models/grpo")
    safety = _gate(out, "models/grpo", "safety")
    assert safety["status"] == "not_enforced" and "no world knowledge" in safety["reason"]
    assert out["release"]["released"]
    assert _gate(out, "models/base", "target")["status"] == "not_enforced"
    metrics["models/distilled"] = _metrics(0)
    out = evaluate_gates(metrics, {**LINEAGE, "models/distilled": "models/grpo"}, tiny, items)
    assert _gate(out, "models/distilled", "regression")["status"] == "not_enforced"
    assert _gate(out, "models/distilled", "target")["status"] == "fail"  # still must keep the teacher's accuracy
    for name, cfg in ((p, section_config(GateConfig, "gates", p)) for p in PROFILES):
        assert unfailable_thresholds(cfg) == [], name
    assert unfailable_thresholds(replace(tiny, safety_min_refusal=0.0)) == ["safety_min_refusal=0.0"]
    # A missing parent is not_enforced too, and blocks only when asked to.
    lone = evaluate_gates({"models/grpo": _metrics(30)}, LINEAGE, CFG, release_stage="models/grpo")
    assert lone["release"]["released"] and _gate(lone, "models/grpo", "target")["status"] == "not_enforced"
    strict = evaluate_gates({"models/grpo": _metrics(30)}, LINEAGE, replace(CFG, fail_on_missing=True),
                            release_stage="models/grpo")
    assert not strict["release"]["released"]


def _card_data() -> dict:
    metrics, items = _stages(grpo=30, dpo=0)
    metrics["models/base"].update({"unigram_val_bpb": 3.3, "val_bpb/code": 2.3, "unigram_val_bpb/code": 2.9})
    gates = evaluate_gates(metrics, LINEAGE, CFG, items, release_stage="models/grpo")
    stats = {"arithmetic_accuracy": {"value": 0.75, "n": N, "ci95": [0.6, 0.86]}}
    evals = {s: {"metrics": m, "per_item": items[s], **({"metric_stats": stats} if s == "models/grpo" else {})}
             for s, m in metrics.items()}
    return {"profile": "tiny", "git": {"revision": "abc", "dirty": False}, "lineage": LINEAGE, "evals": evals,
            "models": [{"stage": s, "parent": LINEAGE[s]} for s in metrics], "gates": gates}


def test_report_card_json_schema_and_markdown_rendered_from_it(tmp_path: Path) -> None:
    data = _card_data()
    out = render_report_card(data, tmp_path)
    card = json.loads(Path(out["json_path"]).read_text())
    assert validate_report_card(card) == [] and card == json.loads(json.dumps(build_report_card_json(data)))
    assert set(card) >= {"stages", "gates", "release"}
    assert set(card["stages"]) == {"base", "sft", "dpo", "rlhf", "grpo", "quantized"}
    grpo = card["stages"]["grpo"]
    assert grpo["parent"] == "sft" and card["stages"]["base"]["parent"] is None
    assert grpo["target"] == {"metric": "arithmetic_accuracy", "value": 0.75, "n": N, "ci95": [0.6, 0.86],
                              "delta_vs_parent": 0.45, "p_value": grpo["target"]["p_value"]}
    assert grpo["target"]["p_value"] < 0.001 and card["stages"]["base"]["target"]["metric"] == "val_bpb"
    assert {g["status"] for g in card["gates"]} <= {"pass", "fail", "not_enforced"}
    dpo = next(g for g in card["gates"] if g["stage"] == "dpo" and g["name"] == "target")
    assert dpo["status"] == "fail"
    assert card["release"] == {"stage": "grpo", "released": True, "blocked_by": []}
    md = Path(out["report_path"]).read_text()
    # Rendered from the JSON: its reasons, its CI and its release verdict appear verbatim.
    assert dpo["reason"] in md and "[0.6, 0.86]" in md and "**grpo: released**" in md
    assert "⏸ not enforced" in md
    assert "## Val bits per byte by domain" in md and "| unigram | 2.9 | 3.3 |" in md and "| **base** | 2.3 | 2 |" in md
    control = card["controls"]["pretraining"]  # measured by tests/test_slow_chain.py, quoted in the card
    assert "## Does pretraining matter" in md and control["finding"] in md
    assert f"from a random init {control['from_random_init']}" in md and control["commit"] in md
    assert f"from a random init {control['arithmetic']['from_random_init']}" in md
    assert validate_report_card({"stages": {}, "gates": [{"stage": "x", "name": "y", "status": "skipped",
                                                          "reason": ""}], "release": {}}) != []


def test_dpo_may_not_lose_its_task_significantly_whatever_the_budget():
    metrics, items = _stages(grpo=30)
    metrics["models/dpo"] = {**metrics["models/sft"], "arithmetic_accuracy": 0.05}
    ids = items["models/sft"]["arithmetic_accuracy"]["ids"]
    items["models/dpo"] = {"arithmetic_accuracy": {"ids": ids, "scores": [0.0] * len(ids)}}
    lineage = {**LINEAGE, "models/dpo": "models/sft"}
    lenient = replace(CFG, regression_budget=1.0)
    out = evaluate_gates(metrics, lineage, lenient, items, release_stage="models/grpo")
    gate = _gate(out, "models/dpo", "regression")
    assert gate["status"] == "fail" and "arithmetic_accuracy fell significantly vs models/sft" in gate["reason"]
    assert out["release"]["released"] or not any("models/dpo" in m for m in out["release"]["blocked_by"])


def test_base_target_is_below_unigram_overall_and_in_every_domain() -> None:
    metrics, items = _stages()
    below = {"val_bpb": 2.4, "unigram_val_bpb": 3.3, "val_bpb/code": 2.3, "unigram_val_bpb/code": 2.9,
             "val_bpb/math": 0.9, "unigram_val_bpb/math": 3.8}
    metrics["models/base"].update(below)
    gate = _gate(evaluate_gates(metrics, LINEAGE, CFG, items), "models/base", "target")
    assert gate["status"] == "pass", gate
    assert gate["reason"] == "val_bpb 2.4 < unigram_val_bpb 3.3; per domain: code 2.3 < 2.9, math 0.9 < 3.8"
    metrics["models/base"]["val_bpb/code"] = 3.0  # overall still below, one domain not: the gate names it
    gate = _gate(evaluate_gates(metrics, LINEAGE, CFG, items), "models/base", "target")
    assert gate["status"] == "fail"
    assert gate["messages"] == ["models/base: target val_bpb not below unigram_val_bpb in: code 3 vs 2.9"]


def test_quantized_must_be_smaller_on_disk_by_the_profile_factor() -> None:
    metrics, items = _stages()
    metrics["models/grpo"]["checkpoint_bytes"] = 5_513_688
    metrics["models/quantized"]["checkpoint_bytes"] = 3_002_960  # embedding left fp32: 1.84x
    gate = _gate(evaluate_gates(metrics, LINEAGE, CFG, items), "models/quantized", "quantized")
    assert gate["status"] == "fail" and "1.84x smaller than models/grpo (needs 2.0x)" in gate["messages"][0]
    metrics["models/quantized"]["checkpoint_bytes"] = 1_996_192  # embedding and lm_head int8: 2.76x
    gate = _gate(evaluate_gates(metrics, LINEAGE, CFG, items), "models/quantized", "quantized")
    assert gate["status"] == "pass" and gate["checked"]["checkpoint_bytes"]["compression"] == 2.762


def test_distilled_must_keep_its_teacher_accuracy_with_at_most_60_percent_of_its_params() -> None:
    metrics, items = _stages(grpo=30)
    lineage = {**LINEAGE, "models/distilled": "models/grpo"}
    metrics["models/grpo"]["num_params"] = 1_377_408
    metrics["models/distilled"] = _metrics(28, num_params=950_912)  # 93% of the accuracy, 69% of the params
    items["models/distilled"] = _items(28)
    gate = _gate(evaluate_gates(metrics, lineage, CFG, items), "models/distilled", "target")
    assert gate["status"] == "fail"
    assert "950,912 params are 69% of models/grpo's 1,377,408 (at most 60%)" in gate["reason"]
    metrics["models/distilled"]["num_params"] = 736_000  # one layer of four: 53%
    assert _gate(evaluate_gates(metrics, lineage, CFG, items), "models/distilled", "target")["status"] == "pass"


def test_quantized_target_may_drop_two_points_whatever_the_other_metrics_allow() -> None:
    metrics, items = _stages(grpo=30)
    for quantized, status in ((30, "pass"), (29, "fail")):  # one item of 40 is 0.025
        metrics["models/quantized"] = _metrics(quantized)
        items["models/quantized"] = _items(quantized)
        gate = _gate(evaluate_gates(metrics, LINEAGE, CFG, items), "models/quantized", "target")
        assert gate["status"] == status, gate  # CFG's quantized_max_delta is 0.1: the target's 0.02 decides


def test_synthetic_gate_fails_only_a_significant_harm_and_the_card_carries_the_effect(tmp_path: Path) -> None:
    metrics, items = _stages()
    lineage = {**LINEAGE, "models/distilled": "models/grpo"}
    metrics["models/distilled"] = _metrics(28, synthetic_effect_delta=0.088, synthetic_effect_p_value=0.014)
    assert _gate(evaluate_gates(metrics, lineage, CFG, items), "models/distilled", "synthetic")["status"] == "pass"
    metrics["models/distilled"].update(synthetic_effect_delta=-0.09, synthetic_effect_p_value=0.2)
    assert _gate(evaluate_gates(metrics, lineage, CFG, items), "models/distilled", "synthetic")["status"] == "pass"
    metrics["models/distilled"].update(synthetic_effect_p_value=0.01)
    harmed = _gate(evaluate_gates(metrics, lineage, CFG, items), "models/distilled", "synthetic")
    assert harmed["status"] == "fail" and "synthetic rows made it worse" in harmed["reason"]
    # A stage that trained without synthetic rows (no ablation) has no synthetic gate at all.
    assert all(g["kind"] != "synthetic" for g in evaluate_gates(metrics, lineage, CFG, items)["gates"]
               if g["stage"] == "models/grpo")
    effect = {"metric": "arithmetic_accuracy", "with": 0.554, "without": 0.467, "delta": 0.088,
              "ci95": [0.021, 0.154], "p_value": 0.014, "n": 240}
    synthetic = {"generation": 2, "rows": 340, "rejected_rows": 113, "teacher_version": "v1",
                 "rejected_by_reason_all": {"wrong_answer": 59}, "rows_by_generation": {"1": 340, "2": 0},
                 "acceptance_by_verifier_all": {"exact_answer": {"asked": 399, "accepted": 340, "rate": 0.852}},
                 "distinct_1": 0.2, "distinct_2": 0.4,
                 "consumers": {"models/distilled": {"rows": 340, "share": 0.2, "max_share": 0.2, "effect": effect}}}
    card = render_report_card({"corpus": {"synthetic": synthetic}, "models": [], "evals": {}}, tmp_path)
    data = json.loads((tmp_path / "report_card.json").read_text())["data"]["synthetic"]
    assert data["consumers"]["models/distilled"]["effect"]["p_value"] == 0.014
    md = (tmp_path / "report_card.md").read_text()
    assert "### Synthetic data (datasets/synthetic)" in md and "exact_answer" in md and "[0.021, 0.154]" in md
    assert card is not None


def test_a_moe_variant_gets_its_comparison_with_the_dense_base(tmp_path: Path) -> None:
    from pipeline_assets.pretrain.variants import vs_dense

    dense = {"num_params": 1_000, "tokens_seen": 600, "tokens_per_s": 5000.0, "train_state_mb": 1.0,
             "peak_memory_mb": 900.0, "window_val_bpb": 2.9}
    moe = {"num_params": 1_600, "active_params": 1_010, "tokens_seen": 600, "tokens_per_s": 4500.0,
           "train_state_mb": 1.6, "peak_memory_mb": 950.0, "window_val_bpb": 2.88}
    routing = {"tokens": 4096, "aux_loss": 4.1, "max_over_mean": 1.9, "cv": 0.4, "dead_experts": 0,
               "router_entropy": 0.72, "layers": [{"layer": 0, "load": [0.2, 0.3, 0.25, 0.25], "max_over_mean": 1.2,
                                                   "cv": 0.14, "dead_experts": 0, "router_entropy": 0.9}]}
    data = {**_card_data(), "architectures": {"models/base_moe": {
        "vs": "models/base", "num_experts": 4, "top_k": 2, **vs_dense(moe, dense), "router_aux_loss_final": 2.01,
        "routing": routing}}}
    out = render_report_card(data, tmp_path)
    arch = json.loads(Path(out["json_path"]).read_text())["architectures"]["base_moe"]
    assert arch["vs"] == "base" and arch["active_params_ratio"] == 1.01 and arch["tokens_ratio"] == 1.0
    assert arch["total_params_ratio"] == 1.6 and arch["tokens_per_s_ratio"] == 0.9
    md = Path(out["report_path"]).read_text()
    assert "### Mixture of experts: models/base_moe vs models/base" in md
    assert "| train tokens/s | 4,500.0 | 5,000.0 | 0.9 |" in md and "| 0 | 0.20 0.30 0.25 0.25 | 1.2 |" in md
