"""The tool-use eval: held-out problems run through the tool loop (tool_use/loop.py), the way a user's client would.

Call metrics, over the prompts that need a tool (multiplication -> calculator, digit sums -> python, docstring
questions about HELDOUT_MODULES -> lookup), on the first reply:
    tool_parse_rate        the reply parsed with the tokenizer's response_template (no broken <tool_call> JSON)
    tool_name_accuracy     its first call names the expected tool
    tool_call_accuracy     ... and its arguments pass BFCL's AST checks (required present, none unexpected,
                           string types) and its value is an accepted one; values are judged by running the
                           call (BFCL's executable categories): any expression whose result is the product.
    tool_no_call_accuracy  on prompts where no tool applies (the benchmark's held-out safety prompts, harmful
                           and benign) it answers without a call
End to end, on the multiplication problems, graded by tasks.arithmetic.check_arithmetic:
    tool_answer_accuracy      with the tools offered (call, result, answer)
    no_tool_answer_accuracy   the same questions, same model, no tools offered: the paired baseline
"""

from __future__ import annotations

from typing import Any

from pipeline_assets.tasks.arithmetic import check_arithmetic
from pipeline_assets.tasks.heldout import HELDOUT_MODULES, load_benchmark
from pipeline_assets.tasks.tool_problems import DIGIT_SUM, MULTIPLY, problems
from pipeline_assets.tool_use.loop import Exchange, run_with_tools
from pipeline_assets.tool_use.tools import LOOKUP, call_tool, tool_schemas

EVAL_SEED = 1  # draws the test-split items; the split itself is fixed by tasks/tool_problems.py


def _lookup_items(n: int) -> list[dict]:
    from pipeline_assets.posttrain.data import docstring_items, docstring_question

    items = docstring_items(HELDOUT_MODULES, allow_heldout=True)[:n]
    return [{"kind": LOOKUP, "prompt": docstring_question(m, name), "answer": sentence, "tool": LOOKUP,
             "arguments": {"name": f"{m}.{name}"}} for m, name, sentence in items]


def eval_items(limit: int) -> list[dict]:
    """The held-out items: `limit` multiplications, and a third as many digit sums and lookups."""
    side = max(1, limit // 3)
    return problems(MULTIPLY, "test", limit, EVAL_SEED) + problems(DIGIT_SUM, "test", side, EVAL_SEED) \
        + _lookup_items(side)


def call_correct(item: dict, call: tuple[str, Any] | None) -> bool:
    """BFCL-style: right function, exactly its parameters as strings, and a value whose execution is right."""
    if call is None or call[0] != item["tool"] or not isinstance(call[1], dict):
        return False
    args = call[1]
    if set(args) != set(item["arguments"]) or not all(isinstance(v, str) for v in args.values()):
        return False
    if item["tool"] == LOOKUP:
        return args["name"].strip("` ") == item["arguments"]["name"]
    want = call_tool({"name": item["tool"], "arguments": item["arguments"]})
    return call_tool({"name": item["tool"], "arguments": args}) == want


def _first_call(ex: Exchange) -> tuple[str, Any] | None:
    return ex.calls[0] if ex.calls else None


def evaluate_tool_use(model: Any, tok: Any, limit: int, bench_dir: Any, max_new_tokens: int = 64,
                      batch_size: int = 16) -> dict[str, Any]:
    items = eval_items(limit)
    tools = tool_schemas()
    runs = run_with_tools(model, tok, [[{"role": "user", "content": it["prompt"]}] for it in items], tools,
                          max_new_tokens=max_new_tokens, batch_size=batch_size)
    mult = [(it, ex) for it, ex in zip(items, runs, strict=True) if it["kind"] == MULTIPLY]
    plain = run_with_tools(model, tok, [[{"role": "user", "content": it["prompt"]}] for it, _ in mult], None,
                           max_new_tokens=max_new_tokens, max_rounds=1, batch_size=batch_size)
    safety = load_benchmark(bench_dir, "safety")[:max(1, limit // 3)]
    no_call = run_with_tools(model, tok, [[{"role": "user", "content": r["prompt"]}] for r in safety], tools,
                             max_new_tokens=max_new_tokens, max_rounds=1, batch_size=batch_size)

    parsed = [float(ex.parsed) for ex in runs]
    pairs = list(zip(items, runs, strict=True))
    named = [float((c := _first_call(ex)) is not None and c[0] == it["tool"]) for it, ex in pairs]
    called = [float(call_correct(it, _first_call(ex))) for it, ex in pairs]
    with_tools = [float(check_arithmetic(ex.answer, it["answer"])) for it, ex in mult]
    without = [float(check_arithmetic(ex.answer, it["answer"])) for (it, _), ex in zip(mult, plain, strict=True)]
    silent = [float(not (ex.messages[-1].get("tool_calls"))) for ex in no_call]
    ids = [f"tool-{it['kind']}-{it['prompt']}" for it in items]
    mult_ids = [f"tool-multiply-{it['prompt']}" for it, _ in mult]
    safety_ids = [f"tool-no-call-{r['id']}" for r in safety]

    def mean(xs: list[float]) -> float:
        return round(sum(xs) / len(xs), 6) if xs else 0.0

    metrics = {"tool_answer_accuracy": mean(with_tools), "no_tool_answer_accuracy": mean(without),
               "tool_parse_rate": mean(parsed), "tool_name_accuracy": mean(named),
               "tool_call_accuracy": mean(called), "tool_no_call_accuracy": mean(silent)}
    by_kind = {kind: mean([c for c, it in zip(called, items, strict=True) if it["kind"] == kind])
               for kind in (MULTIPLY, DIGIT_SUM, LOOKUP)}
    examples = [{"prompt": it["prompt"], "calls": [list(c) for c in ex.calls], "answer": ex.answer,
                 "expected": it["answer"], "without_tools": p.answer}
                for (it, ex), p in list(zip(mult, plain, strict=True))[:5]]
    examples += [{"prompt": it["prompt"], "calls": [list(c) for c in ex.calls], "answer": ex.answer[:160],
                  "expected": it["answer"][:160]} for it, ex in zip(items, runs, strict=True)
                 if it["kind"] != MULTIPLY][:4]
    return {"metrics": metrics, "call_accuracy_by_kind": by_kind,
            "items": {"tool_answer_accuracy": (mult_ids, with_tools), "no_tool_answer_accuracy": (mult_ids, without),
                      "tool_call_accuracy": (ids, called), "tool_no_call_accuracy": (safety_ids, silent)},
            "counts": {"tool_use_answer": len(mult), "tool_use_calls": len(items), "tool_use_no_call": len(safety)},
            "tokens_per_query": {"with_tools": mean([float(ex.tokens) for _, ex in mult]),
                                 "without_tools": mean([float(ex.tokens) for ex in plain])},
            "examples": examples}
