"""``models/base``: a decoder-only transformer pretrained from scratch on the token shards; resumes after a kill."""


import dagster as dg

from pipeline_assets.asset_keys import BASE, SHARDS, TOKENIZER
from pipeline_assets.finite import NonFiniteError
from pipeline_assets.metadata import path_md, png_md, table
from pipeline_assets.pools import TRAINING_POOL
from pipeline_assets.pretrain.config import PretrainConfig
from pipeline_assets.publishing import Reads, finish, writing
from pipeline_assets.run_config import resolved, stage_config
from resources.settings import PipelineSettings
from resources.storage import ArtifactStore, fingerprint

PretrainRunConfig = stage_config("PretrainRunConfig", PretrainConfig, "pretrain")

# Fields that change neither the weights nor the data order: a run with other values resumes the same run dir.
RESUME_FREE_FIELDS = {"stop_after_steps", "log_every", "checkpoint_every", "keep_last", "sample_prompts",
                      "sample_max_new_tokens"}


# Pretraining resumes from its newest checkpoint, so a retry after a crash (OOM, preemption) loses little.
@dg.asset(key=BASE, deps=[SHARDS, TOKENIZER], group_name="models", code_version="1", kinds={"pytorch"},
          pool=TRAINING_POOL, retry_policy=dg.RetryPolicy(max_retries=1, delay=10),
          check_specs=[dg.AssetCheckSpec("loss_finite_and_below_unigram", asset=BASE, blocking=True)])
def base(context: dg.AssetExecutionContext, store: ArtifactStore, settings: PipelineSettings,
         config: PretrainRunConfig) -> dg.MaterializeResult:
    """Pretraining. Checkpoints go to a run dir keyed by data + config, so a re-materialization resumes."""
    from pipeline_assets.pretrain.plots import loss_curve_png
    from pipeline_assets.pretrain.train import train  # torch: imported by the run, not the code location

    cfg = resolved(config, settings.profile)
    reads = Reads(store)
    shards, tok = reads(SHARDS), reads(TOKENIZER)
    # The run dir outlives failed attempts; its key changes when the data or the config does.
    run_key = {k: v for k, v in cfg.to_dict().items() if k not in RESUME_FREE_FIELDS}
    run_dir = store.slot(["_runs", *BASE.path], fingerprint(shards / "index.json", run_key))
    with store.exclusive(run_dir), writing(context, store) as draft:
        try:
            result = train(cfg, shards, tok, run_dir, draft.work, log=context.log.info)
        except NonFiniteError as e:
            # Deterministic on a resume from the same checkpoint: a retry would only fail again.
            raise dg.Failure(f"{e}; the last published models/base stays current", allow_retries=False) from e
        if not result["complete"]:
            # Not retried: the stop was asked for; re-materializing resumes from the checkpoint.
            raise dg.Failure(f"training stopped at step {result['steps']} of {cfg.max_steps} (stop_after_steps); "
                             f"re-materialize models/base to resume from {run_dir}", allow_retries=False)
    loss, unigram = result["window_val_loss"], result["window_unigram_val_loss"]
    passed = loss == loss and loss < unigram
    samples = [{"prompt": s["prompt"], "completion": s["completion"][:120].replace("\n", "⏎").replace("|", "\\|")}
               for s in result["samples"]]
    return finish(
        context, store, draft, reads, {
            "num_params": result["num_params"], "tokens_seen": result["tokens_seen"],
            "tokens_per_param": round(result["tokens_per_param"], 3), "steps": result["steps"],
            "train_loss_first": round(result["train_loss_first"], 4),
            "train_loss_final": round(result["train_loss_final"], 4),
            # The in-training estimate on fixed windows; evals/base has val_loss / val_bpb on exact bytes.
            "window_val_loss": round(loss, 4), "window_val_bpb": round(result["window_val_bpb"], 4),
            "window_unigram_val_loss": round(unigram, 4),
            "wall_time_s": round(result["wall_time_s"], 1), "tokens_per_s": round(result["tokens_per_s"]),
            "mfu_pct": result["mfu_pct"], "resumed_from_step": result["resumed_from_step"],
            "loss_curve": png_md(loss_curve_png(result["loss_history"], result["val_history"]), "loss curve"),
            "samples": table(samples),
            "data_consumed": dg.MetadataValue.json(result["data_consumed"]),
            "loss_history": dg.MetadataValue.json(result["loss_history"]),
            "tokenizer": path_md(tok), "checkpoint_dir": path_md(draft.version.path), "run_dir": path_md(run_dir),
        },
        [dg.AssetCheckResult(
            check_name="loss_finite_and_below_unigram", passed=bool(passed),
            metadata={"window_val_loss": loss, "window_unigram_val_loss": unigram})])


pretrain_assets = [base]
