"""``llmdag serve`` under load vs plain ``model.generate`` one request at a time, in one process.

    python bench/serve.py                          # the release (LLMDAG_HOME), 64 held-out-style prompts
    python bench/serve.py grpo --requests 128 --max-tokens 32
    python bench/serve.py /path/to/checkpoint --concurrency 1 4 16 --json out.json

Row "generate": the checkpoint loaded by the pipeline's loader, each prompt through the chat template and
``model.generate`` (greedy) alone. Rows "serve xC": the same prompts as OpenAI chat requests (greedy, so
continuously batched) from C concurrent clients through the ``openai`` package. Tokens are the completion
tokens each path reports (generation stops at the end of turn in both). Prints tokens/s, p50/p95 latency per
request and the throughput ratio to the generate row.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time

import torch

from pipeline_assets.model_io import load_checkpoint
from pipeline_assets.profiles import section_config
from pipeline_assets.serving.config import ServeConfig
from pipeline_assets.serving.running import RunningServer, served_models
from pipeline_assets.serving.smoke import percentile


def prompts(n: int) -> list[str]:
    return [f"What is {(7 * i) % 50} + {(13 * i + 5) % 50}?" for i in range(n)]


def plain_generate(path, questions: list[str], max_tokens: int) -> tuple[int, list[float]]:
    model, tok = load_checkpoint(path, "cpu")
    tokens, latencies = 0, []
    for q in questions:
        t0 = time.perf_counter()
        ids = tok.apply_chat_template([{"role": "user", "content": q}], add_generation_prompt=True,
                                      return_tensors="pt", return_dict=True)
        with torch.no_grad():
            out = model.generate(**ids, max_new_tokens=max_tokens, do_sample=False, pad_token_id=tok.pad_token_id)
        new = out[0, ids["input_ids"].shape[1]:].tolist()
        tokens += len(new)  # up to and including the end-of-turn token, as the server's usage counts
        latencies.append(time.perf_counter() - t0)
    return tokens, latencies


async def served(url: str, name: str, questions: list[str], clients: int, max_tokens: int) -> tuple[int, list, float]:
    from openai import AsyncOpenAI

    client = AsyncOpenAI(base_url=f"{url}/v1", api_key="bench", max_retries=0, timeout=600)
    queue = list(questions)
    latencies: list[float] = []
    tokens = 0

    async def worker() -> None:
        nonlocal tokens
        while queue:
            q = queue.pop()
            t0 = time.perf_counter()
            r = await client.chat.completions.create(model=name, messages=[{"role": "user", "content": q}],
                                                     max_tokens=max_tokens, temperature=0)
            latencies.append(time.perf_counter() - t0)
            tokens += r.usage.completion_tokens

    t0 = time.perf_counter()
    await asyncio.gather(*[worker() for _ in range(clients)])
    wall = time.perf_counter() - t0
    await client.close()
    return tokens, latencies, wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", nargs="?", default="release", help="stage name or checkpoint dir")
    parser.add_argument("--requests", type=int, default=64)
    parser.add_argument("--max-tokens", type=int, default=16)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (both paths)")
    parser.add_argument("--json", help="write the rows here too")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model = served_models([args.model])[0]
    questions = prompts(args.requests)
    plain_generate(model.path, questions[:4], args.max_tokens)  # warm-up: first-call allocations
    tokens, latencies = plain_generate(model.path, questions, args.max_tokens)
    rows = [{"path": "generate", "clients": 1, "tokens_per_s": tokens / sum(latencies),
             "p50_s": statistics.median(latencies), "p95_s": percentile(latencies, 0.95), "wall_s": sum(latencies)}]
    cfg = section_config(ServeConfig, "serve")
    with RunningServer([model], cfg) as url:
        asyncio.run(served(url, model.name, questions[:8], 4, args.max_tokens))  # warm-up
        for clients in args.concurrency:
            tokens, latencies, wall = asyncio.run(served(url, model.name, questions, clients, args.max_tokens))
            rows.append({"path": f"serve x{clients}", "clients": clients, "tokens_per_s": tokens / wall,
                         "p50_s": statistics.median(latencies), "p95_s": percentile(latencies, 0.95), "wall_s": wall})
    base = rows[0]["tokens_per_s"]
    print(f"{model.name} ({model.path}), {args.requests} requests, max_tokens {args.max_tokens}, "
          f"{args.threads} threads\n")
    print("| path | tok/s | p50 latency (ms) | p95 latency (ms) | wall (s) | vs generate |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['path']} | {r['tokens_per_s']:.0f} | {1000 * r['p50_s']:.1f} | {1000 * r['p95_s']:.1f} | "
              f"{r['wall_s']:.2f} | {r['tokens_per_s'] / base:.2f}x |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)


if __name__ == "__main__":
    main()
