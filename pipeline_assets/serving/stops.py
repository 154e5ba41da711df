"""OpenAI's ``stop``: the reply ends before the first stop sequence, which is not returned. transformers 5.23
stops generation on ``stop_strings`` but keeps the sequence in the text; these cut it, in whole responses and
in streams (holding back a tail that may be the start of a stop sequence until the next chunk decides)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any


def cut_at_stop(text: str, stops: list[str]) -> tuple[str, bool]:
    cuts = [text.find(s) for s in stops if s in text]
    return (text[:min(cuts)], True) if cuts else (text, False)


def _held(text: str, stops: list[str]) -> int:
    """Length of the longest tail of ``text`` that is a proper prefix of a stop sequence."""
    return max((k for s in stops for k in range(1, len(s)) if text.endswith(s[:k])), default=0)


def _text_of(choice: dict, chat: bool) -> str | None:
    return (choice.get("delta") or {}).get("content") if chat else choice.get("text")


def _set_text(choice: dict, chat: bool, text: str) -> None:
    if chat:
        choice.setdefault("delta", {})["content"] = text
    else:
        choice["text"] = text


def cut_response(data: dict[str, Any], stops: list[str], chat: bool) -> dict[str, Any]:
    for choice in data.get("choices", []):
        if chat:
            message = choice.get("message") or {}
            text, hit = cut_at_stop(message.get("content") or "", stops)
            if hit:
                message["content"] = text
        else:
            choice["text"], hit = cut_at_stop(choice.get("text") or "", stops)
        if hit:
            choice["finish_reason"] = "stop"
    return data


async def cut_stream(events: AsyncIterator[str], stops: list[str], chat: bool) -> AsyncIterator[str]:
    """The SSE stream with the text cut at the first stop sequence; the generation behind it is cancelled then
    (closing the handler's generator cancels its streamer)."""
    seen, sent = "", 0
    async for part in events:
        out = []
        for event in part.split("\n\n"):
            if not event.startswith("data: "):
                continue
            try:
                chunk = json.loads(event[len("data: "):])
            except json.JSONDecodeError:
                out.append(event)
                continue
            choice = (chunk.get("choices") or [None])[0]
            text = _text_of(choice, chat) if choice else None
            if text:
                seen += text
                cut, hit = cut_at_stop(seen, stops)
                end = len(cut) if hit else len(seen) - _held(seen, stops)
                _set_text(choice, chat, seen[sent:end])
                sent = max(sent, end)
                if hit:
                    choice["finish_reason"] = "stop"
                    out.append("data: " + json.dumps(chunk))
                    yield "".join(e + "\n\n" for e in out) + "data: [DONE]\n\n"
                    await events.aclose()
                    return
            elif choice and choice.get("finish_reason") and sent < len(seen):
                _set_text(choice, chat, seen[sent:])  # the end came with a held tail that never became a stop
                sent = len(seen)
            out.append("data: " + json.dumps(chunk))
        if out:
            yield "".join(e + "\n\n" for e in out)
