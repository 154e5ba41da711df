"""Where the time went: per-asset wall, CPU and memory from step events and metadata, and the critical path."""

from __future__ import annotations

import time

from pipeline_assets.reports.report_card import build_report_card_json, render_report_card
from pipeline_assets.reports.time_table import StepTime, time_table
from pipeline_assets.step_usage import step_usage

PARENTS = {"raw": [], "filtered": ["raw"], "tokenizer": ["filtered"], "base": ["tokenizer"], "sft": ["base"],
           "reward": ["sft"], "dpo": ["sft"], "grpo": ["sft"], "report": ["grpo", "dpo", "reward"]}


def _step(asset: str, start: float, end: float, partition: str | None = None, cpu: float | None = 1.0) -> StepTime:
    return StepTime(asset, partition, 1000 + start, 1000 + end, cpu, 50.0)


def test_partitions_run_side_by_side_and_the_critical_path_is_what_the_run_waited_on() -> None:
    steps = [_step("raw", 0, 10, "a"), _step("raw", 0, 30, "b"), _step("filtered", 31, 40),
             _step("tokenizer", 40, 45), _step("base", 45, 145, cpu=200.0), _step("sft", 145, 245),
             _step("reward", 245, 265), _step("dpo", 265, 300), _step("grpo", 245, 275, cpu=None)]
    t = time_table(steps, PARENTS)
    rows = {r["asset"]: r for r in t["assets"]}
    assert rows["raw"] == {"asset": "raw", "partitions": 2, "start_s": 0, "elapsed_s": 30, "step_s": 40,
                           "cpu_s": 2.0, "peak_rss_mb": 50.0}
    assert rows["grpo"]["cpu_s"] is None  # materialized without usage metadata: unknown, not zero
    # dpo finished last; back through the parent that finished last each time (raw's slower partition included)
    assert t["critical_path"] == {"assets": ["raw", "filtered", "tokenizer", "base", "sft", "dpo"],
                                  "elapsed_s": 300}
    assert t["span_s"] == 300 and t["step_s"] == 40 + 9 + 5 + 100 + 100 + 20 + 35 + 30
    assert [r["asset"] for r in t["assets"]][:2] == ["raw", "filtered"]  # in start order
    assert time_table([], PARENTS) is None


def test_the_card_renders_the_table_and_carries_it_in_json(tmp_path) -> None:
    t = time_table([_step("raw", 0, 10), _step("filtered", 10, 12)], PARENTS)
    render_report_card({"models": [], "evals": {}, "time_table": t}, tmp_path)
    md = (tmp_path / "report_card.md").read_text()
    assert "## Where the time went" in md and "**Critical path** (12 s): raw → filtered" in md
    assert build_report_card_json({"time_table": t})["time_table"] == t


def test_step_usage_measures_since_the_previous_call() -> None:
    step_usage()
    big = b"\x01" * (200 * 1024 * 1024)  # written, so resident
    t0 = time.process_time()
    while time.process_time() - t0 < 0.3:
        pass
    del big  # freed before the call: only the peak remembers it
    first = step_usage()
    second = step_usage()
    assert first["cpu_time_s"] >= 0.3 and second["cpu_time_s"] < first["cpu_time_s"]
    assert first["peak_rss_mb"] - second["peak_rss_mb"] > 150  # the peak was reset after the first call
