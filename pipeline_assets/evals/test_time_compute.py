"""Test-time compute: accuracy vs the number of sampled answers N, per selection rule, on the held-out arithmetic.

Each policy samples `max(ns)` answers per test problem once; every N < max(ns) is read from random subsets of
those samples (`resamples` of them, whose spread is the seed spread the report card plots). Per N:
    majority        the most frequent final number (self-consistency; ties: the earliest sampled)
    best_of_n       the sample the reward model scores highest
    weighted        the answer whose samples' rewards sum highest (search-and-learn's weighted best-of-N)
    pass_at_n       some sample is right: the unbiased estimator 1 - C(n-c, N) / C(n, N) over all n samples
                    (the oracle ceiling a perfect verifier would reach)
and the tokens generated per query (N x the mean sampled length). With an imperfect reward model best-of-N can
fall as N grows; it is reported as measured. The target: majority at N=8 beats N=1, paired over problems (each
problem's expected correctness over the resamples), p < 0.05.

Plain functions; the `evals/test_time_compute` asset (evals/assets.py) calls `evaluate_test_time_compute`.
"""

from __future__ import annotations

import random
import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from math import comb
from typing import Any

from pipeline_assets.tasks.arithmetic import NUMBER_PATTERN

NS: tuple[int, ...] = (1, 2, 4, 8, 16)
RULES: tuple[str, ...] = ("majority", "best_of_n", "weighted")
TARGET_N = 8
_NUMBER = re.compile(NUMBER_PATTERN)


@dataclass(frozen=True)
class TestTimeComputeConfig:
    """Used by: evals/test_time_compute. Defaults = the tiny profile (CPU)."""

    __test__ = False  # not a pytest class, whatever its name

    ns: tuple[int, ...] = NS
    limit: int | None = None  # held-out arithmetic problems (None: the whole test split)
    temperature: float = 1.0  # the sampling the policies were trained with (GRPO samples at 1.0)
    max_new_tokens: int = 8  # "-123" + eos is 5 tokens
    resamples: int = 8  # random subsets per N: the spread reported beside each mean
    alpha: float = 0.05  # the majority@8 vs @1 test
    tools_limit: int = 60  # 3-digit products for tool use at N=1 vs majority at max(ns) (where models/tool_use is)
    batch_size: int = 64
    seed: int = 0
    device: str = "auto"
    num_threads: int | None = None

    def validate(self) -> None:
        if not self.ns or 1 not in self.ns or any(n < 1 for n in self.ns) or list(self.ns) != sorted(set(self.ns)):
            raise ValueError(f"TestTimeComputeConfig.ns={self.ns!r}: increasing distinct Ns >= 1, 1 included")
        if self.temperature <= 0:
            raise ValueError(f"TestTimeComputeConfig.temperature={self.temperature}: sampling needs > 0")
        for name in ("max_new_tokens", "resamples", "batch_size", "tools_limit"):
            if getattr(self, name) < 1:
                raise ValueError(f"TestTimeComputeConfig.{name}={getattr(self, name)} must be >= 1")
        if self.limit is not None and self.limit < 1:
            raise ValueError(f"TestTimeComputeConfig.limit={self.limit} must be >= 1 or None")
        if not 0 < self.alpha <= 1:
            raise ValueError(f"TestTimeComputeConfig.alpha={self.alpha} must be in (0, 1]")


def final_answer(text: str) -> str | None:
    """The canonical answer of a completion: its last number (as check_arithmetic grades), or None."""
    numbers = _NUMBER.findall(text.replace("\u2212", "-"))
    if not numbers:
        return None
    last = numbers[-1].replace(",", "")
    value = float(last)
    return str(int(value)) if value.is_integer() else last


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from n samples of which c are right (Chen et al. 2021)."""
    return 1.0 if n - c < k else 1.0 - comb(n - c, k) / comb(n, k)


def select(rule: str, answers: Sequence[str | None], rewards: Sequence[float] | None) -> str | None:
    """The answer `rule` picks from one problem's sampled `answers` (None: no number in that sample)."""
    if rule == "majority":
        counts = Counter(a for a in answers if a is not None)
        return max(counts, key=lambda a: (counts[a], -answers.index(a))) if counts else None
    if rewards is None:
        raise ValueError(f"rule {rule!r} needs reward-model scores")
    if rule == "best_of_n":
        return answers[max(range(len(answers)), key=lambda i: rewards[i])]
    if rule == "weighted":
        totals: dict[str, float] = {}
        for a, r in zip(answers, rewards, strict=True):
            if a is not None:
                totals[a] = totals.get(a, 0.0) + r
        return max(totals, key=totals.__getitem__) if totals else None
    raise ValueError(f"unknown selection rule {rule!r}; valid: {', '.join(RULES)}")


def curves(answers: Sequence[Sequence[str | None]], truth: Sequence[str], rewards: Sequence[Sequence[float]] | None,
           ns: Sequence[int] = NS, resamples: int = 8, seed: int = 0) -> dict[str, Any]:
    """Accuracy vs N for every rule (mean and std over `resamples` random subsets of each problem's samples),
    pass@N, and per problem the expected correctness of each rule at each N (for paired tests)."""
    n_samples = len(answers[0])
    if any(len(a) != n_samples for a in answers) or max(ns) > n_samples:
        raise ValueError(f"every problem needs the same number of samples >= max(ns)={max(ns)}")
    rules = [r for r in RULES if rewards is not None or r == "majority"]
    rng = random.Random(seed)
    per_item: dict[str, dict[int, list[float]]] = {r: {n: [0.0] * len(truth) for n in ns} for r in rules}
    by_resample: dict[str, dict[int, list[float]]] = {r: {n: [] for n in ns} for r in rules}
    for _ in range(resamples):
        picks = {n: [rng.sample(range(n_samples), n) for _ in truth] for n in ns}
        for rule in rules:
            for n in ns:
                hits = [float(select(rule, [answers[i][j] for j in idx],
                                     [rewards[i][j] for j in idx] if rewards is not None else None) == truth[i])
                        for i, idx in enumerate(picks[n])]
                by_resample[rule][n].append(sum(hits) / len(hits))
                for i, h in enumerate(hits):
                    per_item[rule][n][i] += h / resamples
    correct = [sum(a == t for a in row) for row, t in zip(answers, truth, strict=True)]
    out: dict[str, Any] = {"ns": list(ns), "n_problems": len(truth), "samples_per_problem": n_samples,
                           "resamples": resamples, "per_item": per_item}
    for rule in rules:
        out[rule] = {"mean": [round(_mean(by_resample[rule][n]), 4) for n in ns],
                     "std": [round(_std(by_resample[rule][n]), 4) for n in ns]}
    out["pass_at_n"] = {"mean": [round(_mean([pass_at_k(n_samples, c, n) for c in correct]), 4) for n in ns],
                        "std": [0.0] * len(ns)}  # an exact expectation over subsets: no resampling spread
    return out


def _mean(xs: Sequence[float]) -> float:
    return sum(xs) / len(xs) if xs else 0.0


def _std(xs: Sequence[float]) -> float:
    m = _mean(xs)
    return (sum((x - m) ** 2 for x in xs) / (len(xs) - 1)) ** 0.5 if len(xs) > 1 else 0.0


def sample_replies(model: Any, tok: Any, prompts: Sequence[str], n: int, temperature: float, max_new_tokens: int,
                   batch_size: int, seed: int) -> tuple[list[str], list[int]]:
    """`n` sampled chat replies per prompt (prompt-major) and the tokens each generated, its eos included."""
    import torch

    from pipeline_assets.model_io import chat_texts, cut_at_eos, generate_ids

    torch.manual_seed(seed)
    rows = generate_ids(model, tok, [t for t in chat_texts(tok, prompts) for _ in range(n)], max_new_tokens,
                        do_sample=True, temperature=temperature, batch_size=batch_size)
    cut = [cut_at_eos(tok, row) for row in rows]
    return [tok.decode(ids, skip_special_tokens=True).strip() for ids, _ in cut], [len(ids) + s for ids, s in cut]


def evaluate_test_time_compute(model: Any, tok: Any, records: Sequence[dict],
                               judge: Callable[[list[str], list[str]], list[float]] | None, *, ns: Sequence[int] = NS,
                               temperature: float = 1.0, max_new_tokens: int = 8, batch_size: int = 64,
                               resamples: int = 8, seed: int = 0) -> dict[str, Any]:
    """Sample max(ns) chat answers per record {"prompt", "answer"}, score them with `judge` (None: majority and
    pass@N only) and return `curves` plus tokens per query and the paired majority@TARGET_N vs @1 test."""
    from pipeline_assets.evals.stats import paired_test

    n = max(ns)
    completions, lengths = sample_replies(model, tok, [r["prompt"] for r in records], n, temperature,
                                          max_new_tokens, batch_size, seed)
    answers = [[final_answer(c) for c in completions[i * n:(i + 1) * n]] for i in range(len(records))]
    rewards = None
    if judge is not None:
        flat = judge([r["prompt"] for r in records for _ in range(n)], completions)
        rewards = [flat[i * n:(i + 1) * n] for i in range(len(records))]
    truth = [str(int(r["answer"])) for r in records]
    out = curves(answers, truth, rewards, ns, resamples, seed)
    mean_len = _mean([float(x) for x in lengths])
    out["tokens_per_query"] = [round(k * mean_len, 2) for k in ns]
    out["temperature"] = temperature
    if TARGET_N in ns and 1 in ns:
        test = paired_test(out["per_item"]["majority"][TARGET_N], out["per_item"]["majority"][1])
        out["majority_target"] = {"n": TARGET_N, "accuracy": out["majority"]["mean"][ns.index(TARGET_N)],
                                  "accuracy_at_1": out["majority"]["mean"][ns.index(1)], **test}
    out["ids"] = [str(r.get("id", i)) for i, r in enumerate(records)]
    out["examples"] = [{"prompt": r["prompt"], "answer": r["answer"], "samples": completions[i * n:i * n + 4]}
                       for i, r in enumerate(records[:3])]
    return out


def curves_png(policies: dict[str, dict[str, Any]]) -> bytes:
    """One panel per policy: accuracy vs N (log2 axis) for each rule and pass@N, mean +- std over resamples."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from pipeline_assets.figures import figure_png

    fig = Figure(figsize=(4.2 * max(1, len(policies)), 3.6), dpi=100)
    FigureCanvasAgg(fig)
    for k, (name, out) in enumerate(policies.items()):
        ax = fig.add_subplot(1, max(1, len(policies)), k + 1)
        for rule in (*RULES, "pass_at_n"):
            if rule not in out:
                continue
            mean, std = out[rule]["mean"], out[rule]["std"]
            ax.errorbar(out["ns"], mean, yerr=std, marker="o", capsize=3, label=rule.replace("_", " "),
                        linestyle="--" if rule == "pass_at_n" else "-")
        ax.set_xscale("log", base=2)
        ax.set_xticks(out["ns"], [str(n) for n in out["ns"]])
        ax.set_ylim(0, 1)
        ax.set_xlabel("samples per query (N)")
        ax.set_title(name)
        if k == 0:
            ax.set_ylabel("held-out arithmetic accuracy")
            ax.legend(fontsize=7)
    return figure_png(fig)


def tools_vs_sampling(policy: Any, policy_tok: Any, tool_model: Any, tool_tok: Any, records: Sequence[dict], *,
                      n: int = 16, temperature: float = 1.0, max_new_tokens: int = 8, batch_size: int = 64,
                      seed: int = 0) -> dict[str, Any]:
    """The other axis of test-time compute: one tool-using answer (models/tool_use, calling the calculator) vs
    majority vote over `n` samples of the policy, on problems beyond in-head arithmetic (3-digit products),
    paired per problem, with the tokens each generates per query."""
    from pipeline_assets.evals.stats import paired_test
    from pipeline_assets.tasks.arithmetic import check_arithmetic
    from pipeline_assets.tool_use.loop import run_with_tools
    from pipeline_assets.tool_use.tools import tool_schemas

    completions, lengths = sample_replies(policy, policy_tok, [r["prompt"] for r in records], n, temperature,
                                          max_new_tokens, batch_size, seed)
    answers = [final_answer(c) for c in completions]
    voted = [float(select("majority", answers[i * n:(i + 1) * n], None) == str(r["answer"]))
             for i, r in enumerate(records)]
    runs = run_with_tools(tool_model, tool_tok, [[{"role": "user", "content": r["prompt"]}] for r in records],
                          tool_schemas(), max_new_tokens=48, batch_size=batch_size)
    tooled = [float(check_arithmetic(ex.answer, r["answer"])) for ex, r in zip(runs, records, strict=True)]
    return {"n_problems": len(records), "samples": n,
            "majority_accuracy": round(_mean(voted), 4), "tool_accuracy": round(_mean(tooled), 4),
            "majority_tokens_per_query": round(sum(lengths) / len(records), 2),
            "tool_tokens_per_query": round(_mean([float(ex.tokens) for ex in runs]), 2),
            **paired_test(tooled, voted)}
