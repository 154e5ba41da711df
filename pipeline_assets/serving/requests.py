"""The checks ``llmdag serve`` makes on a request before transformers' handlers see it.

transformers serve 5.23 answers a malformed body, an unknown role or a prompt past the context with a 500 or
a generation error; these turn each into a 4xx with a message an OpenAI client shows (``error.message``).
"""

from __future__ import annotations

import json
from typing import Any

ROLES = ("system", "user", "assistant", "tool", "developer")


class RequestError(Exception):
    """A request the server refuses: its HTTP status, a message for the user and the offending field."""

    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code

    def payload(self) -> dict[str, Any]:
        kind = "invalid_request_error" if self.status < 500 else "server_error"
        return {"error": {"message": self.message, "type": kind, "param": self.param, "code": self.code}}


def parse_body(raw: bytes, limit: int) -> dict[str, Any]:
    if len(raw) > limit:
        raise RequestError(413, f"request body is {len(raw):,} bytes; this server takes at most {limit:,}",
                           code="request_too_large")
    try:
        body = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise RequestError(400, f"the body is not valid JSON: {err}", code="invalid_json") from None
    if not isinstance(body, dict):
        raise RequestError(400, f"the body must be a JSON object, got {type(body).__name__}", code="invalid_json")
    return body


def _number(body: dict, name: str, low: float, high: float, integer: bool = False) -> None:
    value = body.get(name)
    if value is None:
        return
    kind = int if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kind) or not low <= value <= high:
        what = "an integer" if integer else "a number"
        raise RequestError(400, f"{name}={value!r}: must be {what} in [{low}, {high}]", param=name)


def check_sampling(body: dict, max_n: int) -> None:
    """temperature, top_p, max_tokens, n, seed and stop, as the OpenAI API bounds them."""
    _number(body, "temperature", 0, 2)
    _number(body, "top_p", 0, 1)
    _number(body, "frequency_penalty", -2, 2)
    for name in ("max_tokens", "max_completion_tokens"):
        _number(body, name, 1, 1 << 20, integer=True)
    _number(body, "n", 1, max_n, integer=True)
    _number(body, "seed", -(1 << 63), (1 << 64) - 1, integer=True)
    stop = body.get("stop")
    if stop is not None:
        stops = [stop] if isinstance(stop, str) else stop
        if not isinstance(stops, list) or not 1 <= len(stops) <= 4 or \
                not all(isinstance(s, str) and s for s in stops):
            raise RequestError(400, "stop must be a non-empty string or a list of 1-4 of them", param="stop")
    if body.get("stream") and (body.get("n") or 1) > 1:
        raise RequestError(400, "n > 1 is served without stream; stream one choice per request", param="n")


def check_messages(body: dict) -> None:
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise RequestError(400, "messages must be a non-empty list of {role, content}", param="messages")
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or message.get("role") not in ROLES:
            raise RequestError(400, f"messages[{i}] needs a role in {ROLES}", param=f"messages[{i}]")
        content = message.get("content")
        if isinstance(content, list):
            if not all(isinstance(p, dict) and isinstance(p.get("type"), str) for p in content):
                raise RequestError(400, f"messages[{i}].content parts need a type", param=f"messages[{i}]")
        elif content is not None and not isinstance(content, str):
            raise RequestError(400, f"messages[{i}].content must be a string or a list of parts",
                               param=f"messages[{i}]")
        elif content is None and not message.get("tool_calls"):
            raise RequestError(400, f"messages[{i}] has no content", param=f"messages[{i}]")
    tools = body.get("tools")
    if tools is not None and (not isinstance(tools, list) or not all(
            isinstance(t, dict) and isinstance(t.get("function"), dict) and t["function"].get("name")
            for t in tools)):
        raise RequestError(400, "tools must be a list of {type: function, function: {name, parameters}}",
                           param="tools")


def fit_max_tokens(body: dict, prompt_tokens: int, context: int, default: int) -> int:
    """The completion budget: what the request asks for, or ``default`` clipped to the context left. A prompt
    that leaves no room, or an explicit ask past the context, is refused (as the OpenAI API does)."""
    asked = body.get("max_completion_tokens") or body.get("max_tokens")
    left = context - prompt_tokens
    if left < 1:
        raise RequestError(400, f"the prompt is {prompt_tokens} tokens; this model's context is {context} tokens",
                           param="messages", code="context_length_exceeded")
    if asked is not None and asked > left:
        raise RequestError(400, f"{prompt_tokens} prompt tokens + max_tokens {asked} exceed this model's context "
                           f"of {context} tokens; ask for at most {left}", param="max_tokens",
                           code="context_length_exceeded")
    return asked if asked is not None else min(default, left)
