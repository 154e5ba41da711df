"""The arena behind ``/arena``: one prompt, two anonymized replies from two served checkpoints in random order,
a vote (A / B / tie / both bad) appended to ``<artifact root>/arena/votes.jsonl`` (arena_votes.py), and only
then the names. The votes become datasets/human_preferences and evals/arena."""

from __future__ import annotations

import asyncio
import json
import random
import uuid
from collections import OrderedDict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pipeline_assets.arena_votes import CHOICES, append_vote
from pipeline_assets.serving.requests import RequestError
from pipeline_assets.serving.server import Server

MAX_PENDING = 1000  # pairs shown and not voted on yet; the oldest is forgotten past this
MAX_TOKENS = 64  # per reply: the tiny models' answers are a few tokens, a chat turn fits easily


def heldout_prompts(root: Path, profile: str) -> list[str]:
    """The user turns of datasets/preferences' held-out split: prompts the reward model and DPO never train on,
    so a vote on them lands in the held-out split again (the split is a hash of the prompt)."""
    test = Path(root) / "datasets" / "preferences" / "_" / profile / "current" / "test.jsonl"
    if not test.is_file():
        return []
    prompts = []
    for line in test.read_text(encoding="utf-8").splitlines():
        try:
            prompts.append(json.loads(line)["prompt"][-1]["content"])
        except (ValueError, KeyError, IndexError, TypeError):
            continue
    return sorted(set(prompts))


class Arena:
    def __init__(self, server: Server, votes: Path, prompts: list[str], seed: int | None = None) -> None:
        self.server, self.votes, self.prompts = server, votes, prompts
        self.rng = random.Random(seed)
        self.pending: OrderedDict[str, dict[str, Any]] = OrderedDict()

    def _reply_of(self, response: Any) -> str:
        return json.loads(response.body)["choices"][0]["message"]["content"] or ""

    async def pair(self, prompt: str | None) -> dict[str, Any]:
        names = list(self.server.models)
        if len(names) < 2:
            raise RequestError(409, f"the arena compares two checkpoints; this server serves {names}: start it "
                               "with two or more, e.g. `llmdag serve grpo sft`", code="arena_needs_two_models")
        prompt = (prompt or "").strip()
        if not prompt:
            if not self.prompts:
                raise RequestError(400, "type a prompt (no held-out prompt set here: materialize "
                                   "datasets/preferences for one)", param="prompt")
            prompt = self.rng.choice(self.prompts)
        a, b = self.rng.sample(names, 2)
        ask = [{"role": "user", "content": prompt}]
        replies = await asyncio.gather(*[self.server.chat_completion(
            {"model": name, "messages": ask, "temperature": 0, "max_tokens": MAX_TOKENS}, f"arena-{name}")
            for name in (a, b)])
        pair_id = uuid.uuid4().hex
        self.pending[pair_id] = {"prompt": prompt, "a": a, "b": b, "response_a": self._reply_of(replies[0]),
                                 "response_b": self._reply_of(replies[1])}
        while len(self.pending) > MAX_PENDING:
            self.pending.popitem(last=False)
        shown = self.pending[pair_id]
        return {"pair_id": pair_id, "prompt": prompt, "response_a": shown["response_a"],
                "response_b": shown["response_b"]}

    def _model(self, name: str) -> dict[str, str]:
        path = self.server.models[name].path
        return {"name": name, "path": str(path), "version": path.resolve().name}

    def vote(self, pair_id: Any, choice: Any) -> dict[str, Any]:
        if choice not in CHOICES:
            raise RequestError(400, f"choice must be one of {CHOICES}", param="choice")
        shown = self.pending.pop(pair_id, None) if isinstance(pair_id, str) else None
        if shown is None:
            raise RequestError(404, "unknown pair, or its vote is already recorded: ask for a new pair",
                               param="pair_id")
        record = {"id": pair_id, "time": datetime.now(UTC).isoformat(timespec="seconds"),
                  "prompt": shown["prompt"], "choice": choice, "model_a": self._model(shown["a"]),
                  "model_b": self._model(shown["b"]), "response_a": shown["response_a"],
                  "response_b": shown["response_b"]}
        append_vote(self.votes, record)
        return {"recorded": True, "model_a": shown["a"], "model_b": shown["b"], "choice": choice}
