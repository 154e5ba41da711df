"""Uncertainty for eval numbers: confidence intervals and paired tests over per-item scores. No torch.

    from pipeline_assets.evals.stats import summarize, paired_test
    summarize([1, 0, 1, 1])                   # {"value": 0.75, "n": 4, "ci95": [lo, hi]}
    paired_test(child_scores, parent_scores)  # {"delta", "ci95", "p_value", "test", "n"}

Eval sets here hold ~50 items on the tiny profile, where one item moves an accuracy by 0.02: a delta
without its uncertainty says nothing, so gates decide improvements with these paired tests. 0/1 vectors
(accuracy, refusal) get Wilson intervals and the exact McNemar test; graded scores (QA F1, win-rate ties)
get a seeded bootstrap, so the same inputs always give the same numbers.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

Z95 = 1.959963984540054  # two-sided 95% normal quantile
N_BOOT = 4000


def is_binary(values: Sequence[float]) -> bool:
    return all(v in (0, 1) for v in values)


def wilson_ci(successes: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval: unlike the normal approximation it stays inside [0, 1] at 0/n and n/n."""
    if n <= 0:
        raise ValueError(f"n={n}: a confidence interval needs at least one item")
    if not 0 <= successes <= n:
        raise ValueError(f"successes={successes} must be in [0, n={n}]")
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    # Rounded: at 0/n and n/n the bound is exactly 0 or 1, not 1e-17 off.
    return max(0.0, round(centre - half, 12)), min(1.0, round(centre + half, 12))


def _rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(seed)


def bootstrap_mean_ci(values: Sequence[float], n_boot: int = N_BOOT, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean; seeded so two report runs agree."""
    x = np.asarray(values, dtype=float)
    if x.size == 0:
        raise ValueError("bootstrap_mean_ci needs at least one value")
    idx = _rng(seed).integers(0, x.size, size=(n_boot, x.size))
    means = x[idx].mean(axis=1)
    return float(np.quantile(means, 0.025)), float(np.quantile(means, 0.975))


def mean_ci(values: Sequence[float], seed: int = 0) -> tuple[float, float]:
    """Wilson for 0/1 items, bootstrap otherwise."""
    if values and is_binary(values):
        return wilson_ci(int(sum(values)), len(values))
    return bootstrap_mean_ci(values, seed=seed)


def summarize(values: Sequence[float], seed: int = 0) -> dict[str, object]:
    """{"value": mean, "n", "ci95": [lo, hi]}; value and ci95 None for an empty set."""
    if not values:
        return {"value": None, "n": 0, "ci95": None}
    lo, hi = mean_ci(values, seed)
    return {"value": round(float(np.mean(values)), 6), "n": len(values), "ci95": [round(lo, 6), round(hi, 6)]}


def _binom_cdf(k: int, n: int, p: float = 0.5) -> float:
    return sum(math.comb(n, i) * p ** i * (1 - p) ** (n - i) for i in range(k + 1))


def binomial_p_value(successes: int, n: int, p0: float = 0.5) -> float:
    """Exact two-sided binomial test (sum of outcomes no more likely than the observed one)."""
    if n <= 0:
        return 1.0
    probs = [math.comb(n, i) * p0 ** i * (1 - p0) ** (n - i) for i in range(n + 1)]
    observed = probs[successes]
    return min(1.0, sum(q for q in probs if q <= observed * (1 + 1e-9)))


def _check_pair(a: Sequence[float], b: Sequence[float]) -> None:
    if len(a) != len(b):
        raise ValueError(f"paired vectors differ in length ({len(a)} vs {len(b)}): score the same items")
    if not a:
        raise ValueError("paired test needs at least one item")


def discordant(a: Sequence[float], b: Sequence[float]) -> tuple[int, int]:
    """(items right only in a, items right only in b) of two 0/1 vectors on the same items."""
    _check_pair(a, b)
    only_a = sum(1 for x, y in zip(a, b, strict=True) if x == 1 and y == 0)
    only_b = sum(1 for x, y in zip(a, b, strict=True) if x == 0 and y == 1)
    return only_a, only_b


def mcnemar_p_value(a: Sequence[float], b: Sequence[float]) -> float:
    """Exact (binomial) two-sided McNemar test: only the items the two disagree on carry information."""
    only_a, only_b = discordant(a, b)
    n = only_a + only_b
    if n == 0:
        return 1.0
    return min(1.0, 2 * _binom_cdf(min(only_a, only_b), n))


def paired_bootstrap(a: Sequence[float], b: Sequence[float], n_boot: int = N_BOOT,
                     seed: int = 0) -> dict[str, float | list[float]]:
    """Mean of a - b over the same items, its 95% interval and a two-sided p-value for "no difference".

    Items are resampled as pairs, so what both models find hard cancels out of the difference.
    """
    _check_pair(a, b)
    d = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    idx = _rng(seed).integers(0, d.size, size=(n_boot, d.size))
    means = d[idx].mean(axis=1)
    # Share of resamples on each side of zero; a no-op stage (d == 0 everywhere) gets p = 1.
    p = min(1.0, 2 * min(float(np.mean(means <= 0)), float(np.mean(means >= 0))))
    return {"delta": round(float(d.mean()), 6),
            "ci95": [round(float(np.quantile(means, 0.025)), 6), round(float(np.quantile(means, 0.975)), 6)],
            "p_value": round(p, 6)}


def mean_difference(a: Sequence[float], b: Sequence[float], seed: int = 0) -> dict[str, float | list[float]]:
    """{"delta": mean(a - b), "ci95": [lo, hi]} over paired items."""
    out = paired_bootstrap(a, b, seed=seed)
    return {"delta": out["delta"], "ci95": out["ci95"]}


def paired_test(a: Sequence[float], b: Sequence[float], seed: int = 0) -> dict[str, object]:
    """a vs b on the same items: exact McNemar for 0/1 vectors, paired bootstrap for graded scores."""
    boot = paired_bootstrap(a, b, seed=seed)
    binary = is_binary(a) and is_binary(b)
    p = mcnemar_p_value(a, b) if binary else boot["p_value"]
    return {"delta": boot["delta"], "ci95": boot["ci95"], "p_value": round(float(p), 6),
            "test": "mcnemar_exact" if binary else "paired_bootstrap", "n": len(a)}


def align(a_ids: Sequence[str], a_scores: Sequence[float], b_ids: Sequence[str],
          b_scores: Sequence[float]) -> tuple[list[float], list[float]]:
    """Scores of the items both runs scored, in a's order: two stages pair only on shared item ids."""
    theirs = dict(zip(b_ids, b_scores, strict=True))
    pairs = [(s, theirs[i]) for i, s in zip(a_ids, a_scores, strict=True) if i in theirs]
    return [p[0] for p in pairs], [p[1] for p in pairs]
