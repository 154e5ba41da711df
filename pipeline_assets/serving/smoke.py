"""Serve a checkpoint and probe it through the ``openai`` client, as a user's program would: the model list,
held-out arithmetic one request at a time and all at once, a stream, and requests that must be refused.
Plain (no Dagster): serving/smoke calls it on the release; bench/serve.py and the tests reuse its pieces."""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Sequence
from typing import Any

import httpx
from openai import AsyncOpenAI, OpenAI

from pipeline_assets.serving.config import ServeConfig
from pipeline_assets.serving.running import RunningServer
from pipeline_assets.serving.server import ServedModel
from pipeline_assets.tasks.arithmetic import check_arithmetic


def bad_requests(model: str) -> dict[str, dict[str, Any]]:
    """Requests a server must refuse with a 4xx and keep serving after (raw JSON bodies, by what is wrong)."""
    ask = [{"role": "user", "content": "What is 2 + 2?"}]
    return {
        "unknown model": {"model": "no-such-model", "messages": ask},
        "negative max_tokens": {"model": model, "messages": ask, "max_tokens": -1},
        "temperature out of range": {"model": model, "messages": ask, "temperature": 7},
        "no messages": {"model": model, "messages": []},
        "unknown role": {"model": model, "messages": [{"role": "wizard", "content": "hi"}]},
        "context overflow": {"model": model, "messages": [{"role": "user", "content": "1 + 1 " * 4000}]},
        "1 MB prompt": {"model": model, "messages": [{"role": "user", "content": "x" * 1_000_000}]},
    }


def refusals(url: str, model: str) -> dict[str, int]:
    """Status of each bad request, plus malformed JSON: every one should be a 4xx."""
    statuses = {what: httpx.post(f"{url}/v1/chat/completions", json=body, timeout=60).status_code
                for what, body in bad_requests(model).items()}
    statuses["malformed JSON"] = httpx.post(f"{url}/v1/chat/completions", content=b'{"model": ',
                                            headers={"content-type": "application/json"}, timeout=60).status_code
    return statuses


def ask(client: OpenAI, model: str, prompt: str, max_tokens: int) -> tuple[str, int, float]:
    t0 = time.perf_counter()
    r = client.chat.completions.create(model=model, messages=[{"role": "user", "content": prompt}],
                                       max_tokens=max_tokens, temperature=0)
    return r.choices[0].message.content or "", r.usage.completion_tokens, time.perf_counter() - t0


async def ask_all(url: str, model: str, prompts: Sequence[str], concurrency: int,
                  max_tokens: int) -> tuple[list[str], int, float]:
    """Every prompt, ``concurrency`` requests in flight at a time: (replies, completion tokens, wall seconds)."""
    client = AsyncOpenAI(base_url=f"{url}/v1", api_key="llmdag", max_retries=0, timeout=300)
    gate = asyncio.Semaphore(concurrency)

    async def one(prompt: str) -> tuple[str, int]:
        async with gate:
            r = await client.chat.completions.create(model=model, messages=[{"role": "user", "content": prompt}],
                                                     max_tokens=max_tokens, temperature=0)
            return r.choices[0].message.content or "", r.usage.completion_tokens

    t0 = time.perf_counter()
    out = await asyncio.gather(*[one(p) for p in prompts])
    wall = time.perf_counter() - t0
    await client.close()
    return [o[0] for o in out], sum(o[1] for o in out), wall


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def smoke_test(model: ServedModel, cfg: ServeConfig, records: Sequence[dict], max_tokens: int) -> dict[str, Any]:
    """Serve ``model`` and probe it; ``records``: held-out arithmetic {"id", "prompt", "answer"}, answered
    greedily in ``max_tokens`` (the evals' arithmetic budget, so the accuracy is comparable)."""
    records = list(records)[:cfg.smoke_prompts]
    problems: list[str] = []
    t0 = time.perf_counter()
    with RunningServer([model], cfg) as url:
        started_s = time.perf_counter() - t0
        client = OpenAI(base_url=f"{url}/v1", api_key="llmdag", max_retries=0, timeout=300)
        listed = [m.id for m in client.models.list()]
        if listed != [model.name]:
            problems.append(f"/v1/models lists {listed}, not [{model.name!r}]")
        sequential = [ask(client, model.name, r["prompt"], max_tokens) for r in records]
        replies, tokens, wall = asyncio.run(ask_all(url, model.name, [r["prompt"] for r in records],
                                                    cfg.smoke_concurrency, max_tokens))
        stream = client.chat.completions.create(model=model.name, stream=True, max_tokens=max_tokens,
                                                messages=[{"role": "user", "content": records[0]["prompt"]}])
        chunks = [c.choices[0].delta.content for c in stream if c.choices and c.choices[0].delta.content]
        statuses = refusals(url, model.name)
        healthy = httpx.get(f"{url}/health", timeout=10).status_code == 200
    latencies = [s[2] for s in sequential]
    seq_tokens = sum(s[1] for s in sequential)
    if [s[0] for s in sequential] != replies:
        problems.append("concurrent greedy replies differ from one-at-a-time ones")
    if "".join(chunks) != sequential[0][0]:
        problems.append(f"the stream {''.join(chunks)!r} differs from the reply {sequential[0][0]!r}")
    accepted = {what: s for what, s in statuses.items() if not 400 <= s < 500}
    if accepted:
        problems.append(f"bad requests not refused with a 4xx: {accepted}")
    if not healthy:
        problems.append("/health failed after the bad requests")
    correct = [check_arithmetic(reply, r["answer"]) for reply, r in zip(replies, records, strict=True)]
    return {
        "served": model.name, "n": len(records), "accuracy": round(sum(correct) / len(correct), 4),
        "correct_by_id": {r["id"]: ok for r, ok in zip(records, correct, strict=True)},
        "startup_s": round(started_s, 2),
        "latency_p50_s": round(statistics.median(latencies), 4), "latency_p95_s": round(percentile(latencies, 0.95), 4),
        "sequential_tokens_per_s": round(seq_tokens / sum(latencies), 1),
        "concurrent_tokens_per_s": round(tokens / wall, 1), "concurrency": cfg.smoke_concurrency,
        "throughput_ratio": round((tokens / wall) / (seq_tokens / sum(latencies)), 2),
        "stream_chunks": len(chunks), "refusal_statuses": statuses, "problems": problems,
        "example": {"prompt": records[0]["prompt"], "reply": sequential[0][0], "answer": records[0]["answer"]},
    }
