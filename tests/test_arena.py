"""The arena round trip: blind pairs and votes on ``llmdag serve``'s /arena (a scripted voter in Chromium), the
append-only votes file, datasets/human_preferences and evals/arena materialized from it, the report card's table.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import dagster as dg
import httpx
import pytest
from served_model import CFG, taught_checkpoint

from pipeline_assets.arena_votes import append_vote, read_votes, votes_path
from pipeline_assets.evals.arena import arena_report, bradley_terry, pairwise
from pipeline_assets.posttrain.human_preferences import human_pairs
from pipeline_assets.reports.report_card import _arena_json, _section_arena
from pipeline_assets.serving.running import RunningServer
from pipeline_assets.serving.server import ServedModel

REPO = Path(__file__).resolve().parents[1]
ARTIFACTS = Path(os.environ.get("LLMDAG_TEST_ARTIFACTS", REPO / "test-artifacts")) / "serve"
QUESTION, ANSWER = "What is 23 + 41?", "64"


def vote(choice: str, a: str = "new", b: str = "old", prompt: str = "p", ra: str = "x", rb: str = "y") -> dict:
    return {"id": f"v{abs(hash((choice, a, b, prompt, ra, rb)))}", "time": "2026-12-07T00:00:00+00:00",
            "prompt": prompt, "choice": choice, "model_a": {"name": a, "path": f"/m/{a}", "version": "1"},
            "model_b": {"name": b, "path": f"/m/{b}", "version": "1"}, "response_a": ra, "response_b": rb}


def test_votes_file_appends_and_quarantines_what_it_cannot_use(tmp_path):
    path = votes_path(tmp_path)
    append_vote(path, vote("a"))
    append_vote(path, vote("tie", prompt="q"))
    with pytest.raises(ValueError, match="choice"):
        append_vote(path, {**vote("a"), "choice": "maybe"})
    with path.open("ab") as f:  # a torn last line (power loss mid-write) and a hand edit
        f.write(b'{"choice": "b", "model_a": {"name": "x"}}\n{"prompt": "p", "cho')
    votes = read_votes(path)
    assert [v["choice"] for v in votes.records] == ["a", "tie"]
    assert len(votes.quarantined) == 2 and "line 3: response_a must be a string" in votes.quarantined[0]
    assert read_votes(tmp_path / "none.jsonl").records == []


def test_decisive_votes_become_pairs_in_the_preferences_format():
    pairs, counts = human_pairs([vote("a", ra="good", rb="bad"), vote("b", ra="bad", rb="good", prompt="q"),
                                 vote("tie"), vote("both_bad"), vote("a", ra="same", rb="same", prompt="r")])
    assert counts == {"votes": 5, "by_choice": {"a": 2, "b": 1, "tie": 1, "both_bad": 1}, "identical_replies": 1,
                      "pairs": 2}
    assert [(p["chosen"][0]["content"], p["rejected"][0]["content"]) for p in pairs] == [("good", "bad")] * 2
    assert pairs[1]["chosen_origin"] == "old" and pairs[1]["rejected_origin"] == "new"
    assert pairs[0]["prompt"] == [{"role": "user", "content": "p"}] and pairs[0]["source"] == "arena"


def test_win_rates_and_bradley_terry():
    votes = [vote("a")] * 9 + [vote("b")] + [vote("tie")] * 2 + [vote("both_bad")]
    (row,) = pairwise(votes)
    assert (row["first"], row["second"], row["first_wins"], row["second_wins"]) == ("new", "old", 9, 1)
    assert row["first_win_rate"] == 0.9 and round(row["p_value"], 4) == 0.0215 and row["winner"] == "new"
    assert row["ci95"][0] > 0.5 and row["votes"] == 13
    assert pairwise(votes[8:10] + votes[-1:])[0]["winner"] is None  # 1-1: nobody wins yet
    elo = bradley_terry(votes)
    assert elo["new"] > 1000 > elo["old"] and round(elo["new"] + elo["old"]) == 2000
    # three models: the ordering follows the wins, a model that never played a decisive game is not rated
    three = votes + [vote("a", a="old", b="third")] * 5
    ratings = arena_report(three)
    assert ratings["models"] == ["new", "old", "third"] and ratings["unmet_pairs"] == [["new", "third"]]
    assert bradley_terry([vote("both_bad")]) == {}


@pytest.fixture(scope="module")
def arena_server(tmp_path_factory):
    base = tmp_path_factory.mktemp("arena")
    models = [ServedModel("taught", taught_checkpoint(base / "taught")),
              ServedModel("untrained", taught_checkpoint(base / "untrained", steps=0))]
    root = base / "root"
    with RunningServer(models, CFG, votes=votes_path(root), arena_prompts=[QUESTION], seed=0) as url:
        yield url, root


def test_arena_refuses_what_it_cannot_do(arena_server):
    url, _ = arena_server
    pair = httpx.post(f"{url}/arena/pair", json={}).json()  # no prompt typed: one of the held-out ones
    assert pair["prompt"] == QUESTION and set(pair) == {"pair_id", "prompt", "response_a", "response_b"}
    assert httpx.post(f"{url}/arena/vote", json={"pair_id": pair["pair_id"], "choice": "maybe"}).status_code == 400
    assert httpx.post(f"{url}/arena/vote", json={"pair_id": pair["pair_id"], "choice": "tie"}).status_code == 200
    again = httpx.post(f"{url}/arena/vote", json={"pair_id": pair["pair_id"], "choice": "a"})
    assert again.status_code == 404 and "already recorded" in again.json()["error"]["message"]
    assert httpx.post(f"{url}/arena/pair", json={"prompt": 3}).status_code == 400


def test_one_model_has_no_arena(tmp_path):
    model = ServedModel("taught", taught_checkpoint(tmp_path / "taught", steps=1))
    with RunningServer([model], CFG, votes=votes_path(tmp_path)) as url:
        refused = httpx.post(f"{url}/arena/pair", json={"prompt": "hi"})
    assert refused.status_code == 409 and "llmdag serve grpo sft" in refused.json()["error"]["message"]


def test_scripted_voter_round_trip_to_pairs_elo_and_report_card(arena_server, tmp_path):
    from test_ui import CHROMIUM_ARGS

    from pipeline_assets.definitions import build_definitions

    sync_playwright = pytest.importorskip("playwright.sync_api").sync_playwright
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.fail("Chromium is not installed: sudo apt-get install -y chromium")
    url, root = arena_server
    before = len(read_votes(votes_path(root)).records)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, headless=True, args=CHROMIUM_ARGS)
        page = browser.new_page()
        page.goto(f"{url}/arena")
        for i in range(6):  # a voter who knows the answer: picks the side that says 64
            page.fill("#prompt", QUESTION)
            page.click("#new")
            page.wait_for_function("document.querySelector('#response-a').textContent.length > 0 && "
                                   "!document.querySelector('#votes button').disabled")
            assert page.inner_text("#reveal") == ""  # names hidden until the vote
            side = "a" if page.inner_text("#response-a") == ANSWER else "b"
            assert page.inner_text(f"#response-{'b' if side == 'a' else 'a'}") != ANSWER
            if i == 0:
                page.screenshot(path=ARTIFACTS / "arena.png")
            page.click(f"#votes button[data-choice='{side}']")
            page.wait_for_function("document.querySelector('#reveal').textContent.includes('Vote recorded')")
            assert "taught" in page.inner_text("#reveal") and "untrained" in page.inner_text("#reveal")
        page.screenshot(path=ARTIFACTS / "arena_voted.png")
        browser.close()
    votes = read_votes(votes_path(root)).records[before:]
    assert len(votes) == 6 and all(v["prompt"] == QUESTION for v in votes)
    winners = [v[f"model_{v['choice']}"]["name"] for v in votes]
    assert winners == ["taught"] * 6 and all(v["model_a"]["version"] for v in votes)

    defs = build_definitions(root=str(root), landing=str(tmp_path / "landing"), builtin_sources=False)
    with dg.instance_for_test() as instance:
        result = dg.materialize(list(defs.assets), instance=instance, resources=defs.resources,
                                selection=dg.AssetSelection.from_string('key:"datasets/human_preferences" or '
                                                                        'key:"evals/arena"'))
        assert result.success
    current = root / "datasets" / "human_preferences" / "_" / "tiny" / "current"
    pairs = [json.loads(line) for line in (current / "pairs.jsonl").read_text().splitlines()]
    decisive = sum(v["choice"] in ("a", "b") for v in read_votes(votes_path(root)).records)
    assert len(pairs) == decisive >= 6  # ties (the refusals test casts one) make no pair
    assert all(p["chosen"][0]["content"] == ANSWER and p["chosen_origin"] == "taught" for p in pairs)
    report = json.loads((root / "evals" / "arena" / "_" / "tiny" / "current" / "summary.json").read_text())
    assert report["models"] == ["taught", "untrained"] and report["elo"]["taught"] > report["elo"]["untrained"]
    (row,) = report["pairs"]
    assert (row["first_wins"], row["second_wins"]) == (6, 0) and row["winner"] == "taught"
    card = _arena_json(report)
    assert card["votes"] == len(votes) + before and "| taught |" in _section_arena(card)
