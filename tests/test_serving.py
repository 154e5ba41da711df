"""``llmdag serve`` through the clients users own: the ``openai`` package, plain HTTP and Chromium on /chat.

The server runs a real checkpoint taught a few replies (tests/served_model.py): every answer checked is generated.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from openai import APIStatusError, AsyncOpenAI, OpenAI
from served_model import ASK_TOOL, CFG, FINAL, SUMS, TOOLS, taught_checkpoint

from pipeline_assets.serving.assets import agreement
from pipeline_assets.serving.running import RunningServer, free_port, served_models
from pipeline_assets.serving.server import ServedModel
from pipeline_assets.serving.smoke import refusals, smoke_test

REPO = Path(__file__).resolve().parents[1]
ARTIFACTS = Path(os.environ.get("LLMDAG_TEST_ARTIFACTS", REPO / "test-artifacts")) / "serve"
@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    return taught_checkpoint(tmp_path_factory.mktemp("served") / "taught")


@pytest.fixture(scope="module")
def url(checkpoint):
    with RunningServer([ServedModel("taught", checkpoint)], CFG) as running:
        yield running


def test_openai_client_lists_answers_streams_and_batches(url, checkpoint):
    client = OpenAI(base_url=f"{url}/v1", api_key="x", max_retries=0)
    assert [m.id for m in client.models.list()] == ["taught"]
    assert client.models.retrieve("taught").owned_by == "llmdag"
    for question, answer in SUMS.items():
        reply = client.chat.completions.create(model="taught", messages=[{"role": "user", "content": question}],
                                               temperature=0)
        assert reply.choices[0].message.content == answer and reply.model == "taught"
        assert reply.choices[0].finish_reason == "stop"
    # the checkpoint's own path names it too (what `transformers serve` clients send)
    by_path = client.chat.completions.create(model=str(checkpoint), messages=[{"role": "user", "content":
                                                                              "What is 23 + 41?"}], temperature=0)
    assert by_path.choices[0].message.content == "64"
    stream = client.chat.completions.create(model="taught", messages=[{"role": "user", "content": "What is 23 + 41?"}],
                                            stream=True, temperature=0)
    chunks = [c.choices[0].delta.content for c in stream if c.choices and c.choices[0].delta.content]
    assert "".join(chunks) == "64"
    text = client.completions.create(model="taught", prompt="What is", max_tokens=4)
    assert text.choices[0].text and text.usage.completion_tokens <= 4

    async def concurrently(n: int) -> list[str]:
        aclient = AsyncOpenAI(base_url=f"{url}/v1", api_key="x", max_retries=0)
        questions = [list(SUMS)[i % len(SUMS)] for i in range(n)]
        replies = await asyncio.gather(*[aclient.chat.completions.create(
            model="taught", messages=[{"role": "user", "content": q}], temperature=0) for q in questions])
        await aclient.close()
        return [r.choices[0].message.content == SUMS[q] for r, q in zip(replies, questions, strict=True)]

    assert all(asyncio.run(concurrently(16)))


def test_sampling_n_and_seed(url):
    client = OpenAI(base_url=f"{url}/v1", api_key="x", max_retries=0)
    ask = [{"role": "user", "content": "What is 23 + 41?"}]
    three = client.chat.completions.create(model="taught", messages=ask, n=3, temperature=1.5, seed=7, max_tokens=6)
    assert [c.index for c in three.choices] == [0, 1, 2]
    assert 3 <= three.usage.completion_tokens <= 18
    again = client.chat.completions.create(model="taught", messages=ask, n=3, temperature=1.5, seed=7, max_tokens=6)
    assert [c.message.content for c in again.choices] == [c.message.content for c in three.choices]
    # OpenAI's stop: the reply ends before the stop sequence, which is not returned; streamed too
    stopped = client.chat.completions.create(model="taught", messages=ask, temperature=0, stop=["4"])
    assert stopped.choices[0].message.content == "6" and stopped.choices[0].finish_reason == "stop"
    stream = client.chat.completions.create(model="taught", messages=ask, temperature=0, stop=["4"], stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == "6"
    text = client.completions.create(model="taught", prompt="What is", max_tokens=8, stop=[" "])
    assert " " not in text.choices[0].text
    # temperature 2 over many draws must leave the greedy reply sometimes: sampling really happens
    draws = {client.chat.completions.create(model="taught", messages=ask, temperature=2.0, seed=s,
                                            max_tokens=4).choices[0].message.content for s in range(8)}
    assert len(draws) > 1


def test_tool_calls_are_structured_and_the_result_is_answered(url):
    client = OpenAI(base_url=f"{url}/v1", api_key="x", max_retries=0)
    reply = client.chat.completions.create(model="taught", messages=ASK_TOOL, tools=TOOLS, tool_choice="auto",
                                           temperature=0)
    choice = reply.choices[0]
    assert choice.finish_reason == "tool_calls"
    call = choice.message.tool_calls[0]
    assert call.function.name == "calculator"
    assert json.loads(call.function.arguments) == {"expression": "347 * 812"}
    follow = [*ASK_TOOL, {"role": "assistant", "content": None, "tool_calls": [
                  {"id": call.id, "type": "function", "function": {"name": "calculator",
                                                                    "arguments": call.function.arguments}}]},
              {"role": "tool", "tool_call_id": call.id, "name": "calculator", "content": "281764"}]
    answer = client.chat.completions.create(model="taught", messages=follow, tools=TOOLS, temperature=0)
    assert answer.choices[0].message.content == FINAL


def test_bad_requests_get_a_4xx_with_a_message_and_the_server_keeps_serving(url):
    statuses = refusals(url, "taught")
    assert all(400 <= s < 500 for s in statuses.values()), statuses
    assert statuses["unknown model"] == 404 and statuses["1 MB prompt"] == 413
    client = OpenAI(base_url=f"{url}/v1", api_key="x", max_retries=0)
    with pytest.raises(APIStatusError, match="context of 256 tokens"):
        client.chat.completions.create(model="taught", messages=[{"role": "user", "content": "hi"}], max_tokens=1000)
    with pytest.raises(APIStatusError, match="not served here; served: \\['taught'\\]"):
        client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])
    assert httpx.get(f"{url}/health").json() == {"status": "ok", "models": ["taught"]}
    assert client.chat.completions.create(model="taught", messages=[{"role": "user", "content": "What is 10 + 5?"}],
                                          temperature=0).choices[0].message.content == "15"


def test_a_stream_cancelled_mid_way_frees_its_slot(url):
    body = {"model": "taught", "stream": True, "temperature": 1.0, "seed": 1, "max_tokens": 200,
            "messages": [{"role": "user", "content": "What is 23 + 41?"}]}
    for _ in range(3):  # more abandoned streams than a slot would survive if cancelling leaked it
        with httpx.stream("POST", f"{url}/v1/chat/completions", json=body, timeout=30) as resp:
            assert resp.status_code == 200
            next(resp.iter_lines())
    t0 = time.monotonic()
    reply = httpx.post(f"{url}/v1/chat/completions", timeout=30, json={
        "model": "taught", "temperature": 0, "messages": [{"role": "user", "content": "What is 30 + 12?"}]})
    assert reply.json()["choices"][0]["message"]["content"] == "42" and time.monotonic() - t0 < 10


def test_smoke_probe_and_eval_agreement(checkpoint):
    records = [{"id": f"q{i}", "prompt": q, "answer": a} for i, (q, a) in enumerate(SUMS.items())]
    out = smoke_test(ServedModel("taught", checkpoint), CFG, records, max_tokens=8)
    assert out["problems"] == [] and out["accuracy"] == 1.0 and out["n"] == 4
    assert out["stream_chunks"] >= 1 and out["latency_p95_s"] >= out["latency_p50_s"] > 0
    evaluated = {"per_item": {"arithmetic_accuracy": {"ids": ["q0", "q1", "q2", "q3"], "scores": [1, 1, 0, 1]}}}
    assert agreement(out["correct_by_id"], evaluated) == (0.75, 0.75, 4)
    assert agreement(out["correct_by_id"], None) == (None, None, 0)


def test_a_lora_adapter_dir_is_served_merged_on_its_base(checkpoint, tmp_path):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    adapter = tmp_path / "adapter"
    lora = get_peft_model(AutoModelForCausalLM.from_pretrained(checkpoint),
                          LoraConfig(r=4, target_modules=["q_proj", "v_proj"]))  # B = 0: the base's answers
    lora.save_pretrained(adapter)
    AutoTokenizer.from_pretrained(checkpoint).save_pretrained(adapter)
    assert not (adapter / "config.json").exists()
    with RunningServer([ServedModel("lora", adapter)], CFG) as running:
        reply = OpenAI(base_url=f"{running}/v1", api_key="x", max_retries=0).chat.completions.create(
            model="lora", messages=[{"role": "user", "content": "What is 23 + 41?"}], temperature=0)
    assert reply.choices[0].message.content == "64"


def test_stage_names_resolve_under_the_artifact_root(checkpoint, tmp_path, monkeypatch):
    monkeypatch.setenv("LLMDAG_HOME", str(tmp_path))
    monkeypatch.setenv("LLMDAG_PROFILE", "tiny")
    for where in ("models/sft/_/tiny/current", "release/model/_/tiny/current"):
        shutil.copytree(checkpoint, tmp_path / where)
    models = served_models(["models/sft", "release"])
    assert [(m.name, m.path) for m in models] == [("sft", tmp_path / "models/sft/_/tiny/current"),
                                                  ("release", tmp_path / "release/model/_/tiny/current")]
    assert served_models([])[0].name == "release"  # the default: what release/model published
    with pytest.raises(ValueError, match="served twice"):
        served_models(["sft", "models/sft"])
    with pytest.raises(FileNotFoundError, match="materialized stages: sft"):
        served_models(["grpo"])


def test_llmdag_serve_command(checkpoint, tmp_path):
    port = free_port()
    log = tmp_path / "serve.log"  # a file, not a pipe: a pipe nobody reads while the server runs blocks it when full
    # Started with SIGTERM ignored, as a parent that ignores it hands it down (exec keeps SIG_IGN; this suite's
    # own process had it so): uvicorn's handler still stops the server, and then nothing may keep it alive.
    inherited = signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        with log.open("w") as out:
            proc = subprocess.Popen([sys.executable, "-m", "pipeline_assets.cli", "serve", str(checkpoint), "--port",
                                     str(port)], stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    finally:
        signal.signal(signal.SIGTERM, inherited)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.3)
        assert proc.poll() is None, log.read_text()
        client = OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="x", max_retries=0)
        assert [m.id for m in client.models.list()] == [str(checkpoint)]
        reply = client.chat.completions.create(model=str(checkpoint), temperature=0,
                                               messages=[{"role": "user", "content": "What is 23 + 41?"}])
        assert reply.choices[0].message.content == "64"
        client.close()
    finally:
        os.killpg(proc.pid, signal.SIGTERM)  # what Ctrl-C / a service manager sends: it must stop, promptly
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            pytest.fail(f"llmdag serve ignored SIGTERM for 30 s; its log:\n{log.read_text()[-3000:]}")
    missing = subprocess.run([sys.executable, "-m", "pipeline_assets.cli", "serve", "no_such_stage"],
                             capture_output=True, text=True, env={**os.environ, "LLMDAG_HOME": str(checkpoint)})
    assert missing.returncode != 0 and "llmdag serve:" in missing.stderr and "no_such_stage" in missing.stderr


def test_chat_page_in_chromium(url):
    from test_ui import CHROMIUM_ARGS

    sync_playwright = pytest.importorskip("playwright.sync_api").sync_playwright
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.fail("Chromium is not installed: sudo apt-get install -y chromium")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, headless=True, args=CHROMIUM_ARGS)
        page = browser.new_page()
        page.goto(f"{url}/chat")
        page.wait_for_function("document.querySelector('#model').options.length > 0")
        assert page.locator("#model option").all_inner_texts() == ["taught"]
        page.fill("#prompt", "What is 23 + 41?")
        page.click("#send")
        page.wait_for_function("[...document.querySelectorAll('.assistant span')].some(s => s.textContent == '64')",
                               timeout=30_000)
        page.check("#tools")
        page.click("#reset")
        page.fill("#prompt", "What is 347 * 812?")
        page.click("#send")
        page.wait_for_function(f"[...document.querySelectorAll('.assistant span')].some(s => s.textContent == "
                               f"'{FINAL}')", timeout=30_000)
        assert page.locator(".tool_call span").first.inner_text() == 'calculator({"expression": "347 * 812"})'
        assert page.locator(".tool_result span").first.inner_text() == "281764"  # the calculator really ran
        page.screenshot(path=ARTIFACTS / "chat.png")
        browser.close()


def test_stop_sequences_are_cut_across_stream_chunks():
    from pipeline_assets.serving.stops import cut_stream

    def run(texts: list[str], stops: list[str]) -> tuple[str, list]:
        async def events():
            for t in texts:
                yield f"data: {json.dumps({'choices': [{'delta': {'content': t}}]})}\n\n"
            yield f"data: {json.dumps({'choices': [{'delta': {}, 'finish_reason': 'length'}]})}\n\n"

        async def collect() -> list[str]:
            return [part async for part in cut_stream(events(), stops, chat=True)]

        chunks = [json.loads(e[6:]) for part in asyncio.run(collect()) for e in part.split("\n\n")
                  if e.startswith("data: {")]
        return "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks), chunks

    text, chunks = run(["x a", "bc", "d"], ["ab"])  # the stop spans two chunks: "a" was held back, never sent
    assert text == "x " and chunks[-1]["choices"][0]["finish_reason"] == "stop"
    assert run(["x a", "c"], ["ab"])[0] == "x ac"  # a held tail that did not become a stop is released
    assert run(["no stop here"], ["zz"])[0] == "no stop here"
