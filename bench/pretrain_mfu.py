"""Benchmark: llmdag's pretrain loop vs a bare HF LlamaForCausalLM + torch.compile + AdamW loop, same process.

    python bench/pretrain_mfu.py                                   # GPU: the small profile, bf16, compile
    python bench/pretrain_mfu.py --peak-tflops 989                 # override the datasheet peak (TFLOP/s)
    python bench/pretrain_mfu.py --shards DIR --tokenizer DIR      # real shards instead of random tokens
    python bench/pretrain_mfu.py --device cpu --profile tiny --steps 6   # CPU smoke test (no MFU)

Both loops train the same config (shape, batch, grad_accum, dtype, compile, attention kernel) for --warmup
untimed steps (compile, allocator warm-up), then --steps timed steps. Ours is `train()` itself, with eval
and checkpointing pushed past the end; its throughput is read from its own progress lines, whose windows
exclude eval/checkpoint time. MFU = tokens/s x (6N + 12*L*d*T) / peak dense bf16 FLOP/s (989e12 for H100
SXM, detected from the device name). Prints a markdown table; exits 2 with a message when --device cuda
finds no GPU.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import re
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # runnable as a plain script from anywhere

from pipeline_assets.pretrain.config import PretrainConfig  # noqa: E402
from pipeline_assets.pretrain.model import build_model_config, flops_per_token, peak_bf16_flops  # noqa: E402
from pipeline_assets.pretrain.train import train  # noqa: E402
from pipeline_assets.profiles import PROFILES, section_config  # noqa: E402

_TOK_S = re.compile(r"^step (\d+)/\d+ \| loss .*\| tok/s ([\d,]+)")


def synthetic_inputs(
    root: Path, vocab_size: int, train_tokens: int, val_tokens: int, seed: int = 0
) -> tuple[Path, Path]:
    """A word-level tokenizer with exactly vocab_size ids and uniform random token shards (speed only)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<pad>": 0, "<bos>": 1, "<eos>": 2, **{f"t{i}": i for i in range(3, vocab_size)}}
    tk = Tokenizer(models.WordLevel(vocab, unk_token="<pad>"))
    tk.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok = PreTrainedTokenizerFast(
        tokenizer_object=tk, pad_token="<pad>", bos_token="<bos>", eos_token="<eos>"
    )
    tok_dir, shards = root / "tokenizer", root / "shards"
    tok.save_pretrained(tok_dir)
    shards.mkdir()
    rng = np.random.default_rng(seed)
    dtype = np.uint16 if vocab_size <= 1 << 16 else np.uint32
    splits = {}
    for split, n in (("train", train_tokens), ("val", val_tokens)):
        np.save(shards / f"{split}_00000.npy", rng.integers(3, vocab_size, n, dtype=dtype))
        # 4 bytes/token is typical of BPE on English; only val_bpb uses it and nobody reads bpb here.
        splits[split] = {
            "tokens": n,
            "documents": 1,
            "bytes": 4 * n,
            "shards": [{"file": f"{split}_00000.npy", "tokens": n, "documents": 1}],
        }
    index = {
        "format": "llmdag-token-shards/1",
        "dtype": np.dtype(dtype).name,
        "vocab_size": vocab_size,
        "eos_id": 2,
        "bos_id": 1,
        "tokenizer_dir": str(tok_dir),
        "splits": splits,
    }
    (shards / "index.json").write_text(json.dumps(index))
    return tok_dir, shards


def bench_ours(
    cfg: PretrainConfig, tok_dir: Path, shards: Path, work: Path, warmup: int, steps: int
) -> dict[str, Any]:
    # One log window per `warmup` steps: the first window holds compile and is dropped.
    cfg = cfg.replace(
        max_steps=warmup + steps,
        warmup_steps=min(cfg.warmup_steps, warmup),
        log_every=max(1, warmup),
        eval_every=None,
        checkpoint_every=None,
        keep_last=1,
        eval_batches=1,
        sample_prompts=("t3",),
        sample_max_new_tokens=1,
    )
    lines: list[str] = []
    result = train(cfg, shards, tok_dir, work / "run", work / "out", log=lines.append)
    windows, prev = [], 0  # (steps, tok/s) of each progress line
    for ln in lines:
        if m := _TOK_S.match(ln):
            windows.append((int(m.group(1)) - prev, float(m.group(2).replace(",", ""))))
            prev = int(m.group(1))
    timed = windows[1:] or windows
    tok_s = sum(n for n, _ in timed) / sum(n / rate for n, rate in timed)  # total tokens / total time
    return {
        "tokens_per_s": tok_s,
        "num_params": result["num_params"],
        "loss_final": result["train_loss_final"],
    }


def bench_hf(
    cfg: PretrainConfig, vocab_size: int, device: torch.device, warmup: int, steps: int
) -> dict[str, Any]:
    """The plain recipe: LlamaForCausalLM(config), torch.compile, AdamW, labels=input_ids, bf16 autocast."""
    from transformers import LlamaForCausalLM

    torch.manual_seed(0)
    model = LlamaForCausalLM(build_model_config(cfg, vocab_size, 1, 2, 0)).to(device)
    model.train()
    opt = torch.optim.AdamW(
        model.parameters(),
        lr=cfg.learning_rate,
        betas=cfg.betas,
        weight_decay=cfg.weight_decay,
        fused=device.type == "cuda",
    )
    fwd = torch.compile(model) if cfg.compile else model
    amp = (
        torch.autocast("cuda", dtype=torch.bfloat16)
        if device.type == "cuda" and cfg.dtype == "bfloat16"
        else contextlib.nullcontext()
    )
    # Batches come from host memory each step, as ours do from the memmap.
    g = torch.Generator().manual_seed(0)
    host = [torch.randint(3, vocab_size, (cfg.batch_size, cfg.seq_len), generator=g) for _ in range(4)]
    if device.type == "cuda":
        host = [h.pin_memory() for h in host]

    def one_step(i: int) -> torch.Tensor:
        for micro in range(cfg.grad_accum):
            x = host[(i * cfg.grad_accum + micro) % len(host)].to(device, non_blocking=True)
            with amp:
                loss = fwd(input_ids=x, labels=x, use_cache=False).loss
            (loss / cfg.grad_accum).backward()
        if cfg.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss.detach()  # no .item(): a host sync per step would handicap the baseline

    for i in range(warmup):
        one_step(i)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    t0 = time.perf_counter()
    last = torch.zeros(())
    for i in range(steps):
        last = one_step(warmup + i)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    dt = time.perf_counter() - t0
    n_params = sum(p.numel() for p in model.parameters())
    return {
        "tokens_per_s": steps * cfg.tokens_per_step / dt,
        "num_params": n_params,
        "loss_final": float(last),
    }


def _free(device: torch.device) -> None:
    torch._dynamo.reset()
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    # Workload
    p.add_argument("--profile", choices=sorted(PROFILES), default="small",
                   help="profile whose pretrain config to benchmark")
    p.add_argument("--device", choices=("cuda", "cpu"), default="cuda", help="cuda (MFU) or cpu (smoke test)")
    p.add_argument("--steps", type=int, default=30, help="timed optimizer steps per loop")
    p.add_argument("--warmup", type=int, default=None, help="untimed steps first (default: 10 cuda, 2 cpu)")
    p.add_argument("--batch-size", type=int, default=None, help="override the profile's micro-batch")
    p.add_argument("--grad-accum", type=int, default=None, help="override the profile's grad_accum")
    p.add_argument(
        "--compile",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="override the profile's torch.compile setting (both loops)",
    )
    # Data
    p.add_argument("--vocab-size", type=int, default=32768, help="synthetic tokenizer size (no --shards)")
    p.add_argument("--shards", type=Path, default=None, help="real token shards dir (with --tokenizer)")
    p.add_argument("--tokenizer", type=Path, default=None, help="tokenizer dir of --shards")
    # Reporting
    p.add_argument(
        "--peak-tflops", type=float, default=None, help="peak dense bf16 TFLOP/s (default: by name)"
    )
    p.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = p.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    if args.device == "cuda" and not torch.cuda.is_available():
        print(
            "pretrain_mfu: no CUDA device visible to torch; MFU needs a GPU. For a CPU smoke test run\n"
            "  python bench/pretrain_mfu.py --device cpu --profile tiny --steps 6",
            file=sys.stderr,
        )
        return 2
    if (args.shards is None) != (args.tokenizer is None):
        p.error("--shards and --tokenizer go together")
    warmup = args.warmup if args.warmup is not None else (10 if args.device == "cuda" else 2)
    overrides: dict[str, Any] = {"device": args.device}
    if args.device == "cpu":
        overrides["dtype"] = "float32"
    for name in ("batch_size", "grad_accum", "compile"):
        if getattr(args, name) is not None:
            overrides[name] = getattr(args, name)
    cfg = section_config(PretrainConfig, "pretrain", args.profile).replace(**overrides)
    cfg.validate()
    device = torch.device("cuda" if args.device == "cuda" else "cpu")
    if device.type == "cpu":
        torch.set_num_threads(cfg.num_threads)
    else:
        torch.set_float32_matmul_precision("high")

    with tempfile.TemporaryDirectory(prefix="pretrain_mfu_") as tmp:
        work = Path(tmp)
        if args.shards is not None:
            tok_dir, shards = args.tokenizer, args.shards
            vocab_size = int(json.loads((shards / "index.json").read_text())["vocab_size"])
        else:
            vocab_size = args.vocab_size
            n_train = (warmup + args.steps + 2) * cfg.tokens_per_step + cfg.seq_len + 1
            tok_dir, shards = synthetic_inputs(
                work, vocab_size, n_train, 2 * cfg.batch_size * (cfg.seq_len + 1)
            )
        t = time.time()
        ours = bench_ours(cfg, tok_dir, shards, work, warmup, args.steps)
        ours["seconds"] = time.time() - t
        _free(device)
        t = time.time()
        hf = bench_hf(cfg, vocab_size, device, warmup, args.steps)
        hf["seconds"] = time.time() - t
        _free(device)

    fpt = flops_per_token(cfg, vocab_size)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    peak = (
        args.peak_tflops * 1e12
        if args.peak_tflops
        else (peak_bf16_flops(name) if device.type == "cuda" else None)
    )
    rows = [
        ("llmdag train()", ours),
        ("HF LlamaForCausalLM + AdamW" + (" + compile" if cfg.compile else ""), hf),
    ]
    print(
        f"\nprofile {args.profile} on {name} | {ours['num_params']:,} params | "
        f"{cfg.tokens_per_step:,} tokens/step "
        f"| {fpt / 1e9:.3f} GFLOP/token | peak {'n/a' if peak is None else f'{peak / 1e12:.0f} TFLOP/s'} | "
        f"warmup {warmup} + {args.steps} timed steps | compile {cfg.compile} | {cfg.dtype} | "
        f"{cfg.attn_implementation}"
    )
    print("| loop | tok/s | MFU | vs HF | wall s |")
    print("|---|---:|---:|---:|---:|")
    for label, r in rows:
        r["mfu_pct"] = 100 * r["tokens_per_s"] * fpt / peak if peak else None
        mfu = "n/a" if r["mfu_pct"] is None else f"{r['mfu_pct']:.1f}%"
        print(
            f"| {label} | {r['tokens_per_s']:,.0f} | {mfu} | {r['tokens_per_s'] / hf['tokens_per_s']:.2f}x "
            f"| {r['seconds']:.0f} |"
        )
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "profile": args.profile,
                    "device": name,
                    "flops_per_token": fpt,
                    "peak_flops": peak,
                    "ours": ours,
                    "hf": hf,
                },
                indent=1,
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
