"""The `dg` CLI (dagster-dg-cli) on this project: `[tool.dg]` in pyproject.toml points it at
``pipeline_assets.definitions``. Each command loads the definitions once (~3-5 s, no torch step runs)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DG = Path(sys.executable).parent / "dg"


@pytest.fixture
def dg(tmp_path):
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    # VIRTUAL_ENV: dg warns when the active venv is not the project's .venv; this interpreter's is the one.
    env = {**os.environ, "DAGSTER_HOME": str(home), "LLMDAG_HOME": str(tmp_path / "llmdag"),
           "VIRTUAL_ENV": sys.prefix}

    def run(*args: str, **extra_env: str) -> subprocess.CompletedProcess:
        assert DG.exists(), f"{DG} missing: pip install -e . (dagster-dg-cli)"
        return subprocess.run([str(DG), *args], cwd=ROOT, env={**env, **extra_env}, capture_output=True,
                              text=True, timeout=120)

    return run


def test_dg_check_defs_loads_the_definitions(dg):
    result = dg("check", "defs")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "All definitions loaded successfully" in result.stdout


def test_dg_check_defs_fails_when_the_definitions_do_not_load(dg):
    # definitions.py refuses an unreadable flag at import: what .ci/run's `dg check defs` must stop on.
    result = dg("check", "defs", LLMDAG_BUILTIN_SOURCES="maybe")
    assert result.returncode != 0
    assert "LLMDAG_BUILTIN_SOURCES='maybe'" in result.stdout + result.stderr


def test_dg_list_defs_json_names_the_graph(dg):
    result = dg("list", "defs", "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    listed = json.loads(result.stdout)
    assets = {a["asset_key"] for a in listed["assets"]}
    assert {"corpus/raw_documents", "corpus/duplicate_clusters", "models/sft", "evals/sft",
            "reports/report_card", "release/model"} <= assets
    assert {s["name"] for s in listed["schedules"]} == {"corpus_refresh", "retrain"}
    assert {"llmdag_automation", "sources_sensor", "landing_folders"} <= {s["name"] for s in listed["sensors"]}
    dedup = next(a for a in listed["assets"] if a["asset_key"] == "corpus/deduplicated_documents")
    assert "duplicate_clusters covers this source" in dedup["automation_condition"]["label"]
