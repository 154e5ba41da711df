"""Quantized deploy artifact (`models/quantized`): int8 weight-only via transformers TorchAoConfig + torchao.

    python -m pipeline_assets.posttrain.quantize --models-grpo MODEL_DIR --out QUANT_DIR
    pytest tests/test_posttrain_preference.py -k quantize

Plain Python, no Dagster. `quantize(cfg, src_dir, out_dir, probe_prompts, log)` loads `src_dir` with
`TorchAoConfig` (int8 weight-only Linears, lm_head included, and an int8 per-row input embedding; a tied
embedding is untied first so both are quantized), saves it with `save_pretrained`
(safetensors) and reloads it with plain `AutoModelForCausalLM.from_pretrained(out_dir)` (torchao must be
installed where it is loaded: the weights are torchao tensor subclasses). It reports size on disk, generation
speed, max |logit| difference and greedy agreement against the parent. A LoRA policy must be merged first
(`merge_and_unload()`); pass the merged dir as `src_dir`.

Measured on the default run's tiny base (1.38M params, tied embeddings, fp32 5.51 MB): 2.00 MB (2.76x
smaller), max logit diff 0.07, greedy agreement 1.00 (embedding left fp32: 3.00 MB, 1.84x).
Why this path (notes/trl.md "Quantization", measured on an older fp32 tiny model, 1.38 MB):
  * TorchAoConfig int8 weight-only + embeddings: 0.77 MB, max logit err 0.007, save/reload as safetensors works.
  * Without `include_input_output_embeddings`: 1.15 MB (embedding and lm_head stay fp32: a large share of a
    model with vocab >> hidden).
  * `quantize_()` on a loaded model, torch.ao dynamic quantization: right sizes but `save_pretrained` fails or
    the result is not HF format. optimum-quanto: quantizes but is not serializable.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from pipeline_assets.asset_keys import GRPO
from pipeline_assets.model_io import SAMPLE_PROMPTS
from pipeline_assets.posttrain.common import Log, config_dict, quiet_progress, set_threads
from pipeline_assets.posttrain.config import QuantizeConfig
from pipeline_assets.stage_cli import stage_main
from pipeline_assets.stages import StageInputs
from pipeline_assets.summary import write_summary


def _torchao_config(cfg: QuantizeConfig) -> Any:
    try:
        from torchao.quantization import (
            FqnToConfig,
            Int8DynamicActivationInt8WeightConfig,
            Int8WeightOnlyConfig,
            IntxWeightOnlyConfig,
        )
        from torchao.quantization.granularity import PerAxis
    except ImportError as err:
        raise ImportError("models/quantized needs torchao: pip install torchao==0.18.0") from err
    from transformers import TorchAoConfig

    linear = Int8WeightOnlyConfig() if cfg.method == "int8_weight_only" else Int8DynamicActivationInt8WeightConfig()
    if not cfg.include_embeddings:
        return TorchAoConfig(linear)
    # The Linear configs skip nn.Embedding (torchao's default filter takes Linear only): the input embedding
    # needs a config of its own, int8 with one scale per row (a row is what a lookup reads).
    scheme = FqnToConfig({"re:.*_proj|lm_head": linear,
                          "model.embed_tokens": IntxWeightOnlyConfig(weight_dtype=torch.int8,
                                                                     granularity=PerAxis(0))})
    return TorchAoConfig(scheme, include_input_output_embeddings=True)


def _untied_copy(src_dir: Path, out_dir: Path) -> Path:
    """`src_dir` saved with lm_head as its own copy of the (tied) input embedding, for quantizing both.

    Tied, the checkpoint holds one fp32 matrix that torchao leaves unquantized (on the tiny model, 2.1 of its
    5.5 MB: the quantized model was only 1.84x smaller). transformers' own `untie_embedding_weights` breaks
    the reload (tie_weights calls aten.equal, which torchao's int8 tensors lack), so the copy is untied in
    fp32 before quantizing: two int8 matrices (2 x 0.5 MB) instead of one fp32 one.
    """
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(src_dir, device_map="cpu")
    model.config.tie_word_embeddings = False
    model.lm_head.weight = torch.nn.Parameter(model.get_input_embeddings().weight.detach().clone())
    model.save_pretrained(out_dir, safe_serialization=True)
    return out_dir


def dir_size_bytes(path: Path, pattern: str = "*.safetensors") -> int:
    return sum(p.stat().st_size for p in Path(path).glob(pattern))


@torch.no_grad()
def _probe(model: Any, tok: Any, prompts: list[str], cfg: QuantizeConfig) -> dict[str, Any]:
    """Greedy completions, tokens/s (best of `latency_repeats`), and next-token logits of each probe prompt."""
    texts = [tok.apply_chat_template([{"role": "user", "content": p}], tokenize=False, add_generation_prompt=True)
             for p in prompts]
    completions: list[list[int]] = []
    logits: list[torch.Tensor] = []
    best_s = float("inf")
    new_tokens = 0
    for repeat in range(cfg.latency_repeats):
        t0 = time.perf_counter()
        new_tokens = 0
        outs = []
        for text in texts:  # one prompt at a time: deploy-style latency, no padding effects on the comparison
            ids = tok(text, return_tensors="pt", add_special_tokens=False)["input_ids"]
            gen = model.generate(ids, max_new_tokens=cfg.max_new_tokens, do_sample=False, top_p=None, top_k=None,
                                 pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
            outs.append(gen[0, ids.shape[1]:].tolist())
            new_tokens += gen.shape[1] - ids.shape[1]
            if repeat == 0:
                logits.append(model(ids).logits[0].float())
        best_s = min(best_s, time.perf_counter() - t0)
        completions = outs
    return {"completions": completions, "logits": logits, "seconds": best_s, "new_tokens": new_tokens}


def quantize(cfg: QuantizeConfig, src_dir: Path, out_dir: Path, probe_prompts: list[str] | None = None,
             log: Log = print) -> dict[str, Any]:
    """Quantize `src_dir` into the existing `out_dir` and compare the reloaded artifact with its parent."""
    cfg.validate()
    quiet_progress()
    from transformers import AutoModelForCausalLM, AutoTokenizer

    t0 = time.perf_counter()
    src_dir, out_dir = Path(src_dir), Path(out_dir)
    if not (src_dir / "config.json").is_file():
        raise FileNotFoundError(f"{src_dir} is not an HF checkpoint dir; materialize the model to quantize first "
                                "(a LoRA policy: merge_and_unload() and pass the merged dir)")
    if not out_dir.is_dir():
        raise FileNotFoundError(f"out_dir {out_dir} does not exist; the caller must create it first")
    if (src_dir / "adapter_config.json").is_file():
        raise ValueError(f"{src_dir} holds a LoRA adapter; merge it (merge_and_unload) and pass the merged dir")
    set_threads("cpu", cfg.num_threads)
    prompts = list(probe_prompts or SAMPLE_PROMPTS)
    tok = AutoTokenizer.from_pretrained(src_dir)
    parent = AutoModelForCausalLM.from_pretrained(src_dir, device_map="cpu").eval()
    base = _probe(parent, tok, prompts, cfg)

    t_q = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="untied-") as scratch:
        load_dir = (_untied_copy(src_dir, Path(scratch)) if cfg.include_embeddings and
                    parent.config.tie_word_embeddings else src_dir)
        quantized = AutoModelForCausalLM.from_pretrained(load_dir, device_map="cpu",
                                                         quantization_config=_torchao_config(cfg))
    quantized.save_pretrained(out_dir, safe_serialization=True)
    tok.save_pretrained(out_dir)
    quantize_time_s = time.perf_counter() - t_q
    del quantized
    # What a deployer does: plain from_pretrained on the saved dir (the quantization config travels in config.json).
    reloaded = AutoModelForCausalLM.from_pretrained(out_dir, device_map="cpu").eval()
    quant = _probe(reloaded, tok, prompts, cfg)

    max_diff = max(float((a - b).abs().max()) for a, b in zip(base["logits"], quant["logits"], strict=True))
    # Per prompt position; a prompt counts as agreeing only if all its positions do, which one near-tie flip breaks.
    same_pos = [a.argmax(-1) == b.argmax(-1) for a, b in zip(base["logits"], quant["logits"], strict=True)]
    same_top1 = [bool(m.all()) for m in same_pos]
    agree = [a == b for a, b in zip(base["completions"], quant["completions"], strict=True)]
    size_before, size_after = dir_size_bytes(src_dir), dir_size_bytes(out_dir)
    result: dict[str, Any] = {
        "checkpoint_dir": str(out_dir),
        "parent_checkpoint": str(src_dir),
        "method": cfg.method,
        "size_bytes_before": size_before,
        "size_bytes_after": size_after,
        "size_ratio": round(size_after / size_before, 4),
        "tokens_per_s_before": round(base["new_tokens"] / base["seconds"], 2),
        "tokens_per_s_after": round(quant["new_tokens"] / quant["seconds"], 2),
        "max_abs_logit_diff": round(max_diff, 6),
        "top1_agreement": round(sum(same_top1) / len(same_top1), 4),  # prompt positions' argmax all equal
        "top1_position_agreement": round(sum(int(m.sum()) for m in same_pos) / sum(m.numel() for m in same_pos), 4),
        "greedy_agreement": round(sum(agree) / len(agree), 4),  # whole greedy completion identical
        "probe_prompts": len(prompts),
        "quantize_time_s": round(quantize_time_s, 3),
        "wall_time_s": round(time.perf_counter() - t0, 3),
        "samples": [{"prompt": p, "parent": tok.decode(a, skip_special_tokens=True),
                     "quantized": tok.decode(b, skip_special_tokens=True)}
                    for p, a, b in zip(prompts, base["completions"], quant["completions"], strict=True)],
        "config": config_dict(cfg),
    }
    log(f"quantize | {cfg.method} | {size_before / 1e6:.2f} MB -> {size_after / 1e6:.2f} MB | tok/s "
        f"{result['tokens_per_s_before']} -> {result['tokens_per_s_after']} | max logit diff {max_diff:.4f} | "
        f"greedy agreement {result['greedy_agreement']:.2f}")
    write_summary(out_dir, result)
    return result


def train(cfg: QuantizeConfig, inputs: StageInputs, work: Path, checkpoint_dir: Path | None,
          log: Log) -> dict[str, Any]:
    """models/quantized (pipeline_assets/stages.py): a one-shot conversion of its parent, nothing to resume."""
    return quantize(cfg, inputs(GRPO), work, log=log)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """``python -m pipeline_assets.posttrain.quantize --help``: the models/quantized asset's run on given dirs."""
    return stage_main("quantized", argv)


if __name__ == "__main__":
    main()
