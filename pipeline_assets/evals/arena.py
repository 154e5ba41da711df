"""evals/arena: what the arena's blind votes say, per pair of checkpoints and across all of them.

Per pair: wins, ties and "both bad"; the first model's win rate among decisive votes with a Wilson 95% CI and a
two-sided binomial p-value against 0.5 ("the new model has to win statistically": p < 0.05 and above 0.5).
Across all: Bradley-Terry strengths fitted as Chatbot Arena does (logistic regression without intercept on
+1/-1 model indicators, a tie as half a win each way), reported on the Elo scale (1000 + 400·β/ln 10). Its L2
penalty (C=1) keeps a model with only wins finite and pulls ratings from few votes toward 1000.
"""

from __future__ import annotations

import math
from itertools import combinations
from typing import Any

from pipeline_assets.evals.stats import binomial_p_value, wilson_ci

ALPHA = 0.05
ELO_BASE, ELO_SCALE = 1000.0, 400.0


def pairwise(votes: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per pair of models that met in a vote, names in sorted order ("first" is the first name)."""
    tally: dict[tuple[str, str], dict[str, int]] = {}
    for v in votes:
        a, b = v["model_a"]["name"], v["model_b"]["name"]
        first, second = sorted((a, b))
        row = tally.setdefault((first, second), {"first_wins": 0, "second_wins": 0, "ties": 0, "both_bad": 0})
        if v["choice"] in ("tie", "both_bad"):
            row["ties" if v["choice"] == "tie" else "both_bad"] += 1
        else:
            winner = a if v["choice"] == "a" else b
            row["first_wins" if winner == first else "second_wins"] += 1
    rows = []
    for (first, second), t in sorted(tally.items()):
        decisive = t["first_wins"] + t["second_wins"]
        rate = t["first_wins"] / decisive if decisive else None
        p = binomial_p_value(t["first_wins"], decisive) if decisive else None
        rows.append({"first": first, "second": second, **t, "votes": decisive + t["ties"] + t["both_bad"],
                     "decisive": decisive, "first_win_rate": rate,
                     "ci95": list(wilson_ci(t["first_wins"], decisive)) if decisive else None, "p_value": p,
                     "winner": (first if rate > 0.5 else second) if p is not None and p < ALPHA else None})
    return rows


def bradley_terry(votes: list[dict[str, Any]]) -> dict[str, float]:
    """Elo-scale ratings of every model in a vote that was not "both bad" (those rank nobody)."""
    import numpy as np
    from sklearn.linear_model import LogisticRegression

    games = [v for v in votes if v["choice"] != "both_bad"]
    names = sorted({v[f"model_{s}"]["name"] for v in games for s in ("a", "b")})
    if len(names) < 2:
        return {n: ELO_BASE for n in names}
    index = {n: i for i, n in enumerate(names)}
    rows, labels, weights = [], [], []
    for v in games:
        x = np.zeros(len(names))
        x[index[v["model_a"]["name"]]], x[index[v["model_b"]["name"]]] = 1.0, -1.0
        outcomes = [(1, 0.5), (0, 0.5)] if v["choice"] == "tie" else [(int(v["choice"] == "a"), 1.0)]
        for y, w in outcomes:  # each game also from B's side: the same likelihood, and both classes always exist
            rows += [x, -x]
            labels += [y, 1 - y]
            weights += [w / 2, w / 2]
    fit = LogisticRegression(fit_intercept=False, C=1.0).fit(np.array(rows), labels, sample_weight=weights)
    return {n: round(ELO_BASE + ELO_SCALE * float(beta) / math.log(10), 1)
            for n, beta in zip(names, fit.coef_[0], strict=True)}


def arena_report(votes: list[dict[str, Any]]) -> dict[str, Any]:
    elo, pairs = bradley_terry(votes), pairwise(votes)
    met = {(r["first"], r["second"]) for r in pairs}
    return {"votes": len(votes), "models": sorted(elo, key=lambda n: -elo[n]), "elo": elo, "pairs": pairs,
            "unmet_pairs": [list(p) for p in combinations(sorted(elo), 2) if p not in met]}
