"""The tool loop: generate, parse the reply with the tokenizer's `response_template`, run the calls, append
the results as `tool` turns and generate again, for a batch of conversations at once. The eval and the chat
CLI both run this loop, so what is measured is what a user gets.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from pipeline_assets.model_io import cut_at_eos, generate_ids
from pipeline_assets.tool_use.tools import TOOLS, call_arguments, call_tool


@dataclass
class Exchange:
    """One conversation run through the loop."""

    messages: list[dict[str, Any]]  # the input conversation plus every generated and tool turn
    calls: list[tuple[str, Any]] = field(default_factory=list)  # (name, arguments) of each call made, in order
    parsed: bool = True  # every reply parsed (a malformed <tool_call> JSON makes it False)
    tokens: int = 0  # tokens generated over all rounds

    @property
    def answer(self) -> str:
        """The last assistant turn's text."""
        last = next((m for m in reversed(self.messages) if m["role"] == "assistant"), None)
        return (last or {}).get("content") or ""


def parse_reply(tok: Any, text: str, prompt: str, tools: Sequence[dict] | None) -> tuple[dict[str, Any], bool]:
    """The reply as a message dict and whether it parsed; unparsable text stays plain content."""
    try:
        message = tok.parse_response(text, prefix=prompt, tools=list(tools) if tools else None)
    except Exception as exc:  # noqa: BLE001 - model output that does not parse is a parse failure, not a crash
        return {"role": "assistant", "content": text, "parse_error": str(exc)[:200]}, False
    message.setdefault("content", "")
    calls = message.get("tool_calls") or []
    if not all(_well_formed(call) for call in calls):  # e.g. {"name": "calculator"} with no arguments
        return {"role": "assistant", "content": text, "parse_error": f"malformed tool call in {calls!r}"[:200]}, False
    return message, True


def _well_formed(call: Any) -> bool:
    fn = call.get("function") if isinstance(call, dict) else None
    return isinstance(fn, dict) and isinstance(fn.get("name"), str) and isinstance(fn.get("arguments"), dict | str)


def run_with_tools(model: Any, tok: Any, conversations: Sequence[list[dict[str, Any]]],
                   tools: Sequence[dict] | None, max_new_tokens: int = 64, max_rounds: int = 2,
                   batch_size: int = 32, allowed: tuple[str, ...] = tuple(TOOLS),
                   do_sample: bool = False, temperature: float = 1.0) -> list[Exchange]:
    """Each conversation answered with `tools` offered (None: none), calling them for at most `max_rounds - 1`
    rounds; the last round's reply is final whatever it holds."""
    exchanges = [Exchange([dict(m) for m in conv]) for conv in conversations]
    pending = list(range(len(exchanges)))
    for round_ in range(max_rounds):
        if not pending:
            break
        prompts = [tok.apply_chat_template(exchanges[i].messages, tools=list(tools) if tools else None,
                                           tokenize=False, add_generation_prompt=True) for i in pending]
        rows = generate_ids(model, tok, prompts, max_new_tokens, do_sample=do_sample, temperature=temperature,
                            batch_size=batch_size)
        still = []
        for i, prompt, row in zip(pending, prompts, rows, strict=True):
            ids, stopped = cut_at_eos(tok, row)
            ex = exchanges[i]
            ex.tokens += len(ids) + stopped
            message, ok = parse_reply(tok, tok.decode(ids, skip_special_tokens=True), prompt, tools)
            ex.parsed &= ok
            calls = message.get("tool_calls") or []
            ex.messages.append(message)
            if not calls or round_ == max_rounds - 1:
                continue
            for call in calls:
                name, args = call_arguments(call)
                ex.calls.append((name, args))
                ex.messages.append({"role": "tool", "name": name, "content": call_tool(call, allowed)})
            still.append(i)
        pending = still
    return exchanges
