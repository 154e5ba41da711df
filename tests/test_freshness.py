"""Freshness policies: the corpus is expected as often as ``corpus_refresh`` runs, models, their evals and the
report card as often as ``retrain`` runs. Definitions only, no run: a few seconds."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from itertools import islice, pairwise

import dagster as dg
import pytest
from dagster._utils.schedules import cron_string_iterator

K = dg.AssetKey.from_user_string


@pytest.fixture(scope="module")
def defs(tmp_path_factory) -> dg.Definitions:
    from pipeline_assets.definitions import build_definitions

    root = tmp_path_factory.mktemp("freshness_root")
    return build_definitions(root=str(root), landing=str(root / "landing"), builtin_sources=False)


def _cadence(schedule: dg.ScheduleDefinition) -> timedelta:
    """The one interval between the schedule's ticks over a year (both crons are regular)."""
    start = datetime(2026, 1, 1, tzinfo=UTC).timestamp()
    ticks = islice(cron_string_iterator(start, schedule.cron_schedule, schedule.execution_timezone or "UTC"), 60)
    intervals = {b - a for a, b in pairwise(ticks)}
    assert len(intervals) == 1, f"{schedule.name}: irregular cron {schedule.cron_schedule!r}: {intervals}"
    return intervals.pop()


def _windows(spec: dg.AssetSpec) -> tuple[timedelta, timedelta]:
    policy = spec.freshness_policy
    assert isinstance(policy, dg.FreshnessPolicy) and not isinstance(policy, dg.LegacyFreshnessPolicy)
    assert policy.warn_window is not None, f"{spec.key.to_user_string()}: no warn window"
    return policy.warn_window.to_timedelta(), policy.fail_window.to_timedelta()


def test_each_group_gets_the_policy_of_the_schedule_that_refreshes_it(defs):
    expected = {"corpus": "corpus_refresh", "models": "retrain", "evals": "retrain", "reports": "retrain"}
    cadences = {name: _cadence(defs.resolve_schedule_def(name)) for name in ("corpus_refresh", "retrain")}
    assert cadences == {"corpus_refresh": timedelta(days=1), "retrain": timedelta(weeks=1)}
    seen = set()
    for spec in defs.resolve_all_asset_specs():
        key = spec.key.to_user_string()
        schedule = expected.get(spec.group_name) if key != "evals/benchmarks" else None
        if schedule is None:  # tokenizer, datasets, release, evals/benchmarks: neither schedule promises them
            assert spec.freshness_policy is None, key
            continue
        warn, fail = _windows(spec)
        cadence = cadences[schedule]
        # WARN once the run after a tick is late, FAIL once a whole tick passed without one.
        assert cadence < warn < fail == 2 * cadence, (key, warn, fail)
        seen.add(key)
    assert {"corpus/raw_documents", "corpus/duplicate_clusters", "corpus/training_mixture", "models/base",
            "models/sft", "models/quantized", "evals/sft", "evals/quantized", "reports/report_card"} <= seen


def test_policies_reach_the_asset_graph_dagster_serves(defs):
    """What the freshness daemon and the UI read: the repository's asset graph, not our specs."""
    graph = defs.get_repository_def().asset_graph
    assert graph.get(K("corpus/deduplicated_documents")).freshness_policy.fail_window.to_timedelta() == (
        timedelta(days=2))
    assert graph.get(K("reports/report_card")).freshness_policy.fail_window.to_timedelta() == timedelta(weeks=2)
    assert graph.get(K("release/model")).freshness_policy is None
    assert graph.get(K("models/sft")).legacy_freshness_policy is None
