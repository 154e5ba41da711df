"""The eval sets of a causal LM, in the order `harness.evaluate_checkpoint` runs them: `REGISTRY` maps each
name `EvalConfig.sets` may list to an `EvalSet` (the function computing it, the inputs it needs, the
EvalConfig field that sizes it).

A new metric is one function `(EvalInputs) -> SetResult | None` and one `register(...)` line at the bottom:
evaluate_checkpoint loads the model once, skips a set whose inputs were not given, and times, logs and
merges every set's SetResult the same way. EvalConfig's default `sets` is every registered name but the
opt-in ones, so the new set runs by default and `sets` can leave it out.

No torch at import: config.py validates `sets` against REGISTRY where the profiles and Launchpad configs
load without the training stack. The scoring primitives live in harness.py and are imported when a set runs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

from pipeline_assets.evals.safety import balanced_subset, evaluate_safety
from pipeline_assets.jsonl import read_jsonl
from pipeline_assets.tasks.heldout import load_benchmark

if TYPE_CHECKING:
    from pipeline_assets.evals.config import EvalConfig

# What evaluate_checkpoint may be given besides the model: an EvalSet's `needs` names some of them.
INPUTS: tuple[str, ...] = ("shards_dir", "pairs_dir", "parent_dir", "judge")


@dataclass(frozen=True)
class EvalInputs:
    """What a set function reads. An input of INPUTS is None where evaluate_checkpoint was not given it; a
    set runs only when every input in its `needs` is given, so it may read those without checking."""

    model: Any
    tok: Any
    cfg: EvalConfig
    bench_dir: Path
    device: str
    limit: Any = None  # cfg.<EvalSet.limit>; None where the set names no field (or the field is None: all)
    shards_dir: Path | None = None  # tokenizer/tokenized_shards
    pairs_dir: Path | None = None  # datasets/preferences (test.jsonl)
    parent_dir: Path | None = None  # the parent checkpoint
    judge: Callable[[list[str], list[str]], list[float]] | None = None  # loaded before the model

    def benchmark(self, name: str) -> list[dict]:
        """The first `limit` items of bench_dir's `name` set (every item where limit is None)."""
        records = load_benchmark(self.bench_dir, name)
        return records if self.limit is None else records[:self.limit]

    def test_pairs(self) -> list[dict]:
        """The first `limit` held-out preference pairs of pairs_dir (prompts no SFT row used)."""
        pairs = read_jsonl(Path(self.pairs_dir) / "test.jsonl")
        return pairs if self.limit is None else pairs[:self.limit]


@dataclass
class SetResult:
    """One set's share of the evaluate_checkpoint result, merged in registry order."""

    metrics: dict[str, Any] = field(default_factory=dict)  # -> result["metrics"] (flat; gates read it)
    counts: dict[str, int] = field(default_factory=dict)  # -> result["counts"]
    per_item: dict[str, Any] = field(default_factory=dict)  # metric -> harness._items(...): CIs, paired tests
    examples: list[dict] | None = None  # -> result["examples"][set name]; None: no entry
    extra: dict[str, Any] = field(default_factory=dict)  # top-level result keys ("safety", "win_rate", ...)
    summary: str = ""  # logged as "eval | <model> | <summary> | <seconds>s"
    lines: list[str] = field(default_factory=list)  # logged verbatim after the summary


@dataclass(frozen=True)
class EvalSet:
    # None = nothing to evaluate (e.g. no sample prompts): no timing, no log line.
    run: Callable[[EvalInputs], SetResult | None]
    needs: tuple[str, ...] = ()  # names from INPUTS; the set is skipped unless all are given
    limit: str | None = None  # the EvalConfig field sizing it per profile, passed as EvalInputs.limit
    # Runs only when `EvalConfig.sets` names it (the tool-use set: meaningless for a model never taught the
    # tools, and it generates ~200 replies); the eval asset adds it for the stages it is for.
    opt_in: bool = False


REGISTRY: dict[str, EvalSet] = {}
# Sets that only mean something for a pretrained model (ModelStage.base_model): chat stages skip them.
BASE_MODEL_SETS = ("long_context",)
# Sets that only mean something for a model trained to call tools (ModelStage.tools): opt-in, added for those.
TOOL_SETS = ("tool_use",)


def register(name: str, run: Callable[[EvalInputs], SetResult | None], needs: tuple[str, ...] = (),
             limit: str | None = None, opt_in: bool = False) -> EvalSet:
    """Add (or replace) set `name`; sets run in registration order."""
    unknown = sorted(set(needs) - set(INPUTS))
    if unknown:
        raise ValueError(f"eval set {name!r} needs unknown inputs {unknown}; valid: {', '.join(INPUTS)}")
    REGISTRY[name] = EvalSet(run, tuple(needs), limit, opt_in)
    return REGISTRY[name]


def _harness() -> ModuleType:
    from pipeline_assets.evals import harness  # torch: only once a set runs

    return harness


# ---------------------------------------------------------------------------------------------------------
# The sets


def val(x: EvalInputs) -> SetResult:
    out = _harness().eval_val(x.model, x.shards_dir, x.cfg, x.tok)
    metrics = {"val_loss": out["val_loss"], "val_bpb": out["val_bpb"], "unigram_val_bpb": out["unigram_val_bpb"]}
    for domain, row in out["val_by_domain"].items():  # the base's target gate reads each domain
        metrics[f"val_bpb/{domain}"] = row["val_bpb"]
        metrics[f"unigram_val_bpb/{domain}"] = row["unigram_bpb"]
    return SetResult(metrics, {"val_tokens": out["val_tokens"]}, out["items"],
                     extra={"val_by_domain": out["val_by_domain"]},
                     summary=f"val loss {out['val_loss']:.4f} | val bpb {out['val_bpb']} (unigram "
                             f"{out['unigram_val_bpb']}) | {out['val_tokens']:,} tokens, {out['val_bytes']:,} bytes | "
                             + " | ".join(f"{d} {r['val_bpb']}" for d, r in out["val_by_domain"].items()))


def moe_routing(x: EvalInputs) -> SetResult | None:
    """Expert load and router entropy per layer (evals/routing.py); None for a dense model."""
    from pipeline_assets.evals import routing

    if not routing.is_moe(x.model):
        return None
    seq_len = min(x.cfg.val_seq_len, int(x.model.config.max_position_embeddings))
    windows = routing.val_windows(x.shards_dir, seq_len, (x.limit or 1) * x.cfg.batch_size)
    out = routing.routing_stats(x.model, windows, x.cfg.batch_size)
    metrics = {"moe_aux_loss": out["aux_loss"], "moe_load_max_over_mean": out["max_over_mean"],
               "moe_load_cv": out["cv"], "moe_dead_experts": out["dead_experts"],
               "moe_router_entropy": out["router_entropy"]}
    return SetResult(metrics, {"moe_routing_tokens": out["tokens"]}, extra={"moe_routing": out},
                     summary=f"moe routing | {out['num_experts']} experts top-{out['top_k']} | aux {out['aux_loss']} "
                             f"(balanced ~{out['top_k']}) | load max/mean {out['max_over_mean']} | cv {out['cv']} | "
                             f"dead {out['dead_experts']} | entropy {out['router_entropy']}")


def long_context(x: EvalInputs) -> SetResult:
    """Loss by position and passkey retrieval at 1x, 2x and 4x the base context (evals/long_context.py)."""
    from pipeline_assets.evals import long_context as lc

    context = lc.base_context(x.model.config)
    stream = lc.val_stream(x.shards_dir)
    loss = lc.loss_by_position(x.model, stream, context, x.cfg.long_context_windows, x.cfg.batch_size)
    keys = lc.passkey_retrieval(x.model, x.tok, stream, context, x.limit or 1)
    metrics = {**keys["accuracy"], **{f"long_loss_{k}": v for k, v in loss["buckets"].items()}}
    windows = [f"long-window-{i}" for i in range(loss["windows"])]
    items = {**{k: _harness()._items("passkey", v["ids"], v["scores"]) for k, v in keys["items"].items()},
             **{f"long_loss_{k}": _harness()._items("long_context", windows, v) for k, v in loss["items"].items()}}
    extra = {"base_context": context, **{k: v for k, v in loss.items() if k != "items"}}
    return SetResult(metrics, {"passkey_per_length": x.limit or 1, "long_context_windows": loss["windows"]},
                     items, keys["examples"], extra={"long_context": extra},
                     summary=f"long context (base {context}) | loss by position "
                             + " ".join(f"{k} {v:.3f}" for k, v in loss["buckets"].items()) + " | passkey "
                             + " ".join(f"{k.removeprefix('passkey_')} {v:.2f}" for k, v in keys["accuracy"].items()))


def tool_use(x: EvalInputs) -> SetResult:
    """Calls and answers through the tool loop, with vs without the tools offered (evals/tool_use.py)."""
    from pipeline_assets.evals.tool_use import evaluate_tool_use

    out = evaluate_tool_use(x.model, x.tok, x.limit or 1, x.bench_dir, x.cfg.max_new_tokens, x.cfg.batch_size)
    m = out["metrics"]
    items = {k: _harness()._items("tool_use", ids, scores) for k, (ids, scores) in out["items"].items()}
    return SetResult(m, out["counts"], items, out["examples"],
                     extra={"tool_use": {k: out[k] for k in ("call_accuracy_by_kind", "tokens_per_query")}},
                     summary=f"tool use | answers with tools {m['tool_answer_accuracy']:.3f} vs without "
                             f"{m['no_tool_answer_accuracy']:.3f} | parse {m['tool_parse_rate']:.2f} name "
                             f"{m['tool_name_accuracy']:.2f} call {m['tool_call_accuracy']:.2f} no-call "
                             f"{m['tool_no_call_accuracy']:.2f}")


def multiple_choice(x: EvalInputs) -> SetResult:
    records = x.benchmark("multiple_choice")
    out = _harness().eval_multiple_choice(x.model, x.tok, records, x.cfg)
    return SetResult({"mc_accuracy": out["mc_accuracy"], "mc_accuracy_norm": out["mc_accuracy_norm"]},
                     {"multiple_choice": len(records)}, out["items"], out["examples"],
                     summary=f"multiple_choice acc {out['mc_accuracy']} acc_norm {out['mc_accuracy_norm']} "
                             f"| {len(records)} items")


def arithmetic(x: EvalInputs) -> SetResult:
    records = x.benchmark("arithmetic")
    out = _harness().eval_arithmetic(x.model, x.tok, records, x.cfg)
    return SetResult({"arithmetic_accuracy": out["arithmetic_accuracy"]}, {"arithmetic": len(records)},
                     out["items"], out["examples"],
                     summary=f"arithmetic exact match {out['arithmetic_accuracy']} | {len(records)} items")


def qa(x: EvalInputs) -> SetResult:
    records = x.benchmark("qa")
    out = _harness().eval_qa(x.model, x.tok, records, x.cfg)
    return SetResult({"qa_f1": out["qa_f1"], "qa_rouge_l": out["qa_rouge_l"]}, {"qa": len(records)}, out["items"],
                     out["examples"], summary=f"qa token-F1 {out['qa_f1']} ROUGE-L {out['qa_rouge_l']} | "
                                              f"{len(records)} items")


def safety(x: EvalInputs) -> SetResult:
    h = _harness()
    records = balanced_subset(load_benchmark(x.bench_dir, "safety"), x.limit)
    generated: list[str] = []

    def generate(prompts: list[str]) -> list[str]:
        # Kept for the per-item refusals: evaluate_safety returns only the rates.
        out = h.chat_generate(x.model, x.tok, prompts, x.cfg.max_new_tokens, batch_size=x.cfg.batch_size)
        generated.extend(out)
        return out

    out = evaluate_safety(generate, records, x.cfg.adversarial_per_prompt)
    return SetResult(
        {"safety_refusal_rate": out["refusal_rate"], "safety_over_refusal_rate": out["over_refusal_rate"],
         "safety_adversarial_refusal_rate": out["adversarial_refusal_rate"]},
        {"safety_harmful": out["harmful"], "safety_benign": out["benign"], "safety_adversarial": out["adversarial"]},
        h.safety_items(records, x.cfg.adversarial_per_prompt, generated), extra={"safety": out},
        summary=f"safety refusal {out['refusal_rate']} | over-refusal {out['over_refusal_rate']} | "
                f"adversarial refusal {out['adversarial_refusal_rate']}")


def preference(x: EvalInputs) -> SetResult:
    pairs = x.test_pairs()
    out = _harness().eval_preference_pairs(x.model, x.tok, pairs, x.cfg)
    return SetResult({"preference_pair_accuracy": out["preference_pair_accuracy"],
                      "preference_logp_margin": out["preference_logp_margin"]}, {"preference": len(pairs)},
                     out["items"], summary=f"held-out preference pair accuracy {out['preference_pair_accuracy']} "
                                           f"| {len(pairs)} pairs")


def win_rate(x: EvalInputs) -> SetResult:
    from pipeline_assets.evals.config import INSTRUCTION_PROMPTS

    h = _harness()
    prompts, prompt_ids = list(INSTRUCTION_PROMPTS[:x.cfg.win_rate_limit]), None
    if x.pairs_dir is not None:
        # In-domain: the held-out preference prompts (no SFT row used them), the distribution RLHF and
        # the reward model were trained on; the reward-hacking gate reads the judge's score here.
        held = x.test_pairs()
        prompts = [pair["prompt"][-1]["content"] for pair in held]
        prompt_ids = [str(pair["id"]) for pair in held]
    ours = h.chat_generate(x.model, x.tok, prompts, x.cfg.max_new_tokens, batch_size=x.cfg.batch_size)
    parent_model, parent_tok = h.load_checkpoint(x.parent_dir, x.device)
    theirs = h.chat_generate(parent_model, parent_tok, prompts, x.cfg.max_new_tokens, batch_size=x.cfg.batch_size)
    del parent_model
    out = h.win_rate(x.judge, prompts, ours, theirs, prompt_ids)
    out["prompts"] = "test_preferences" if prompt_ids else "instructions"
    metrics = {"win_rate_vs_parent": out["win_rate"]}
    if out["score_mean"] is not None:
        metrics["reward_score_delta_vs_parent"] = round(out["score_mean"] - out["parent_score_mean"], 6)
    return SetResult(metrics, {"win_rate": out["n"]}, out["items"],
                     extra={"win_rate": out, "parent_dir": str(h.find_model_dir(x.parent_dir))},
                     summary=f"win rate vs parent {out['win_rate']} (W{out['wins']} T{out['ties']} L{out['losses']} "
                             f"on {out['n']} {out['prompts']} prompts) | reward-model score {out['score_mean']} vs "
                             f"parent {out['parent_score_mean']}")


def samples(x: EvalInputs) -> SetResult | None:
    if not x.cfg.sample_prompts:
        return None
    completions = _harness().chat_generate(x.model, x.tok, list(x.cfg.sample_prompts), x.cfg.max_new_tokens,
                                           batch_size=x.cfg.batch_size)
    rows = [{"prompt": p, "completion": c} for p, c in zip(x.cfg.sample_prompts, completions, strict=True)]
    return SetResult(extra={"samples": rows}, summary=f"samples | {len(rows)} prompts",
                     lines=[f"sample | {s['prompt']!r} -> {s['completion'][:120]!r}" for s in rows])


register("val", val, needs=("shards_dir",), limit="val_batches")  # eval_val reads it with batch_size, val_seq_len
register("moe_routing", moe_routing, needs=("shards_dir",), limit="val_batches")
register("long_context", long_context, needs=("shards_dir",), limit="passkey_per_length")  # base models only
register("tool_use", tool_use, limit="tool_use_limit", opt_in=True)  # tool-use stages only (TOOL_SETS)
register("multiple_choice", multiple_choice, limit="multiple_choice_limit")
register("arithmetic", arithmetic, limit="arithmetic_limit")
register("qa", qa, limit="qa_limit")
register("safety", safety, limit="safety_limit")  # balanced: half harmful, half benign
register("preference", preference, needs=("pairs_dir",), limit="preference_limit")
# The judge scores both sides; without pairs_dir the prompts are INSTRUCTION_PROMPTS[:cfg.win_rate_limit].
register("win_rate", win_rate, needs=("parent_dir", "judge"), limit="win_rate_test_limit")
register("samples", samples)  # cfg.sample_prompts
