"""The report card: every stage of the pipeline side by side in one markdown file, plots embedded.

    from pipeline_assets.reports.report_card import render_report_card
    render_report_card(data, out_dir)     # -> out_dir/report_card.json, report_card.md (from it), *.png

Plain Python, no Dagster: the `reports/report_card` asset assembles `data` from upstream materialization
metadata and calls this. The PNGs are written beside the markdown AND embedded in it as base64
(`![..](data:image/png;base64,..)`), so the file renders in the Dagster UI, on GitHub or in a mail.

Expected shape of `data` (every key optional; a missing or None section renders as "not materialized"):

    {
      "title": str, "profile": "tiny",
      "git": {"revision": str, "dirty": bool},           # default: `git rev-parse HEAD` of this checkout
      "code_versions": {asset_key: code_version},         # Dagster code versions of the assets
      "corpus": {
        "stages": [{"stage": "corpus/filtered_documents", "partition": "stdlib", "docs_in": int,
                    "docs_out": int, "bytes_out": int, "removed_by_filter": {name: int}}],
        "dedup": {"exact_removed": int, "near_dup_removed": int, "clusters": int, "largest_cluster": int},
        "decontamination": {"docs_in": int, "contaminated_removed": int,
                            "contaminated_by_task": {task: int}},
        "contamination": {"before": contamination_report(...), "after": contamination_report(...)},
        "per_source": {source: {"docs_in", "quarantined", "language", "heuristic", "quality", "toxicity", "malware",
                                "dedup", "decontamination", "kept", "safety_reasons": {filter: {reason: n}}}},
        "quality_classifier": corpus/quality_classifier's summary.json,
        "mixture": {"domain_weights": {domain: float}, "train_documents": int, "val_documents": int,
                    "train_bytes": int, "val_bytes": int, "by_source": {source: {"documents": int, "bytes": int}}},
      },
      "tokenizer": {"vocab_size": int, "bytes_per_token": float, "bytes_per_token_by_domain": {domain: float},
                    "train_documents": int, "roundtrip_exact": bool, "chat_template_ok": bool},
      "models": [                                          # display order = list order
        {"stage": "models/base", "parent": None | "models/...", "num_params": int, "tokens_seen": int,
         "train_loss_first": float, "train_loss_final": float, "wall_time_s": float,
         "loss_history": [[step, loss], ...], "val_history": [[step, val_loss, ...], ...],
         "checkpoint_dir": str}
      ],
      "evals": {stage: evaluate_checkpoint(...) result, or just its flat "metrics" dict},
      "gates": evaluate_gates(...) result,
    }

Model rows fall back to `loss_history` for loss start/end; val bpb is the eval's (exact bytes); `parent` falls back
to `data["lineage"][stage]`. Returns {"report_path", "json_path", "pngs", "sections", "stages",
"gates_passed", "released", "git_revision", "markdown_chars"}.

`report_card.json` is what scripts read (names are a contract; `validate_report_card` checks them), and the
stage, target, gate and release sections of the markdown are rendered from it, so the two never disagree.
Stages use short names (base, sft, reward, dpo, rlhf, grpo, distilled, quantized):

    {"stages": {STAGE: {"parent": STAGE | null,
                        "target": {"metric", "value", "n", "ci95": [lo, hi] | null, "delta_vs_parent", "p_value"},
                        "metrics": {metric: value}}},
     "gates": [{"stage", "name", "status": "pass" | "fail" | "not_enforced", "reason"}],
     "release": {"stage", "released": bool, "blocked_by": [gate message]},
     "architectures": {STAGE: {"vs": STAGE, "num_experts", "top_k", "active_params", "dense_active_params",
                               "active_params_ratio", ... (total_params, tokens, tokens_per_s, train_state_mb,
                               peak_memory_mb, window_val_bpb: each with dense_ and _ratio), "routing"}},
     "time_table": reports/time_table.py's table (per asset wall, CPU, peak memory; critical path) | null,
     "test_time_compute": {"policies": {STAGE: {"ns", "n_problems", "tokens_per_query", "majority", "best_of_n",
                                                "weighted", "pass_at_n": {"mean": [..], "std": [..]}}},
                           "target": {"policy", "n", "accuracy", "accuracy_at_1", "delta", "ci95", "p_value",
                                      "alpha", "passed"},
                           "tools_vs_sampling": {"policy", "tool_policy", "n_problems", "samples", "tool_accuracy",
                                                 "majority_accuracy", "tool_tokens_per_query",
                                                 "majority_tokens_per_query", "delta", "ci95", "p_value"} | null}
                          | null,
     "arena": {"votes", "elo": {STAGE: rating}, "pairs": [{"first", "second", "votes", "decisive", "first_wins",
                                                          "second_wins", "ties", "both_bad", "first_win_rate",
                                                          "ci95", "p_value", "winner"}]} | null,
     "data": {"sources": {SOURCE: {"docs_in", "quarantined", "language", "heuristic", "quality", "toxicity",
                                   "malware", "dedup", "decontamination", "kept"}},
              "drop_reasons": {SOURCE: {filter: {reason: n}}},
              "quality_classifier": {"precision", "recall", "f1", "auc", "auc_ci95", "n", "n_lq", "lq_share",
                                     "p_value"}}}
"""

from __future__ import annotations

import datetime as dt
import json
import subprocess
from collections.abc import Mapping, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from pipeline_assets.figures import figure_png, png_markdown

NOT_MATERIALIZED = "_not materialized_"
REPORT_NAME = "report_card.md"
JSON_NAME = "report_card.json"

# Too slow for the default graph (a second SFT from a random init): measured by tests/test_slow_chain.py
# (`python -m pytest -m slow tests/test_slow_chain.py`), quoted here and in the README with its commit.
PRETRAINING_CONTROL: dict[str, Any] = {
    "question": "does pretraining matter: the same SFT (tiny recipe, seed 0, same data) from the pretrained base "
                "vs from a random init of the same model and tokenizer, for as many steps as the pretrained run "
                "took to its dev early stop",
    "steps": 800,
    # Asserted by the slow test: what pretraining gives SFT is the language and knowledge of the corpus.
    "metric": "docstring_qa_loglik_per_byte", "n": 300, "from_pretrained": -1.6785, "from_random_init": -1.9048,
    "delta": 0.2263, "ci95": [0.2024, 0.2501], "p_value": 0.0, "test": "paired_bootstrap, 4,000 resamples",
    # Reported beside it: the arithmetic target, which SFT (not pretraining) teaches at this budget.
    "arithmetic": {"metric": "arithmetic_accuracy", "n": 240, "from_pretrained": 0.6333, "from_random_init": 0.4583,
                   "delta": 0.175, "ci95": [0.0917, 0.2583], "p_value": 0.000138, "test": "mcnemar_exact"},
    "val_loss_from_pretrained": 1.583, "val_loss_from_random_init": 2.424,
    "finding": "Pretraining gives SFT the corpus's language and knowledge: held-out docstring QA (stdlib objects the "
               "corpus holds and no SFT row asks about) gets +0.23 nats/byte on the reference answers. "
               "Arithmetic is not a stable effect of pretraining at this budget: it is learned in SFT's phase "
               "transition, whose timing decides the comparison (+17.5 points here, -15.8 at 4c6f632 with the "
               "same recipe). The base learns no addition from its synthetic math stream: plain few-shot 0.025 at "
               "a 10% share, 0.013-0.025 at 25-50% and up to 600 pretraining steps (~37k problem lines).",
    "measured_by": "tests/test_slow_chain.py::test_pretraining_matters", "commit": "e4ed63f"}
GATE_STATUSES = ("pass", "fail", "not_enforced")
TARGET_KEYS = ("metric", "value", "n", "ci95", "delta_vs_parent", "p_value")
LIBRARIES = ("torch", "transformers", "trl", "tokenizers", "datasets", "peft", "datatrove", "dagster")

# Eval columns of the stage table: (metric key, header). Same names as evals.harness metrics.
EVAL_COLUMNS: tuple[tuple[str, str], ...] = (
    ("mc_accuracy", "MC acc"),
    ("arithmetic_accuracy", "arith acc"),
    ("qa_f1", "QA F1"),
    ("safety_refusal_rate", "refusal"),
    ("safety_over_refusal_rate", "over-refusal"),
    ("win_rate_vs_parent", "win vs parent"),
    ("reward_pairwise_accuracy", "RM pair acc"),
    ("preference_pair_accuracy", "held-out pair acc"),
)


# ---------------------------------------------------------------------------------------------------------
# Formatting


def fmt(value: Any) -> str:
    """Numbers as a reader wants them: ints with separators, floats to 4 decimals (trailing zeros cut)."""
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if value != value:  # NaN
            return "nan"
        if abs(value) >= 1000:
            return f"{value:,.1f}"
        text = f"{value:.4f}".rstrip("0").rstrip(".")
        return "0" if text in ("-0", "") else text
    return str(value).replace("|", "\\|").replace("\n", " ")


def fmt_delta(value: float | None, parent: float | None) -> str:
    if value is None or parent is None:
        return ""
    delta = value - parent
    return f" ({'+' if delta >= 0 else ''}{fmt(round(delta, 6))})"


def table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(c if isinstance(c, str) else fmt(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------------------
# Plots


def loss_curves_png(models: Sequence[Mapping[str, Any]]) -> bytes | None:
    """One panel per stage with a loss history: stages differ in loss scale (LM nats vs DPO/RM losses)."""
    curves = [m for m in models if m.get("loss_history")]
    if not curves:
        return None
    cols = min(3, len(curves))
    rows = (len(curves) + cols - 1) // cols
    fig = Figure(figsize=(4.2 * cols, 3.0 * rows), dpi=90)
    FigureCanvasAgg(fig)
    for i, model in enumerate(curves):
        ax = fig.add_subplot(rows, cols, i + 1)
        hist = model["loss_history"]
        ax.plot([float(h[0]) for h in hist], [float(h[1]) for h in hist], color="tab:blue", linewidth=1.2,
                label="train")
        if model.get("val_history"):
            val = model["val_history"]
            ax.plot([float(v[0]) for v in val], [float(v[1]) for v in val], "o-", color="tab:orange",
                    markersize=3, label="val")
            ax.legend(fontsize=7)
        ax.set_title(str(model.get("stage", "?")), fontsize=9)
        ax.set_xlabel("step", fontsize=8)
        ax.set_ylabel("loss", fontsize=8)
        ax.grid(True, alpha=0.3)
    return figure_png(fig)


def eval_bars_png(stages: Sequence[str], evals: Mapping[str, Mapping[str, Any]]) -> bytes | None:
    """Grouped bars: one group per eval metric (all rates in [0, 1]), one bar per stage."""
    keys = [k for k, _ in EVAL_COLUMNS if any(_num(evals.get(s, {}).get(k)) is not None for s in stages)]
    shown = [s for s in stages if any(_num(evals.get(s, {}).get(k)) is not None for k in keys)]
    if not keys or not shown:
        return None
    fig = Figure(figsize=(max(7.0, 0.55 * len(keys) * len(shown) + 2.5), 3.4), dpi=90)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    width = 0.8 / len(shown)
    for j, stage in enumerate(shown):
        values = [_num(evals[stage].get(k)) or 0.0 for k in keys]
        ax.bar([i + j * width for i in range(len(keys))], values, width=width, label=stage)
    ax.set_xticks([i + 0.4 - width / 2 for i in range(len(keys))])
    ax.set_xticklabels([dict(EVAL_COLUMNS)[k] for k in keys], fontsize=8)
    ax.set_ylim(0, 1.05)
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))  # outside: bars reach 1.0
    ax.set_title("held-out evals per stage", fontsize=9)
    return figure_png(fig)


# ---------------------------------------------------------------------------------------------------------
# Sections


def _num(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _metrics(evals: Mapping[str, Any], stage: str) -> dict[str, Any]:
    entry = evals.get(stage) or {}
    return dict(entry.get("metrics", entry))


def _section_corpus(corpus: Mapping[str, Any] | None) -> str:
    if not corpus:
        return f"## Data\n\n{NOT_MATERIALIZED}\n"
    out = ["## Data"]
    sources = corpus.get("per_source")
    if sources:
        out.append("### Per source: documents in, dropped by each filter, kept")
        cols = ("docs_in", "quarantined", "language", "heuristic", "quality", "toxicity", "malware", "dedup",
                "decontamination", "kept")
        out.append(table(["source", *(c.replace("_", " ") for c in cols)],
                         [[name, *(row.get(c) for c in cols)] for name, row in sources.items()]))
        reasons = {f"{name}: {kind}": r for name, row in sources.items()
                   for kind, r in (row.get("safety_reasons") or {}).items()}
        if reasons:
            out.append(table(["source: filter", "drop reasons"],
                             [[k, ", ".join(f"{a} {b}" for a, b in v.items())] for k, v in reasons.items()]))
    classifier = corpus.get("quality_classifier")
    if classifier:
        held = classifier["heldout"]
        out.append("### Quality classifier (corpus/quality_classifier)")
        out.append(f"Held out at a low-quality share of {classifier['heldout_lq_share']} (n={held['n']}, "
                   f"{held['n_lq']} low quality): precision {held['precision']}, recall {held['recall']}, "
                   f"F1 {held['f1']}, AUC {held['auc']} (95% CI {classifier.get('auc_ci95')}, "
                   f"p={classifier['auc_p_value']:.1e} vs chance); "
                   f"balanced F1 {classifier['heldout_balanced']['f1']}; {classifier['model_bytes'] / 1e6:.1f} MB, "
                   f"trained in {classifier['train_s']} s.")
    synthetic = corpus.get("synthetic")
    if synthetic:
        out.append(_synthetic_lines(synthetic))
    stages = corpus.get("stages")
    out.append("### Documents per corpus stage")
    if stages:
        rows = []
        for s in stages:
            removed = s.get("removed_by_filter") or {}
            rows.append([s.get("stage", "?"), s.get("partition", "–"), s.get("docs_in"), s.get("docs_out"),
                         s.get("bytes_out"), ", ".join(f"{k} {fmt(v)}" for k, v in removed.items()) or "–"])
        out.append(table(["stage", "partition", "docs in", "docs out", "bytes out", "removed by filter"], rows))
    else:
        out.append(NOT_MATERIALIZED)
    dedup = corpus.get("dedup")
    out.append("### Deduplication")
    out.append(table(["figure", "value"], [[k, v] for k, v in dedup.items()]) if dedup else NOT_MATERIALIZED)
    decont = corpus.get("decontamination")
    out.append("### Decontamination")
    if decont:
        out.append(table(["figure", "value"], [[k, ", ".join(f"{a} {fmt(b)}" for a, b in v.items()) or "0"]
                                               if isinstance(v, Mapping) else [k, v] for k, v in decont.items()]))
    else:
        out.append(NOT_MATERIALIZED)
    contamination = corpus.get("contamination")
    if contamination:
        phases = [p for p in ("before", "after") if contamination.get(p)]
        names = sorted({n for p in phases for n in contamination[p].get("contaminated_fraction", {})})
        rows = [[n, *(contamination[p]["contaminated_fraction"].get(n) for p in phases)] for n in names]
        n_gram = next((contamination[p].get("n") for p in phases), "?")
        out.append(f"Eval items sharing a {n_gram}-gram with the training text (fraction of each set):")
        out.append(table(["eval set", *(f"{p} decontamination" for p in phases)], rows))
    mixture = corpus.get("mixture")
    out.append("### Training mixture")
    if mixture:
        scalars = [[k, v] for k, v in mixture.items() if not isinstance(v, Mapping)]
        if scalars:
            out.append(table(["figure", "value"], scalars))
        weights = mixture.get("domain_weights")
        if weights:
            out.append(table(["domain", "weight"], [[k, v] for k, v in weights.items()]))
        by_source = mixture.get("by_source")
        if by_source:
            out.append(table(["source", "documents", "bytes"],
                             [[k, v.get("documents"), v.get("bytes")] for k, v in by_source.items()]))
    else:
        out.append(NOT_MATERIALIZED)
    return "\n\n".join(out) + "\n"


def _synthetic_lines(syn: Mapping[str, Any]) -> str:
    out = ["### Synthetic data (datasets/synthetic)",
           f"{syn['rows']} accepted rows over {syn['generation']} generation(s) {syn.get('rows_by_generation')} from "
           f"teacher `{syn.get('teacher_version')}`, {syn.get('rejected_rows')} rejected "
           f"({', '.join(f'{k} {v}' for k, v in (syn.get('rejected_by_reason_all') or {}).items()) or 'none'}); "
           f"distinct-1 {syn.get('distinct_1')}, distinct-2 {syn.get('distinct_2')}."]
    rates = syn.get("acceptance_by_verifier_all") or {}
    if rates:
        out.append(table(["verifier", "asked", "accepted", "acceptance"],
                         [[v, r["asked"], r["accepted"], r["rate"]] for v, r in rates.items()]))
    rows = []
    for stage, c in (syn.get("consumers") or {}).items():
        e = c.get("effect") or {}
        rows.append([stage, c.get("rows"), c.get("share"), c.get("max_share"), e.get("metric", "–"),
                     e.get("with"), e.get("without"), e.get("delta"), _ci(e.get("ci95")), e.get("p_value"), e.get("n")])
    if rows:
        out.append(table(["training set", "synthetic rows", "share", "cap", "target", "with", "without", "delta",
                          "95% CI", "p", "n"], rows))
    return "\n\n".join(out)


def _section_architecture(name: str, arch: Mapping[str, Any]) -> str:
    """A mixture-of-experts variant beside its dense model: what makes the comparison fair, what it costs, and
    how evenly its router spreads tokens (the target row above pairs their val bpb)."""
    rows = [[figure, arch.get(key), arch.get(f"dense_{key}"), arch.get(f"{key}_ratio")]
            for figure, key in (("active params per token", "active_params"), ("total params", "total_params"),
                                ("training tokens", "tokens"), ("train tokens/s", "tokens_per_s"),
                                ("weights + grads + AdamW (MB)", "train_state_mb"),
                                ("peak GPU memory (MB)", "peak_memory_mb"),
                                ("in-training val bpb", "window_val_bpb"))]
    out = [f"### Mixture of experts: models/{name} vs models/{arch.get('vs')}",
           f"{arch.get('num_experts')} experts per FFN, top-{arch.get('top_k')}; router balancing loss at the end of "
           f"training {arch.get('router_aux_loss_final')} (HF's value is ~top_k when balanced).",
           table(["figure", name, arch.get("vs") or "dense", "ratio"], rows)]
    routing = arch.get("routing") or {}
    if routing.get("layers"):
        out.append(f"Routing on {routing['tokens']:,} val tokens: balancing loss {routing['aux_loss']}, load max/mean "
                   f"{routing['max_over_mean']} (1 = even), dead experts {routing['dead_experts']}, router entropy "
                   f"{routing['router_entropy']} (1 = uniform).")
        out.append(table(["layer", "expert load", "max/mean", "cv", "dead", "entropy"],
                         [[r["layer"], " ".join(f"{x:.2f}" for x in r["load"]), r["max_over_mean"], r["cv"],
                           r["dead_experts"], r["router_entropy"]] for r in routing["layers"]]))
    return "\n\n".join(out) + "\n"


def _section_tokenizer(tok: Mapping[str, Any] | None) -> str:
    if not tok:
        return f"## Tokenizer\n\n{NOT_MATERIALIZED}\n"
    keys = ("vocab_size", "bytes_per_token", "split_pattern", "train_documents", "train_bytes", "roundtrip_exact",
            "chat_template_ok", "eos_token")
    rows = [[k, tok[k]] for k in keys if k in tok]
    by_domain = tok.get("bytes_per_token_by_domain") or {}
    rows += [[f"bytes_per_token[{d}]", v] for d, v in by_domain.items()]
    return "## Tokenizer\n\n" + table(["figure", "value"], rows) + "\n"


def _model_rows(models: Sequence[Mapping[str, Any]], evals: Mapping[str, Any],
                lineage: Mapping[str, Any]) -> tuple[list[str], list[list[str]]]:
    header = ["stage", "parent", "params", "tokens", "loss start→end", "wall time", "val bpb",
              *(h for _, h in EVAL_COLUMNS)]
    rows = []
    for m in models:
        stage = str(m.get("stage", "?"))
        parent = m.get("parent") or lineage.get(stage)
        mine, theirs = _metrics(evals, stage), _metrics(evals, parent) if parent else {}
        hist = m.get("loss_history") or []
        first = m.get("train_loss_first", hist[0][1] if hist else None)
        last = m.get("train_loss_final", hist[-1][1] if hist else None)
        loss = f"{fmt(first)} → {fmt(last)}" if first is not None or last is not None else "–"
        wall = _num(m.get("wall_time_s"))
        bpb = mine.get("val_bpb")
        cells = [f"**{stage}**", parent or "–", fmt(m.get("num_params")),
                 fmt(m.get("tokens_seen", m.get("tokens"))), loss, "–" if wall is None else f"{fmt(wall)} s",
                 fmt(bpb) + fmt_delta(_num(bpb), _num(theirs.get("val_bpb")))]
        for key, _ in EVAL_COLUMNS:
            value = _num(mine.get(key))
            # win rate is already relative to the parent, so it gets no delta.
            delta = "" if key == "win_rate_vs_parent" else fmt_delta(value, _num(theirs.get(key)))
            cells.append(fmt(mine.get(key)) + delta)
        rows.append(cells)
    return header, rows


def _section_gates(card: Mapping[str, Any], gates: Mapping[str, Any] | None) -> str:
    if not gates:
        return f"## Release gates\n\n{NOT_MATERIALIZED}\n"
    marks = {"pass": "✅ pass", "fail": "❌ fail", "not_enforced": "⏸ not enforced"}
    rows = [[f"models/{g['stage']}:{g['name']}", marks.get(g["status"], g["status"]), g["reason"] or "–"]
            for g in card["gates"]]
    body = table(["gate", "status", "reason"], rows) if rows else "_no gates evaluated_"
    summary = gates.get("summary") or ("PASS" if gates.get("passed") else "BLOCKED")
    return f"## Release gates\n\n**{fmt(summary)}**\n\n{body}\n"


def _section_samples(models: Sequence[Mapping[str, Any]], evals: Mapping[str, Any]) -> str:
    lines = []
    for m in models:
        samples = (evals.get(str(m.get("stage"))) or {}).get("samples") or []
        for s in samples[:2]:
            lines.append([str(m.get("stage")), s.get("prompt", ""), str(s.get("completion", ""))[:160]])
    return ("## Sample generations\n\n" + table(["stage", "prompt", "completion"], lines) + "\n") if lines else ""


def short_stage(stage: str | None) -> str | None:
    """"models/sft" -> "sft": the names users script against in report_card.json."""
    return None if stage is None else str(stage).removeprefix("models/")


def _target_entry(metric: str | None, gate: Mapping[str, Any] | None, eval_report: Mapping[str, Any]) -> dict:
    stats = (eval_report.get("metric_stats") or {}).get(metric) or {} if metric else {}
    mine = _metrics({"s": eval_report}, "s")
    target = dict((gate or {}).get("target") or {})
    value = target.get("value", mine.get(metric) if metric else None)
    entry = {"metric": metric, "value": _num(value), "n": stats.get("n"), "ci95": stats.get("ci95"),
             "delta_vs_parent": target.get("delta_vs_parent"), "p_value": target.get("p_value")}
    if target.get("baseline"):  # judged against another metric of its own eval (tool_use: without tools)
        entry.update(baseline=target["baseline"], delta_vs_baseline=target.get("delta_vs_baseline"))
    return entry


def build_report_card_json(data: Mapping[str, Any]) -> dict[str, Any]:
    """The machine-readable card (schema: module docstring) from the same `data` render_report_card takes."""
    evals = dict(data.get("evals") or {})
    lineage = dict(data.get("lineage") or {})
    gates = dict(data.get("gates") or {})
    models = list(data.get("models") or [])
    order = [str(m.get("stage")) for m in models] + [s for s in evals if s not in {str(m.get("stage")) for m in models}]
    parents = {str(m.get("stage")): m.get("parent") for m in models}
    target_gates = {g["stage"]: g for g in gates.get("gates", []) if g.get("kind") == "target"}
    targets = dict(data.get("targets") or {})  # stage -> metric, for stages without a target gate
    stages: dict[str, Any] = {}
    for stage in order:
        report = dict(evals.get(stage) or {})
        gate = target_gates.get(stage)
        metric = (gate or {}).get("target", {}).get("metric") or targets.get(stage)
        stages[short_stage(stage)] = {
            "parent": short_stage(parents.get(stage) or lineage.get(stage)),
            "target": _target_entry(metric, gate, report),
            "metrics": {k: v for k, v in _metrics(evals, stage).items() if v is not None}}
    release = gates.get("release") or {"stage": None, "released": False,
                                       "blocked_by": ["no release decision (gates not evaluated)"]}
    return {"stages": stages,
            "gates": [{"stage": short_stage(g["stage"]), "name": g.get("name", g.get("kind")),
                       "status": g["status"], "reason": g.get("reason") or "; ".join(g.get("messages") or [])}
                      for g in gates.get("gates", [])],
            "release": {"stage": short_stage(release.get("stage")), "released": bool(release.get("released")),
                        "blocked_by": list(release.get("blocked_by") or [])},
            "controls": {"pretraining": PRETRAINING_CONTROL},
            "architectures": {short_stage(k): {**v, "vs": short_stage(v.get("vs"))}
                              for k, v in (data.get("architectures") or {}).items()},
            "test_time_compute": _ttc_json(data.get("test_time_compute")),
            "arena": _arena_json(data.get("arena")),
            "data": _data_json(data.get("corpus") or {}),
            "time_table": data.get("time_table")}


def _section_time_table(t: Mapping[str, Any]) -> str:
    """Per asset, in start order: when it started, how long, its CPU and memory; then the critical path."""
    rows = [[r["asset"], r["partitions"], fmt(r["start_s"]), fmt(r["elapsed_s"]), fmt(r["cpu_s"]),
             fmt(r["peak_rss_mb"])] for r in t["assets"]]
    cores = f"; CPU {fmt(t['cpu_s'])} s = {fmt(round(t['cpu_s'] / t['span_s'], 2))} cores busy on average" \
        if t.get("cpu_s") and t["span_s"] else ""
    path = t["critical_path"]
    return ("## Where the time went\n\nEach asset's latest materialization (per partition): Dagster's step start "
            "and end, and the step's CPU time (its process and the children it waited for) and peak resident "
            f"memory. Span {fmt(t['span_s'])} s from the first step's start to the last one's end{cores}.\n\n"
            + table(["asset", "partitions", "start (s)", "elapsed (s)", "CPU (s)", "peak RSS (MB)"], rows)
            + f"\n\n**Critical path** ({fmt(path['elapsed_s'])} s): " + " → ".join(path["assets"]) + "\n")


def _arena_json(arena: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """report_card.json's "arena": evals/arena's Elo ratings and per-pair win rates; None when not materialized."""
    if arena is None:
        return None
    return {"votes": arena.get("votes", 0), "elo": dict(arena.get("elo") or {}), "pairs": [
        {k: r.get(k) for k in ("first", "second", "votes", "decisive", "first_wins", "second_wins", "ties",
                               "both_bad", "first_win_rate", "ci95", "p_value", "winner")}
        for r in arena.get("pairs") or []]}


def _section_arena(arena: Mapping[str, Any]) -> str:
    head = ("## Human evaluation (arena)\n\nBlind side-by-side votes from `llmdag serve`'s /arena page: "
            "Bradley-Terry ratings on the Elo scale, and per pair the first model's win rate among decisive votes "
            "(95% Wilson CI, binomial p vs 0.5; a winner only where p < 0.05).\n\n")
    if not arena["votes"]:
        return head + "No votes yet: serve two checkpoints (`llmdag serve grpo sft`) and vote at /arena.\n"
    ratings = table(["model", "Elo"], [[m, fmt(e)] for m, e in sorted(arena["elo"].items(), key=lambda x: -x[1])])
    pairs = table(["first", "second", "votes", "first wins", "second wins", "ties", "both bad", "first win rate",
                   "95% CI", "p", "winner"],
                  [[r["first"], r["second"], fmt(r["votes"]), fmt(r["first_wins"]), fmt(r["second_wins"]),
                    fmt(r["ties"]), fmt(r["both_bad"]), fmt(r["first_win_rate"]), _ci(r["ci95"]), fmt(r["p_value"]),
                    r["winner"] or "none yet"] for r in arena["pairs"]])
    return head + f"{arena['votes']} votes.\n\n" + ratings + "\n\n" + pairs + "\n"


TTC_CURVES = ("majority", "best_of_n", "weighted", "pass_at_n")


def _ttc_json(ttc: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """report_card.json's "test_time_compute": per policy the accuracy-vs-N curves (mean and std over resamples)
    and tokens per query, and the majority@8-vs-@1 target on the release policy; None when not materialized."""
    if not ttc:
        return None
    policies = {name: {"ns": out["ns"], "n_problems": out["n_problems"], "tokens_per_query": out["tokens_per_query"],
                       **{k: out[k] for k in TTC_CURVES if k in out}}
                for name, out in (ttc.get("policies") or {}).items()}
    target = dict(ttc.get("target") or {})
    return {"policies": policies, "target": {k: target.get(k) for k in (
        "policy", "n", "accuracy", "accuracy_at_1", "delta", "ci95", "p_value", "alpha", "passed")},
            "tools_vs_sampling": ttc.get("tools_vs_sampling")}


def _section_test_time_compute(ttc: Mapping[str, Any], plot: str) -> str:
    t = ttc["target"]
    rows = []
    for name, out in ttc["policies"].items():
        for curve in TTC_CURVES:
            if curve in out:
                rows.append([name, curve.replace("_", " "), *(f"{m:.3f} ± {s:.3f}" for m, s in
                                                             zip(out[curve]["mean"], out[curve]["std"], strict=True))])
        rows.append([name, "tokens per query", *(fmt(x) for x in out["tokens_per_query"])])
    ns = next(iter(ttc["policies"].values()))["ns"] if ttc["policies"] else []
    verdict = "**passed**" if t.get("passed") else "**not met**"
    tools = ttc.get("tools_vs_sampling")
    axis = (f"\n\nWith tools instead of samples, on {tools['n_problems']} held-out 3-digit products: "
            f"models/{tools['tool_policy']} answering once with the calculator {fmt(tools['tool_accuracy'])} "
            f"({fmt(tools['tool_tokens_per_query'])} generated tokens per query) vs models/{tools['policy']}'s "
            f"majority of {tools['samples']} samples {fmt(tools['majority_accuracy'])} "
            f"({fmt(tools['majority_tokens_per_query'])} tokens); paired p={fmt(tools['p_value'])}.") if tools else ""
    return ("## Test-time compute\n\nAccuracy on the held-out arithmetic vs the samples drawn per query (mean ± std "
            "over random subsets of each problem's samples); best-of-N and weighted pick by the reward model, pass@N "
            f"is the ceiling a perfect verifier would reach. Target: majority vote at N={fmt(t.get('n'))} beats N=1 "
            f"on models/{t.get('policy')}: {fmt(t.get('accuracy_at_1'))} -> {fmt(t.get('accuracy'))} "
            f"(delta {fmt(t.get('delta'))}, 95% CI {_ci(t.get('ci95'))}, p={fmt(t.get('p_value'))}, alpha "
            f"{fmt(t.get('alpha'))}): {verdict}.\n\n" + table(["policy", "rule", *(f"N={n}" for n in ns)], rows)
            + axis + "\n" + (f"\n{plot}\n" if plot else ""))


def _data_json(corpus: Mapping[str, Any]) -> dict[str, Any]:
    """report_card.json's "data": per-source filter counts, the quality classifier's held-out metrics, and
    datasets/synthetic (acceptance per verifier, rows per generation, share and paired effect per consumer)."""
    classifier = corpus.get("quality_classifier") or {}
    held = classifier.get("heldout") or {}
    return {"sources": {name: {k: v for k, v in row.items() if k != "safety_reasons"}
                        for name, row in (corpus.get("per_source") or {}).items()},
            "drop_reasons": {name: row["safety_reasons"] for name, row in (corpus.get("per_source") or {}).items()
                             if row.get("safety_reasons")},
            "quality_classifier": {**{k: held.get(k) for k in ("precision", "recall", "f1", "auc", "n", "n_lq")},
                                   "auc_ci95": classifier.get("auc_ci95"),
                                   "lq_share": classifier.get("heldout_lq_share"),
                                   "p_value": classifier.get("auc_p_value")} if classifier else None,
            "synthetic": corpus.get("synthetic")}


def validate_report_card(card: Mapping[str, Any]) -> list[str]:
    """Schema problems of a report_card.json (empty list = valid): what scripts reading it may rely on."""
    errors = [f"missing top-level key {k!r}" for k in ("stages", "gates", "release") if k not in card]
    for name, stage in (card.get("stages") or {}).items():
        if not {"parent", "target", "metrics"} <= set(stage):
            errors.append(f"stages.{name} lacks {sorted({'parent', 'target', 'metrics'} - set(stage))}")
            continue
        if stage["parent"] is not None and not isinstance(stage["parent"], str):
            errors.append(f"stages.{name}.parent must be a stage name or null")
        missing = [k for k in TARGET_KEYS if k not in (stage["target"] or {})]
        if missing:
            errors.append(f"stages.{name}.target lacks {missing}")
        ci = (stage["target"] or {}).get("ci95")
        if ci is not None and (len(ci) != 2 or ci[0] > ci[1]):
            errors.append(f"stages.{name}.target.ci95 must be [lo, hi]")
    for i, gate in enumerate(card.get("gates") or []):
        missing = [k for k in ("stage", "name", "status", "reason") if k not in gate]
        if missing:
            errors.append(f"gates[{i}] lacks {missing}")
        elif gate["status"] not in GATE_STATUSES:
            errors.append(f"gates[{i}].status {gate['status']!r} not in {GATE_STATUSES}")
    release = card.get("release") or {}
    if not isinstance(release.get("released"), bool) or not isinstance(release.get("blocked_by"), list) \
            or "stage" not in release:
        errors.append("release needs {stage, released: bool, blocked_by: list}")
    return errors


def _ci(ci: Sequence[float] | None) -> str:
    return f"[{fmt(ci[0])}, {fmt(ci[1])}]" if ci else "–"


def _section_targets(card: Mapping[str, Any]) -> str:
    rows = []
    for name, stage in card["stages"].items():
        t = stage["target"]
        delta = t["delta_vs_parent"] if t.get("baseline") is None else t.get("delta_vs_baseline")
        shown = "–" if delta is None else f"{'+' if delta >= 0 else ''}{fmt(delta)}"
        if t.get("baseline") is not None:
            shown += f" (vs {t['baseline']})"
        rows.append([f"**{name}**", stage["parent"] or "–", t["metric"] or "–", fmt(t["value"]), fmt(t["n"]),
                     _ci(t["ci95"]), shown, fmt(t["p_value"])])
    if not rows:
        return f"## Targets\n\n{NOT_MATERIALIZED}\n"
    return ("## Targets\n\nWhat each stage is for, with its 95% interval and the paired test vs the parent "
            "(– where no per-item data or no parent exists).\n\n"
            + table(["stage", "parent", "target", "value", "n", "95% CI", "Δ vs parent", "p"], rows) + "\n")


def _section_bpb_by_domain(card: Mapping[str, Any]) -> str:
    """Val bits-per-byte per domain for every stage, beside the unigram model's on the same bytes."""
    stages = {name: st["metrics"] for name, st in card["stages"].items()
              if any(k.startswith("val_bpb/") for k in st["metrics"])}
    if not stages:
        return ""
    domains = sorted({k.split("/", 1)[1] for m in stages.values() for k in m if k.startswith("val_bpb/")})
    first = next(iter(stages.values()))
    rows = [["unigram", *(fmt(first.get(f"unigram_val_bpb/{d}")) for d in domains), fmt(first.get("unigram_val_bpb"))]]
    rows += [[f"**{name}**", *(fmt(m.get(f"val_bpb/{d}")) for d in domains), fmt(m.get("val_bpb"))]
             for name, m in stages.items()]
    return ("## Val bits per byte by domain\n\nEach domain's NLL over exactly its own UTF-8 bytes (lower is better); "
            "the unigram row is the train split's token frequencies on the same bytes.\n\n"
            + table(["model", *domains, "all"], rows) + "\n")


def _control_line(label: str, r: Mapping[str, Any]) -> str:
    sign = "+" if r["delta"] >= 0 else ""
    return (f"- {label} (n={r['n']}), {r['metric']}: from the pretrained base {fmt(r['from_pretrained'])}, "
            f"from a random init {fmt(r['from_random_init'])}: {sign}{fmt(r['delta'])}, 95% CI {_ci(r['ci95'])}, "
            f"p={fmt(r['p_value'])} ({r['test']})")


def _section_control(c: Mapping[str, Any]) -> str:
    return (f"## Does pretraining matter\n\nThe same SFT ({c['steps']} steps) from the pretrained base vs from a "
            f"random init of the same model, item by item (measured by `{c['measured_by']}` at {c['commit']}):\n\n"
            f"{_control_line('held-out docstring QA', c)}\n{_control_line('arithmetic', c['arithmetic'])}\n\n"
            f"SFT val loss {fmt(c['val_loss_from_pretrained'])} vs {fmt(c['val_loss_from_random_init'])}. "
            f"{c['finding']}\n")


def _section_release(card: Mapping[str, Any]) -> str:
    release = card["release"]
    if release["stage"] is None:
        return "## Release\n\n_no release stage was decided_\n"
    verdict = "released" if release["released"] else "blocked"
    lines = [f"## Release\n\n**{fmt(release['stage'])}: {verdict}**"]
    if release["blocked_by"]:
        lines.append("\n".join(f"- {fmt(m)}" for m in release["blocked_by"]))
    return "\n\n".join(lines) + "\n"


def git_revision(cwd: Path | None = None) -> dict[str, Any]:
    """{"revision", "dirty"} of the checkout this file lives in; revision None when git or the repo is absent."""
    cwd = cwd or Path(__file__).resolve().parent
    try:
        rev = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=10)
        if rev.returncode != 0:
            return {"revision": None, "dirty": None}
        status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=cwd,
                                capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):  # no git binary, or a hung filesystem
        return {"revision": None, "dirty": None}
    return {"revision": rev.stdout.strip(), "dirty": bool(status.stdout.strip()) if status.returncode == 0 else None}


def _library_versions() -> dict[str, str]:
    versions = {}
    for name in LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def _section_versions(data: Mapping[str, Any], git: Mapping[str, Any]) -> str:
    rev = git.get("revision") or "unknown (not a git checkout)"
    dirty = " (uncommitted changes)" if git.get("dirty") else ""
    out = [f"## Code versions\n\ngit revision: `{rev}`{dirty}"]
    code_versions = data.get("code_versions")
    out.append(table(["asset", "code version"], sorted(code_versions.items())) if code_versions
               else f"asset code versions: {NOT_MATERIALIZED}")
    out.append(table(["library", "version"], sorted(_library_versions().items())))
    return "\n\n".join(out) + "\n"


# ---------------------------------------------------------------------------------------------------------
# Entry point


def render_report_card(data: Mapping[str, Any], out_dir: Path | str) -> dict[str, Any]:
    """Write out_dir/report_card.md (plots embedded) and the PNGs beside it; `data` shape: module docstring."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    models = list(data.get("models") or [])
    evals = dict(data.get("evals") or {})
    lineage = dict(data.get("lineage") or {})
    git = dict(data.get("git") or git_revision())
    sections: dict[str, str] = {}
    pngs: list[str] = []

    def save_png(png: bytes | None, name: str) -> str:
        if png is None:
            return ""
        (out_dir / name).write_bytes(png)
        pngs.append(str(out_dir / name))
        return png_markdown(png, name.removesuffix(".png").replace("_", " "))

    card = build_report_card_json(data)
    problems = validate_report_card(card)
    if problems:  # a bug here, not bad input: the builder owns the schema
        raise ValueError(f"report_card.json does not match its schema: {problems}")
    (out_dir / JSON_NAME).write_text(json.dumps(card, indent=2, default=str), encoding="utf-8")
    # The tables read the card's metrics, so the markdown shows exactly what the JSON says.
    evals = {s: {"metrics": card["stages"][short_stage(s)]["metrics"], "samples": (evals.get(s) or {}).get("samples")}
             for s in evals}

    title = data.get("title") or "llmdag report card"
    generated = data.get("generated_at") or dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    parts = [f"# {title}\n\nprofile `{data.get('profile', 'unknown')}` · generated {generated} · git "
             f"`{(git.get('revision') or 'unknown')[:12]}`\n"]

    parts.append(_section_corpus(data.get("corpus")))
    sections["data"] = "rendered" if data.get("corpus") else "not materialized"
    parts.append(_section_tokenizer(data.get("tokenizer")))
    sections["tokenizer"] = "rendered" if data.get("tokenizer") else "not materialized"

    if models:
        header, rows = _model_rows(models, evals, lineage)
        parts.append("## Models\n\nOne row per model stage; (±x) is the change vs the parent's eval.\n\n"
                     + table(header, rows) + "\n")
        curves = save_png(loss_curves_png(models), "loss_curves.png")
        parts.append("### Loss curves\n\n" + (curves or NOT_MATERIALIZED) + "\n")
        bars = save_png(eval_bars_png([str(m.get("stage")) for m in models],
                                      {s: _metrics(evals, s) for s in evals}), "eval_metrics.png")
        if bars:
            parts.append("### Evals\n\n" + bars + "\n")
        sections["models"] = "rendered"
    else:
        parts.append(f"## Models\n\n{NOT_MATERIALIZED}\n")
        sections["models"] = "not materialized"

    if card["stages"]:
        parts.append(_section_targets(card))
        by_domain = _section_bpb_by_domain(card)
        if by_domain:
            parts.append(by_domain)
        parts.append(_section_control(card["controls"]["pretraining"]))
    for name, arch in card["architectures"].items():
        parts.append(_section_architecture(name, arch))
    if card["test_time_compute"]:
        from pipeline_assets.evals.test_time_compute import curves_png

        plot = save_png(curves_png((data.get("test_time_compute") or {}).get("policies") or {}),
                        "test_time_compute.png")
        parts.append(_section_test_time_compute(card["test_time_compute"], plot))
    sections["test_time_compute"] = "rendered" if card["test_time_compute"] else "not materialized"
    if card["arena"] is not None:
        parts.append(_section_arena(card["arena"]))
    sections["arena"] = "rendered" if card["arena"] is not None else "not materialized"
    parts.append(_section_gates(card, data.get("gates")))
    if data.get("gates"):
        parts.append(_section_release(card))
    sections["gates"] = "rendered" if data.get("gates") else "not materialized"
    samples = _section_samples(models, evals)
    if samples:
        parts.append(samples)
    if card["time_table"] is not None:
        parts.append(_section_time_table(card["time_table"]))
    sections["time_table"] = "rendered" if card["time_table"] is not None else "not materialized"
    parts.append(_section_versions(data, git))

    markdown = "\n".join(parts)
    report = out_dir / REPORT_NAME
    report.write_text(markdown, encoding="utf-8")
    gates = data.get("gates") or {}
    return {"report_path": str(report), "json_path": str(out_dir / JSON_NAME), "pngs": pngs, "sections": sections,
            "stages": len(models), "gates_passed": gates.get("passed") if gates else None,
            "released": card["release"]["released"], "git_revision": git.get("revision"),
            "markdown_chars": len(markdown)}
