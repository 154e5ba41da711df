"""datasets/human_preferences: arena votes (arena_votes.py) as preference pairs in datasets/preferences' format.

A vote for A or B is a pair (the winner's reply chosen, the loser's rejected); a tie, "both bad" or two identical
replies say nothing about which is better and are counted, not paired. datasets/preferences takes the pairs
beside its machine-made ones (as extra pairs: the benchmark filter and the prompt-hash split apply), so the
reward model and DPO learn from them; its summary records their share.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from pipeline_assets.model_io import assistant, user

PAIRS_FILE = "pairs.jsonl"
SOURCE = "arena"


def human_pairs(votes: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """(pairs, counts) from usable vote records, in vote order."""
    pairs, counts = [], Counter()
    for vote in votes:
        counts[vote["choice"]] += 1
        if vote["choice"] not in ("a", "b"):
            continue
        win, lose = ("a", "b") if vote["choice"] == "a" else ("b", "a")
        if vote[f"response_{win}"].strip() == vote[f"response_{lose}"].strip():
            counts["identical_replies"] += 1
            continue
        pairs.append({"id": f"human-{vote['id']}", "prompt": user(vote["prompt"]),
                      "chosen": assistant(vote[f"response_{win}"]), "rejected": assistant(vote[f"response_{lose}"]),
                      "source": SOURCE, "chosen_origin": vote[f"model_{win}"]["name"],
                      "rejected_origin": vote[f"model_{lose}"]["name"], "kind": "human", "answer": None,
                      "voted_at": vote.get("time")})
    return pairs, {"votes": len(votes), "by_choice": {c: counts[c] for c in ("a", "b", "tie", "both_bad")},
                   "identical_replies": counts["identical_replies"], "pairs": len(pairs)}
