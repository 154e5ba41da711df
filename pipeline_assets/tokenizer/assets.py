"""Tokenizer assets: a byte-level BPE trained on the training mixture, and the token shards it produces."""

import json
from pathlib import Path

import dagster as dg

from pipeline_assets.asset_keys import MIXTURE, SHARDS, TOKENIZER
from pipeline_assets.metadata import table
from pipeline_assets.publishing import Reads, finish, writing
from pipeline_assets.run_config import resolved, stage_config
from pipeline_assets.summary import write_summary
from pipeline_assets.tokenizer.shards import ShardConfig
from pipeline_assets.tokenizer.train import TokenizerConfig
from resources.settings import PipelineSettings
from resources.storage import ArtifactStore

TokenizerRunConfig = stage_config("TokenizerRunConfig", TokenizerConfig, "tokenizer")
ShardsRunConfig = stage_config("ShardsRunConfig", ShardConfig, "shards")


def mixture_files(reads: Reads) -> tuple[dict, Path]:
    root = reads(MIXTURE)
    return json.loads((root / "manifest.json").read_text()), root


@dg.asset(key=TOKENIZER, deps=[MIXTURE], group_name="tokenizer", code_version="2", kinds={"huggingface"},
          check_specs=[dg.AssetCheckSpec("roundtrip_exact", asset=TOKENIZER, blocking=True),
                       dg.AssetCheckSpec("chat_template_ok", asset=TOKENIZER, blocking=True)])
def tokenizer(context: dg.AssetExecutionContext, store: ArtifactStore, settings: PipelineSettings,
              config: TokenizerRunConfig) -> dg.MaterializeResult:
    """Byte-level BPE (HF tokenizers) with special tokens and the ChatML template SFT uses."""
    from pipeline_assets.tokenizer.train import train_tokenizer

    cfg = resolved(config, settings.profile)
    reads = Reads(store)
    manifest, root = mixture_files(reads)
    train_files = [root / e["file"] for e in manifest["train"] if e["documents"]]
    eval_files: dict[str, list[Path]] = {}
    for e in manifest["val"]:
        if e["documents"]:
            eval_files.setdefault(e["domain"], []).append(root / e["file"])
    with writing(context, store) as draft:
        result = train_tokenizer(train_files, draft.work, cfg, eval_files=eval_files, log=context.log.info)
        write_summary(draft.work, result)
    rows = [{"domain": d, "bytes_per_token": round(v, 3)} for d, v in result["bytes_per_token_by_domain"].items()]
    return finish(
        context, store, draft, reads,
        {"vocab_size": result["vocab_size"], "train_time_s": round(result["train_time_s"], 2),
         "train_bytes": result["train_bytes"], "bytes_per_token": round(result["bytes_per_token"], 3),
         "compression_by_domain": table(rows), "roundtrip_exact": result["roundtrip_exact"],
         "special_tokens": dg.MetadataValue.json(result["special_tokens"]),
         "trained_on": dg.MetadataValue.json([str(f) for f in train_files])},
        [
            dg.AssetCheckResult(check_name="roundtrip_exact", passed=bool(result["roundtrip_exact"]),
                                metadata={"failures": result["roundtrip_failures"]}),
            dg.AssetCheckResult(check_name="chat_template_ok", passed=bool(result["chat_template_ok"]),
                                metadata={"problems": dg.MetadataValue.json(result["chat_template_problems"])}),
        ])


@dg.asset(key=SHARDS, deps=[TOKENIZER, MIXTURE], group_name="tokenizer", code_version="1", kinds={"numpy"},
          check_specs=[dg.AssetCheckSpec("counts_match", asset=SHARDS, blocking=True)])
def tokenized_shards(context: dg.AssetExecutionContext, store: ArtifactStore, settings: PipelineSettings,
                     config: ShardsRunConfig) -> dg.MaterializeResult:
    """uint16/uint32 numpy token shards (train, val) with ``index.json``: counts, bytes, source files."""
    from pipeline_assets.tokenizer.shards import tokenize_to_shards

    cfg = resolved(config, settings.profile)
    reads = Reads(store)
    manifest, root = mixture_files(reads)
    split_files = {s: [root / e["file"] for e in manifest[s] if e["documents"]] for s in ("train", "val")}
    with writing(context, store) as draft:
        domains = {str(root / e["file"]): e["domain"] for s in ("train", "val") for e in manifest[s]}
        result = tokenize_to_shards(reads(TOKENIZER), split_files, draft.work, cfg, log=context.log.info,
                                    domains=domains)
    shards_tokens = sum(s["tokens"] for split in result["splits"].values() for s in split["shards"])
    total = sum(split["tokens"] for split in result["splits"].values())
    rows = [{"split": k, "tokens": v["tokens"], "documents": v["documents"], "bytes": v["bytes"],
             "shards": len(v["shards"])} for k, v in result["splits"].items()]
    return finish(
        context, store, draft, reads,
        {"train_tokens": result["splits"]["train"]["tokens"], "val_tokens": result["splits"]["val"]["tokens"],
         "splits": table(rows), "tokens_per_s": round(result["tokens_per_s"]),
         "skipped_records": dg.MetadataValue.json(result["skipped_records"])},
        [dg.AssetCheckResult(check_name="counts_match", passed=shards_tokens == total,
                             metadata={"shard_tokens": shards_tokens, "index_tokens": total})])


tokenizer_assets = [tokenizer, tokenized_shards]
