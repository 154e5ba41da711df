"""A real checkpoint for the serving tests: a 2-layer Llama with the llmdag tokenizer, taught a few replies (two
sums, a calculator call and the answer from its result) in seconds, so every answer the tests check is generated."""

from __future__ import annotations

from pathlib import Path

from conftest import fit_targets

from pipeline_assets.serving.config import ServeConfig
from pipeline_assets.tokenizer.train import TokenizerConfig, build_bpe, wrap_for_transformers
from pipeline_assets.tool_use.tools import tool_schemas

CFG = ServeConfig(device="cpu", cb_page_size=16, cb_num_blocks=128, cb_max_batch_tokens=256)
SUMS = {"What is 23 + 41?": "64", "What is 10 + 5?": "15", "What is 7 + 8?": "15", "What is 30 + 12?": "42"}
TOOLS = tool_schemas()  # all of them, as the chat page offers them
ASK_TOOL = [{"role": "user", "content": "What is 347 * 812?"}]
CALL = {"type": "function", "function": {"name": "calculator", "arguments": {"expression": "347 * 812"}}}
AFTER_TOOL = [*ASK_TOOL, {"role": "assistant", "content": "", "tool_calls": [CALL]},
              {"role": "tool", "name": "calculator", "content": "281764"}]
FINAL = "The answer is 281764."


def _example(tok, conversation: list[dict], tools=None) -> tuple[list[int], list[int]]:
    """(prompt ids, ids of the last assistant turn) as the chat template renders them."""
    prompt = tok.apply_chat_template(conversation[:-1], tools=tools, add_generation_prompt=True, tokenize=False)
    full = tok.apply_chat_template(conversation, tools=tools, tokenize=False)
    assert full.startswith(prompt)
    ids = tok(prompt, add_special_tokens=False)["input_ids"]
    return ids, tok(full[len(prompt):], add_special_tokens=False)["input_ids"]


def taught_checkpoint(out: Path, steps: int = 150) -> Path:
    """Save the taught model and its tokenizer to ``out``; ``steps=0`` leaves it untrained (random replies)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = TokenizerConfig(vocab_size=400)
    bpe, trainer = build_bpe(cfg)
    bpe.train_from_iterator([" ".join(SUMS) + " " + " ".join(SUMS.values()) + " What is 347 * 812? The answer is "
                             "281764. calculator expression tool_call"] * 50, trainer)
    tok = wrap_for_transformers(bpe, cfg)
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(
        vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=4, max_position_embeddings=256, bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id))
    examples = [_example(tok, [{"role": "user", "content": q}, {"role": "assistant", "content": a}])
                for q, a in SUMS.items()]
    examples.append(_example(tok, [*ASK_TOOL, {"role": "assistant", "content": "", "tool_calls": [CALL]}], TOOLS))
    examples.append(_example(tok, [*AFTER_TOOL, {"role": "assistant", "content": FINAL}], TOOLS))
    if steps:
        fit_targets(model, examples, steps=steps, lr=3e-3, pad_id=tok.pad_token_id)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out
