"""``models/base``: a decoder-only transformer pretrained from scratch on the token shards; resumes after a kill.
``models/base_moe``: the same recipe with mixture-of-experts FFNs (profile section ``pretrain_moe``), at the dense
base's active parameters per token and its tokens, compared with it in its metadata.
``models/long_context``: models/base's pretraining continued at 4x its context (profile section
``pretrain_long_context``: RoPE extended, long packed windows, passkey rows)."""

import json
from pathlib import Path
from typing import Any

import dagster as dg

from pipeline_assets.asset_keys import BASE, BASE_MOE, LONG_CONTEXT, SHARDS, TOKENIZER
from pipeline_assets.finite import NonFiniteError
from pipeline_assets.metadata import path_md, png_md, table
from pipeline_assets.pools import TRAINING_POOL
from pipeline_assets.pretrain.config import PretrainConfig
from pipeline_assets.publishing import Reads, finish, writing
from pipeline_assets.run_config import resolved, stage_config
from resources.launcher import LauncherResource
from resources.settings import PipelineSettings
from resources.storage import ArtifactStore, fingerprint

PretrainRunConfig = stage_config("PretrainRunConfig", PretrainConfig, "pretrain")
PretrainMoeRunConfig = stage_config("PretrainMoeRunConfig", PretrainConfig, "pretrain_moe")
PretrainLongContextRunConfig = stage_config("PretrainLongContextRunConfig", PretrainConfig, "pretrain_long_context")

# Fields that change neither the weights nor the data order: a run with other values resumes the same run dir.
RESUME_FREE_FIELDS = {"stop_after_steps", "log_every", "checkpoint_every", "keep_last", "sample_prompts",
                      "sample_max_new_tokens"}
CHECK = "loss_finite_and_below_unigram"


def _train_out_of_process(context: dg.AssetExecutionContext, launcher: LauncherResource, cfg: PretrainConfig,
                          shards: Path, tok: Path, run_dir: Path, out: Path, init_dir: Path | None) -> dict[str, Any]:
    """pipeline_assets/pretrain/train.py's CLI under torchrun; its rank 0 reports where its summary is."""
    launch = run_dir / "launch"  # beside the checkpoints: on the filesystem every node of a job shares
    launch.mkdir(parents=True, exist_ok=True)
    config_file = launch / f"config-{context.run.run_id[:8]}.json"
    config_file.write_text(json.dumps(cfg.to_dict(), indent=1))
    args = ["--shards", str(shards), "--tokenizer", str(tok), "--run-dir", str(run_dir), "--out", str(out),
            "--config-json", str(config_file), *(["--init-from", str(init_dir)] if init_dir else [])]
    reported = launcher.run_trainer(context, "pipeline_assets.pretrain.train", args, launch)
    if not reported["complete"]:
        return {"complete": False, "steps": reported["steps"]}
    return json.loads(Path(reported["summary"]).read_text())


def pretrain_asset(key: dg.AssetKey, run_config: type[dg.Config], init_from: dg.AssetKey | None = None,
                   description: str = "") -> dg.AssetsDefinition:
    """A pretraining asset: from a random init, or continuing ``init_from``'s weights."""
    deps = [SHARDS, TOKENIZER] + ([init_from] if init_from is not None else [])

    def _pretrain(context: dg.AssetExecutionContext, store: ArtifactStore, settings: PipelineSettings,
                  launcher: LauncherResource, config: dg.Config) -> dg.MaterializeResult:
        from pipeline_assets.pretrain.plots import loss_curve_png
        from pipeline_assets.pretrain.train import train  # torch: imported by the run, not the code location

        cfg = resolved(config, settings.profile)
        reads = Reads(store)
        shards, tok = reads(SHARDS), reads(TOKENIZER)
        # The run dir outlives failed attempts; its key changes when the data or the config does.
        run_key = {k: v for k, v in cfg.to_dict().items() if k not in RESUME_FREE_FIELDS}
        init_dir = reads(init_from) if init_from is not None else None
        if init_dir is not None:  # a new version of the starting model starts a new run
            run_key["init_from"] = str(init_dir.resolve())
        run_dir = store.slot(["_runs", *key.path], fingerprint(shards / "index.json", run_key))
        with store.exclusive(run_dir), writing(context, store) as draft:
            try:
                if launcher.trains_out_of_process():  # torchrun here or on Slurm, through Dagster Pipes
                    result = _train_out_of_process(context, launcher, cfg, shards, tok, run_dir, draft.work, init_dir)
                else:
                    result = train(cfg, shards, tok, run_dir, draft.work, log=context.log.info, init_dir=init_dir)
            except NonFiniteError as e:
                # Deterministic on a resume from the same checkpoint: a retry would only fail again.
                raise dg.Failure(f"{e}; the last published {key.to_user_string()} stays current",
                                 allow_retries=False) from e
            if not result["complete"]:
                # Not retried: the stop was asked for; re-materializing resumes from the checkpoint.
                raise dg.Failure(f"training stopped at step {result['steps']} of {cfg.max_steps} (stop_after_steps);"
                                 f" re-materialize {key.to_user_string()} to resume from {run_dir}",
                                 allow_retries=False)
        loss, unigram = result["window_val_loss"], result["window_unigram_val_loss"]
        passed = loss == loss and loss < unigram
        samples = [{"prompt": s["prompt"],
                    "completion": s["completion"][:120].replace("\n", "⏎").replace("|", "\\|")}
                   for s in result["samples"]]
        moe: dict[str, Any] = {}
        if cfg.moe:
            moe = {"num_experts": cfg.moe_num_experts, "top_k": cfg.moe_top_k,
                   "active_params": result["active_params"], "router_aux_loss_final": result["router_aux_loss_final"],
                   "train_state_mb": result["train_state_mb"]}
        return finish(
            context, store, draft, reads, {
                "num_params": result["num_params"], "tokens_seen": result["tokens_seen"],
                "tokens_per_param": round(result["tokens_per_param"], 3), "steps": result["steps"],
                "train_loss_first": round(result["train_loss_first"], 4),
                "train_loss_final": round(result["train_loss_final"], 4),
                # The in-training estimate on fixed windows; evals/<stage> has val_loss / val_bpb on exact bytes.
                "window_val_loss": round(loss, 4), "window_val_bpb": round(result["window_val_bpb"], 4),
                "window_unigram_val_loss": round(unigram, 4),
                "wall_time_s": round(result["wall_time_s"], 1), "tokens_per_s": round(result["tokens_per_s"]),
                "mfu_pct": result["mfu_pct"], "peak_memory_mb": result["peak_memory_mb"],
                "resumed_from_step": result["resumed_from_step"], **moe,
                **({"init_from": path_md(init_dir), "passkey_rows": result["passkey_rows"],
                    "context": cfg.seq_len, "rope": dg.MetadataValue.json(cfg.rope_parameters())} if init_dir else {}),
                "loss_curve": png_md(loss_curve_png(result["loss_history"], result["val_history"]), "loss curve"),
                "samples": table(samples),
                "data_consumed": dg.MetadataValue.json(result["data_consumed"]),
                "loss_history": dg.MetadataValue.json(result["loss_history"]),
                "tokenizer": path_md(tok), "checkpoint_dir": path_md(draft.version.path),
                "run_dir": path_md(run_dir),
            },
            [dg.AssetCheckResult(
                check_name=CHECK, passed=bool(passed),
                metadata={"window_val_loss": loss, "window_unigram_val_loss": unigram})])

    _pretrain.__annotations__["config"] = run_config  # Dagster reads the form's schema from this annotation
    # Pretraining resumes from its newest checkpoint, so a retry after a crash (OOM, preemption) loses little.
    return dg.asset(key=key, deps=deps, group_name="models", code_version="1", kinds={"pytorch"}, pool=TRAINING_POOL,
                    retry_policy=dg.RetryPolicy(max_retries=1, delay=10), description=description,
                    check_specs=[dg.AssetCheckSpec(CHECK, asset=key, blocking=True)])(_pretrain)


base = pretrain_asset(BASE, PretrainRunConfig, description="Pretraining from the token shards: a dense Llama.")
# Not downstream of models/base (it trains beside it): evals/base_moe compares the two (vs_dense, paired val bpb).
base_moe = pretrain_asset(
    BASE_MOE, PretrainMoeRunConfig,
    description="Pretraining with mixture-of-experts FFNs (Mixtral) at the dense base's active parameters per "
                "token and its tokens; evals/base_moe compares it with models/base (vs_dense, paired val bpb).")

long_context = pretrain_asset(
    LONG_CONTEXT, PretrainLongContextRunConfig, init_from=BASE,
    description="models/base's pretraining continued at 4x its context: RoPE extended (rope_type, rope_factor from "
                "the base's length), long packed windows of the mixture with passkey-retrieval rows mixed in.")

pretrain_assets = [base, base_moe, long_context]
