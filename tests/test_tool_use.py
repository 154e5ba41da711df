"""Tool use: the chat template's tools, the response_template round trip, the tools, datasets/tool_use, the tool
loop, its eval and gate, and the chat CLI running calls. A scripted model stands in for a trained one here;
models/tool_use itself trains and is evaluated in test_pipeline.py, and on the default run."""

from __future__ import annotations

import argparse
import io
import json
import re
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from pipeline_assets.posttrain.data import DEV_FILE, SFTDataConfig, build_sft_dataset
from pipeline_assets.reports.gates import GateConfig, _target
from pipeline_assets.tasks.tool_problems import MULTIPLY, problem_split, problems
from pipeline_assets.tokenizer.train import TokenizerConfig, build_bpe, check_chat_template, wrap_for_transformers
from pipeline_assets.tool_use.data import TOOL_USE_FILE, ToolDataConfig, build_tool_dataset, heldout_leaks
from pipeline_assets.tool_use.loop import run_with_tools
from pipeline_assets.tool_use.tools import calculator, call_tool, tool_schemas

CALL = {"type": "function", "function": {"name": "calculator", "arguments": {"expression": "347 * 812"}}}


@pytest.fixture(scope="module")
def tok():
    cfg = TokenizerConfig(vocab_size=400)
    bpe, trainer = build_bpe(cfg)
    bpe.train_from_iterator(["What is 347 * 812? The answer is 281764. calculator expression tool_call"] * 50,
                            trainer)
    return wrap_for_transformers(bpe, cfg)


def test_template_renders_tools_calls_and_results_and_parses_back(tok):
    assert check_chat_template(tok, TokenizerConfig()) == []  # without tools: plain ChatML, byte for byte
    msgs = [{"role": "user", "content": "What is 347 * 812?"},
            {"role": "assistant", "content": "", "tool_calls": [CALL]},
            {"role": "tool", "name": "calculator", "content": "281764"},
            {"role": "assistant", "content": "The answer is 281764."}]
    text = tok.apply_chat_template(msgs, tools=[calculator], tokenize=False)
    assert text.startswith("<|im_start|>system\nTools: calculator(expression)<|im_end|>\n")
    assert '<tool_call>{"name": "calculator", "arguments": {"expression": "347 * 812"}}</tool_call><|im_end|>' in text
    assert "<|im_start|>tool\n281764<|im_end|>\n" in text
    # Arguments stored as a JSON string (as datasets/tool_use does) are not encoded twice.
    as_string = json.loads(json.dumps(msgs))
    as_string[1]["tool_calls"][0]["function"]["arguments"] = json.dumps({"expression": "347 * 812"})
    assert tok.apply_chat_template(as_string, tools=[calculator], tokenize=False) == text
    # A system message joins the tools line; the call and the answer are both trained (assistant mask).
    with_system = tok.apply_chat_template([{"role": "system", "content": "Be brief."}, *msgs], tools=tool_schemas(),
                                          tokenize=False)
    assert with_system.startswith("<|im_start|>system\nBe brief.\nTools: calculator(expression) python(code) "
                                  "lookup(name)<|im_end|>\n<|im_start|>user")
    out = tok.apply_chat_template(msgs, tools=[calculator], return_dict=True, return_assistant_tokens_mask=True)
    trained = tok.decode([i for i, m in zip(out["input_ids"], out["assistant_masks"], strict=True) if m])
    assert trained == ('<tool_call>{"name": "calculator", "arguments": {"expression": "347 * 812"}}</tool_call>'
                       "<|im_end|>The answer is 281764.<|im_end|>")
    prompt = tok.apply_chat_template(msgs[:1], tools=[calculator], tokenize=False, add_generation_prompt=True)
    reply = text[len(prompt):].split("<|im_start|>tool")[0]
    assert tok.parse_response(reply, prefix=prompt) == {"role": "assistant", "tool_calls": [CALL]}


def test_response_template_survives_save(tok, tmp_path):
    from transformers import AutoTokenizer

    tok.save_pretrained(tmp_path)
    loaded = AutoTokenizer.from_pretrained(tmp_path)
    assert loaded.parse_response("Hi.<|im_end|>", prefix="") == {"role": "assistant", "content": "Hi."}


def test_tools_run_exactly_and_fail_as_results():
    assert call_tool(CALL) == "281764"
    assert call_tool({"name": "calculator", "arguments": {"expression": "123456789 * 987654321"}}) == str(
        123456789 * 987654321)
    for bad in ("__import__('os').system('id')", "2 ** 99999999", "1 // 0", "x + 1", "1.5 * 2"):
        assert call_tool({"name": "calculator", "arguments": {"expression": bad}}).startswith("error:"), bad
    assert call_tool({"name": "shell", "arguments": {}}).startswith("error: unknown tool")
    assert "missing expression" in call_tool({"name": "calculator", "arguments": {"expr": "1"}})
    assert call_tool({"name": "calculator", "arguments": "not json"}).startswith("error:")
    assert call_tool({"name": "python", "arguments": {"code": 'print(sum(map(int, "583920")))'}}) == "27"
    assert call_tool({"name": "lookup", "arguments": {"name": "json.dumps"}}).startswith("Serialize")
    assert call_tool({"name": "lookup", "arguments": {"name": "antigravity.fly"}}).startswith("error:")
    flood = call_tool({"name": "python", "arguments": {"code": "print('x' * 5000)"}})
    assert len(flood) < 1100 and flood.endswith("...(truncated)")


def test_python_tool_is_sandboxed():
    from pipeline_assets.posttrain.sandbox import sandbox_probe

    if sandbox_probe().mode != "bwrap":
        pytest.skip("bubblewrap unavailable here")
    out = call_tool({"name": "python", "arguments": {"code": "import os; print(os.path.exists('" + str(
        Path(__file__).resolve()) + "'))"}})
    assert out == "False"  # the checkout is not visible inside the sandbox


def test_dataset_rows_and_heldout_check(tmp_path):
    sft = build_sft_dataset(tmp_path / "sft", SFTDataConfig(arithmetic=200, docstring_qa=20, refusals=20, benign=20),
                            None)
    cfg = ToolDataConfig(multiply=40, digit_sum=10, lookup=10, no_call=20, plain=20)
    result = build_tool_dataset(tmp_path / "tools", cfg, Path(sft["files"]["sft.jsonl"]).parent)
    rows = [json.loads(line) for line in (tmp_path / "tools" / TOOL_USE_FILE).read_text().splitlines()]
    assert result["rows"] == len(rows) == 100
    mult = next(r for r in rows if r["kind"] == MULTIPLY)
    a, b = map(int, re.findall(r"\d+", mult["messages"][0]["content"]))
    assert mult["messages"][2] == {"role": "tool", "name": "calculator", "content": str(a * b)}
    assert mult["messages"][3]["content"] == f"The answer is {a * b}."
    assert isinstance(mult["messages"][1]["tool_calls"][0]["function"]["arguments"], str)
    assert {t["function"]["name"] for t in json.loads(mult["tools"])} == {"calculator", "python", "lookup"}
    assert all(json.loads(r["tools"]) == [] for r in rows if r["kind"].startswith("plain_"))
    assert heldout_leaks(rows) == []
    # datasets/sft's dev sums travel along: models/tool_use checks on them that it keeps its parent's sums.
    sft_dir = Path(sft["files"]["sft.jsonl"]).parent
    assert (tmp_path / "tools" / DEV_FILE).read_text() == (sft_dir / DEV_FILE).read_text()
    # The blocking check's function catches a test-split problem and a held-out module's lookup.
    test_item = problems(MULTIPLY, "test", 1, 0)[0]
    leaked = [{**mult, "messages": [{"role": "user", "content": test_item["prompt"]}]},
              {"kind": "lookup", "messages": [{"role": "user", "content": "What does `json.dumps` do?"}]}]
    assert heldout_leaks(leaked) == [test_item["prompt"], "What does `json.dumps` do?"]
    assert problem_split(test_item["prompt"]) == "test"


class ScriptedModel(torch.nn.Module):
    """Stands in for a trained tool-use model: with tools it calls the calculator on the question's numbers,
    after a result it answers with it, without tools it guesses 0."""

    def __init__(self, tok, copy_ok: bool = True) -> None:
        super().__init__()
        self.tok, self.copy_ok = tok, copy_ok
        self.anchor = torch.nn.Parameter(torch.zeros(1))
        self.config = SimpleNamespace(max_position_embeddings=1024)
        self.device = torch.device("cpu")

    def generate(self, input_ids, attention_mask=None, max_new_tokens=8, streamer=None, **_):
        rows = []
        for ids in input_ids.tolist():
            prompt = self.tok.decode([i for i in ids if i != self.tok.pad_token_id])
            last = prompt.rsplit("<|im_start|>", 2)[-2]
            if last.startswith("tool\n"):
                reply = f"The answer is {last[5:].split('<|im_end|>')[0]}."
            elif "Tools:" in prompt and (m := re.search(r"What is (\d+) \* (\d+)\?", last)):
                a, b = m[1], m[2] if self.copy_ok else "1"
                reply = f'<tool_call>{{"name": "calculator", "arguments": {{"expression": "{a} * {b}"}}}}</tool_call>'
            else:
                reply = "The answer is 0."
            rows.append(ids + self.tok(reply + "<|im_end|>", add_special_tokens=False)["input_ids"])
        width = max(map(len, rows))
        out = torch.tensor([r + [self.tok.pad_token_id] * (width - len(r)) for r in rows])
        if streamer is not None:  # the chat CLI streams a single conversation
            streamer.put(input_ids[0])
            streamer.put(out[0, input_ids.shape[1]:])
            streamer.end()
        return out


def test_malformed_calls_are_parse_failures_not_crashes(tok):
    from pipeline_assets.tool_use.loop import parse_reply

    for text in ('<tool_call>{"name": "calculator"}</tool_call>', '<tool_call>{"name": "calc</tool_call>',
                 "<tool_call>[1, 2]</tool_call>", '<tool_call>{"arguments": {}}</tool_call>'):
        message, ok = parse_reply(tok, text, "", None)
        assert not ok and message["content"] == text and "tool_calls" not in message, text
    # A call without arguments still renders (as {}), should a client send one back.
    bare = [{"role": "assistant", "content": "", "tool_calls": [{"function": {"name": "calculator"}}]}]
    assert '"arguments": {}' in tok.apply_chat_template(bare, tokenize=False)


def test_loop_runs_calls_and_answers_from_results(tok):
    model = ScriptedModel(tok)
    conv = [[{"role": "user", "content": "What is 347 * 812?"}]]
    [ex] = run_with_tools(model, tok, conv, tool_schemas(), max_new_tokens=64)
    assert ex.calls == [("calculator", {"expression": "347 * 812"})]
    assert ex.messages[2] == {"role": "tool", "name": "calculator", "content": "281764"}
    assert ex.answer == "The answer is 281764." and ex.parsed
    [plain] = run_with_tools(model, tok, conv, None, max_new_tokens=64)
    assert plain.calls == [] and plain.answer == "The answer is 0."


def _bench(tmp_path: Path) -> Path:
    from pipeline_assets.evals.benchmarks import BenchmarkConfig, build_benchmarks

    (tmp_path / "bench").mkdir()
    build_benchmarks(tmp_path / "bench", BenchmarkConfig(qa_size=8, multiple_choice_size=8, arithmetic_size=8,
                                                         safety_size=8))
    return tmp_path / "bench"


def test_eval_and_target_gate_pass_with_tools_and_fail_without(tok, tmp_path):
    from pipeline_assets.evals.harness import _items
    from pipeline_assets.evals.tool_use import evaluate_tool_use

    bench = _bench(tmp_path)
    results = {}
    for name, model in (("good", ScriptedModel(tok)), ("bad", ScriptedModel(tok, copy_ok=False))):
        out = evaluate_tool_use(model, tok, 30, bench, max_new_tokens=64)
        items = {k: _items("tool_use", ids, scores) for k, (ids, scores) in out["items"].items()}
        gate = _target("models/tool_use", "models/sft", out["metrics"], None, items, None, GateConfig())
        results[name] = (out, gate)
    good, gate = results["good"]
    assert good["metrics"]["tool_answer_accuracy"] == 1.0 and good["metrics"]["no_tool_answer_accuracy"] == 0.0
    assert good["metrics"]["tool_parse_rate"] == 1.0 and good["call_accuracy_by_kind"]["multiply"] == 1.0
    assert good["metrics"]["tool_no_call_accuracy"] == 1.0
    assert gate["status"] == "pass", gate["reason"]
    assert gate["target"]["baseline"] == "no_tool_answer_accuracy" and gate["target"]["p_value"] < 0.01
    bad, gate = results["bad"]
    assert bad["metrics"]["tool_name_accuracy"] > 0.5 and bad["call_accuracy_by_kind"]["multiply"] == 0.0
    assert bad["metrics"]["tool_answer_accuracy"] == 0.0
    assert gate["status"] == "fail" and "needs > 0.3" in gate["reason"]


def test_dev_score_counts_tool_answers_only_where_the_sums_held(tok):
    from pipeline_assets.tool_use.train import kept_sums_score

    dev = problems(MULTIPLY, "dev", 4, 0)
    sums = [{"prompt": "What is 2 + 3?", "answer": "5"}]  # the scripted model answers 0 without tools
    logged: list[str] = []
    assert kept_sums_score(sums, -0.05, 8, logged.append)(ScriptedModel(tok), tok, dev, 64) == 1.0
    assert kept_sums_score(sums, 0.1, 8, logged.append)(ScriptedModel(tok), tok, dev, 64) == 0.0
    assert logged[-1] == "tool_use | dev tool answers 1.000 | dev sums without tools 0.000 (floor 0.100)"


def test_chat_cli_runs_and_shows_tool_calls(tok):
    from pipeline_assets.chat import build_parser, respond

    args: argparse.Namespace = build_parser().parse_args(["sft", "--tools", "calculator", "--max-new-tokens", "64"])
    out = io.StringIO()
    history = [{"role": "user", "content": "What is 347 * 812?"}]
    respond(ScriptedModel(tok), tok, history, args, out)
    assert '[tool] calculator({"expression": "347 * 812"}) -> 281764' in out.getvalue()
    assert history[-1] == {"role": "assistant", "content": "The answer is 281764."}
    with pytest.raises(SystemExit, match="unknown tools"):
        from pipeline_assets.chat import main
        main(["sft", "--tools", "shell"])
