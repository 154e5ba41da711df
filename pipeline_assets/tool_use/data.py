"""datasets/tool_use: chat rows in TRL's `messages` + `tools` format that teach when and how to call a tool.

Each tool row is a whole exchange, run for real: the user's question, the assistant's `tool_calls`, the
tool's result (`call_tool`, the same function the chat CLI and the eval execute) and the final answer built
from that result. Beside them, rows where the tools are offered but none applies (SFT rows answered
directly: small sums, refusals, identity) and plain SFT rows without tools, so the model keeps answering
when no tool is offered. Held out: the tool problems' test/dev splits (tasks/tool_problems.py), the
HELDOUT_MODULES docstrings (lookup rows ask about the SFT modules only) and everything datasets/sft holds out.
Beside the rows, datasets/sft's dev sums (DEV_FILE): models/tool_use checks on them that it keeps its parent's
arithmetic while it learns the tools.

Arguments are stored as JSON strings and `tools` as one JSON string per row: Arrow would otherwise merge the
argument keys of every tool into one struct (`{"expression": ..., "code": None, "name": None}`); the chat
template writes string arguments as they are and TRL decodes a string `tools` column.
"""

from __future__ import annotations

import json
import random
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from pipeline_assets.jsonl import read_jsonl, write_jsonl
from pipeline_assets.posttrain.data import DEV_FILE, DOCSTRING_MODULES, SFT_FILE, docstring_items, docstring_question
from pipeline_assets.tasks.tool_problems import DIGIT_SUM, MULTIPLY, answer_text, problems
from pipeline_assets.tool_use.tools import LOOKUP, call_tool, tool_schemas

TOOL_USE_FILE = "tool_use.jsonl"
# SFT kinds answered directly when tools are offered (docstring questions are lookups once a tool exists).
NO_CALL_KINDS = ("arithmetic", "word_problem", "refusal", "benign", "identity")


@dataclass(frozen=True)
class ToolDataConfig:
    """Used by: datasets/tool_use. Defaults = the tiny profile."""

    multiply: int = 1200  # calculator rows (3-digit x 3-digit products)
    digit_sum: int = 300  # python rows
    lookup: int = 300  # lookup rows (docstrings of the SFT modules)
    no_call: int = 400  # SFT rows with the tools offered and no call made
    plain: int = 400  # SFT rows without tools
    seed: int = 0

    def validate(self) -> None:
        for name in ("multiply", "digit_sum", "lookup", "no_call", "plain"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 0:
                raise ValueError(f"ToolDataConfig.{name}={value!r} must be an int >= 0")
        if self.multiply + self.digit_sum + self.lookup == 0:
            raise ValueError("ToolDataConfig: no tool rows (multiply + digit_sum + lookup = 0); nothing to learn")


def tool_row(prompt: str, tool: str, arguments: dict[str, str], answer: str | None, kind: str,
             tools_json: str) -> dict[str, Any]:
    """One exchange: question, call, the tool's real result, then `answer` (None: the result itself)."""
    call = {"type": "function", "function": {"name": tool, "arguments": json.dumps(arguments)}}
    result = call_tool(call)
    if result.startswith("error:"):
        raise AssertionError(f"{kind} row {prompt!r}: its own call failed: {result}")
    return {"messages": [{"role": "user", "content": prompt},
                         {"role": "assistant", "content": "", "tool_calls": [call]},
                         {"role": "tool", "name": tool, "content": result},
                         {"role": "assistant", "content": answer if answer is not None else result}],
            "tools": tools_json, "kind": kind}


def build_tool_dataset(out_dir: Path, cfg: ToolDataConfig, sft_data: Path) -> dict[str, Any]:
    """Write tool_use.jsonl into `out_dir` from the tool problems' train split and datasets/sft's train rows."""
    cfg.validate()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rng = random.Random(f"{cfg.seed}:tool_use")
    tools_json = json.dumps(tool_schemas())
    calls = [(p["prompt"], p["tool"], p["arguments"], answer_text(p["answer"]), kind)
             for kind, n in ((MULTIPLY, cfg.multiply), (DIGIT_SUM, cfg.digit_sum))
             for p in problems(kind, "train", n, cfg.seed)]
    docs = docstring_items(DOCSTRING_MODULES)
    rng.shuffle(docs)
    calls += [(docstring_question(module, name), LOOKUP, {"name": f"{module}.{name}"}, None, LOOKUP)
              for module, name, _ in docs[:cfg.lookup]]
    # Threads: each python call is a ~40 ms sandbox subprocess (300 of them took 12 s one at a time).
    with ThreadPoolExecutor(max_workers=4) as pool:
        rows: list[dict[str, Any]] = list(pool.map(lambda c: tool_row(*c, tools_json), calls))
    sft = read_jsonl(Path(sft_data) / SFT_FILE)
    rng.shuffle(sft)
    direct = [r for r in sft if r["kind"] in NO_CALL_KINDS]
    if len(direct) < cfg.no_call or len(sft) < cfg.plain:
        raise ValueError(f"datasets/sft has {len(direct)} rows of {NO_CALL_KINDS} and {len(sft)} in all; "
                         f"ToolDataConfig asks for no_call={cfg.no_call}, plain={cfg.plain}")
    rows += [{"messages": r["messages"], "tools": tools_json, "kind": f"no_call_{r['kind']}"}
             for r in direct[:cfg.no_call]]
    rows += [{"messages": r["messages"], "tools": "[]", "kind": f"plain_{r['kind']}"}
             for r in sft[len(sft) - cfg.plain:]]
    rng.shuffle(rows)
    sha = write_jsonl(out_dir / TOOL_USE_FILE, rows)
    dev_sha = write_jsonl(out_dir / DEV_FILE, read_jsonl(Path(sft_data) / DEV_FILE))
    counts = Counter(r["kind"] for r in rows)
    return {"rows": len(rows), "counts": dict(sorted(counts.items())), "tools": [t["function"]["name"] for t in
                                                                             tool_schemas()],
            "files": {name: str(out_dir / name) for name in (TOOL_USE_FILE, DEV_FILE)},
            "sha256": {TOOL_USE_FILE: sha, DEV_FILE: dev_sha}, "config": asdict(cfg)}


def heldout_leaks(rows: list[dict[str, Any]]) -> list[str]:
    """Prompts of `rows` that an eval holds out: a tool problem outside the train split or a lookup of a
    HELDOUT_MODULES object (datasets/tool_use's blocking check re-reads the written file with this)."""
    from pipeline_assets.tasks.heldout import HELDOUT_MODULES
    from pipeline_assets.tasks.tool_problems import problem_split

    leaks = []
    for row in rows:
        prompt = row["messages"][0]["content"]
        if row["kind"] in (MULTIPLY, DIGIT_SUM) and problem_split(prompt) != "train":
            leaks.append(prompt)
        elif row["kind"] == LOOKUP and prompt.split("`")[1].split(".")[0] in HELDOUT_MODULES:
            leaks.append(prompt)
    return leaks
