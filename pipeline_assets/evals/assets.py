"""Evaluation assets: the held-out sets (``evals/benchmarks``) and one eval report per model stage.

``evals/<stage>`` scores the checkpoint of ``models/<stage>`` on the held-out sets with real generations and
log-likelihoods (pipeline_assets/evals/harness.py); stages after SFT are also judged against their parent
by the reward model.
"""

import dataclasses
import json
from pathlib import Path

import dagster as dg

from pipeline_assets.arena_votes import VOTES_FILE
from pipeline_assets.asset_keys import (
    ARENA,
    BENCHMARKS,
    DEDUPED,
    HUMAN_PREFERENCES,
    MIXTURE,
    PREFERENCES,
    REWARD,
    SHARDS,
    TEST_TIME_COMPUTE,
    model_key,
)
from pipeline_assets.evals.benchmarks import BenchmarkConfig, build_benchmarks
from pipeline_assets.evals.config import EvalConfig
from pipeline_assets.evals.sets import BASE_MODEL_SETS, REGISTRY, TOOL_SETS
from pipeline_assets.evals.test_time_compute import TARGET_N, TestTimeComputeConfig
from pipeline_assets.jsonl import read_jsonl
from pipeline_assets.metadata import table
from pipeline_assets.posttrain.data import WITHOUT_SYNTHETIC_DIR
from pipeline_assets.pretrain.variants import vs_dense
from pipeline_assets.publishing import Reads, finish, writing
from pipeline_assets.run_config import register_section, resolved, stage_config
from pipeline_assets.stages import ModelStage
from pipeline_assets.summary import SUMMARY_FILE, write_summary
from resources.settings import PipelineSettings
from resources.storage import ArtifactStore

EvalRunConfig = stage_config("EvalRunConfig", EvalConfig, "evals")
TestTimeComputeRunConfig = stage_config("TestTimeComputeRunConfig", TestTimeComputeConfig, "test_time_compute")
TTC_CHECK = "majority_vote_gain"
register_section("benchmarks", BenchmarkConfig)  # no Launchpad form: the held-out sets are fixed per profile


@dg.asset(key=ARENA, deps=[HUMAN_PREFERENCES], group_name="evals", code_version="1", kinds={"python"})
def arena(context: dg.AssetExecutionContext, store: ArtifactStore) -> dg.MaterializeResult:
    """The arena's blind votes (the ones datasets/human_preferences read): per pair of checkpoints the win rate
    among decisive votes with a 95% CI and a binomial p-value, and Bradley-Terry ratings on the Elo scale."""
    from pipeline_assets.evals.arena import arena_report

    reads = Reads(store)
    report = arena_report(read_jsonl(reads(HUMAN_PREFERENCES) / VOTES_FILE))
    context.log.info(f"arena | {report['votes']} votes | Elo {report['elo']}")
    with writing(context, store) as draft:
        write_summary(draft.work, report)
    ratings = [{"model": m, "elo": report["elo"][m]} for m in report["models"]]
    pairs = [{"first": r["first"], "second": r["second"], "votes": r["votes"], "first_win_rate": r["first_win_rate"],
              "ci95": r["ci95"], "p_value": r["p_value"], "winner": r["winner"]} for r in report["pairs"]]
    return finish(context, store, draft, reads, {"votes": report["votes"], "elo": table(ratings),
                                                 "pairs": table(pairs)})


@dg.asset(key=BENCHMARKS, group_name="evals", code_version="1", kinds={"python"})
def benchmarks(context: dg.AssetExecutionContext, store: ArtifactStore,
               settings: PipelineSettings) -> dg.MaterializeResult:
    """Held-out eval sets (QA, multiple choice, arithmetic, safety): built before training, never trained on."""
    with writing(context, store) as draft:
        result = build_benchmarks(draft.work, settings.config(BenchmarkConfig, "benchmarks"))
    return finish(context, store, draft, None, {"counts": dg.MetadataValue.json(result["counts"]),
                                                "total_items": result["total_items"],
                                                "dagster/row_count": result["total_items"]})


def _mixture_train_files(reads: Reads) -> list[Path]:
    manifest = json.loads((reads(MIXTURE) / "manifest.json").read_text())
    return [reads(MIXTURE) / e["file"] for e in manifest["train"]]


def _raw_files(reads: Reads) -> list[Path]:
    """Deduplicated (not yet decontaminated) documents of every source the mixture was built from."""
    manifest = json.loads((reads(MIXTURE) / "manifest.json").read_text())
    dedup = reads.many(DEDUPED, sorted({e["source"] for e in manifest["train"] + manifest["val"]}))
    return sorted(f for d in dedup.values() for f in (d / "documents").glob("*.jsonl"))


def eval_asset(stage: ModelStage, judged: bool) -> dg.AssetsDefinition:
    parent = model_key(stage.parent) if stage.parent else None
    deps = [stage.key, BENCHMARKS, SHARDS, MIXTURE] + ([parent] if parent else []) + ([REWARD] if judged else [])
    # Held-out preference pairs (prompts no SFT row used) score every post-trained stage, sft included, so
    # dpo's pair accuracy is paired against its parent's on the same pairs.
    paired = not stage.base_model
    deps += [PREFERENCES] if paired else []

    @dg.asset(key=stage.eval_key, deps=deps, group_name="evals", code_version="1", kinds={"pytorch"},
              description=f"Eval report of models/{stage.name} on the held-out sets.")
    def _eval(context: dg.AssetExecutionContext, store: ArtifactStore, settings: PipelineSettings,
              config: EvalRunConfig) -> dg.MaterializeResult:
        from pipeline_assets.evals.harness import (  # torch: run time only
            ablation_effect,
            contamination_report,
            evaluate_checkpoint,
        )

        cfg = resolved(config, settings.profile)
        chosen = set(cfg.sets) | (set(TOOL_SETS) if stage.tools else set())
        skip = (() if stage.tools else TOOL_SETS) + (() if stage.base_model else BASE_MODEL_SETS)
        cfg = dataclasses.replace(cfg, sets=tuple(s for s in REGISTRY if s in chosen and s not in skip))
        if stage.base_model:  # a base model never saw the chat template: score it the way it was trained
            cfg = dataclasses.replace(cfg, arithmetic_format="plain")
        reads = Reads(store)
        bench = reads(BENCHMARKS)
        result = evaluate_checkpoint(
            reads(stage.key), bench, cfg, shards_dir=reads(SHARDS),
            parent_dir=reads(parent) if parent and judged else None,
            judge=reads(REWARD) if judged else None, log=context.log.info,
            pairs_dir=reads(PREFERENCES) if paired else None)
        # A stage that trained on datasets/synthetic saved the same recipe without it: the paired effect.
        ablation = reads(stage.key) / WITHOUT_SYNTHETIC_DIR
        if (ablation / "config.json").is_file():
            effect = ablation_effect(result, ablation, bench, stage.target[0], cfg, log=context.log.info)
            result["synthetic_effect"] = effect
            result["metrics"].update({"synthetic_effect_delta": effect["delta"],
                                      "synthetic_effect_p_value": effect["p_value"],
                                      f"without_synthetic_{effect['metric']}": effect["without"]})
        # Contamination of each eval set with the training data, before vs after decontamination.
        contamination = {"before_decontamination": contamination_report(_raw_files(reads), bench),
                         "after_decontamination": contamination_report(_mixture_train_files(reads), bench)}
        result["contamination"] = contamination
        if parent is not None and stage.base_model:  # a pretraining variant beside its dense parent
            trained = json.loads((reads(stage.key) / SUMMARY_FILE).read_text())
            if (trained.get("config") or {}).get("moe_num_experts"):
                result["vs_dense"] = vs_dense(trained, json.loads((reads(parent) / SUMMARY_FILE).read_text()))
        with writing(context, store) as draft:
            write_summary(draft.work, result)
        metrics = {k: v for k, v in result["metrics"].items() if v is not None}
        rows = [{"set": name, "before": round(contamination["before_decontamination"]["sets"][name]["fraction"], 4),
                 "after": round(contamination["after_decontamination"]["sets"][name]["fraction"], 4)}
                for name in contamination["after_decontamination"]["sets"]]
        samples = [{"prompt": s["prompt"][:80], "completion": str(s["completion"])[:120].replace("\n", " ")
                    .replace("|", "\\|")} for s in result.get("samples", [])]
        return finish(context, store, draft, reads, {
            **{k: (round(v, 4) if isinstance(v, float) else v) for k, v in metrics.items()},
            "metrics": dg.MetadataValue.json(metrics), "contamination": table(rows),
            "samples": table(samples), "num_params": result.get("num_params"),
            **({"synthetic_effect": dg.MetadataValue.json(result["synthetic_effect"])}
               if "synthetic_effect" in result else {}),
            **({"vs_dense": dg.MetadataValue.json(result["vs_dense"])} if "vs_dense" in result else {}),
            "wall_time_s": round(result["wall_time_s"], 1)})

    return _eval


def release_policies(stages: list[ModelStage], release_stage: str) -> list[ModelStage]:
    """The chat policies on ``release_stage``'s lineage, parents first (base and reward models are not)."""
    by_name = {s.name: s for s in stages}
    chain, stage = [], by_name.get(release_stage)
    while stage is not None:
        if stage.chat and stage.kind == "causal_lm":
            chain.append(stage)
        stage = by_name.get(stage.parent) if stage.parent else None
    return chain[::-1]


def test_time_compute_asset(stages: list[ModelStage], release_stage: str) -> dg.AssetsDefinition | None:
    """``evals/test_time_compute``: accuracy vs samples per query for each policy of the release lineage, with the
    reward model as best-of-N's verifier; its check asks majority@8 to beat @1 on the release policy."""
    policies = release_policies(stages, release_stage)
    if not policies or not any(s.key == REWARD for s in stages):
        return None
    tool_stage = next((s for s in stages if s.tools), None)  # the "use tools mid-thought" axis, where it exists
    deps = [s.key for s in policies] + [REWARD, BENCHMARKS] + ([tool_stage.key] if tool_stage else [])

    @dg.asset(key=TEST_TIME_COMPUTE, deps=deps, group_name="evals", code_version="1", kinds={"pytorch"},
              check_specs=[dg.AssetCheckSpec(TTC_CHECK, asset=TEST_TIME_COMPUTE, description=(
                  f"Majority vote over {TARGET_N} samples beats 1 sample on models/{release_stage}, paired, "
                  "p < alpha."))])
    def test_time_compute(context: dg.AssetExecutionContext, store: ArtifactStore, settings: PipelineSettings,
                          config: TestTimeComputeRunConfig) -> dg.MaterializeResult:
        """Accuracy vs N samples per query: majority vote, best-of-N and weighted best-of-N by the reward model,
        pass@N as the ceiling, tokens per query; per policy of the release lineage, with the spread over
        resamples."""
        from pipeline_assets.evals.harness import RewardModelJudge
        from pipeline_assets.evals.test_time_compute import curves_png, evaluate_test_time_compute, tools_vs_sampling
        from pipeline_assets.model_io import device_for, load_checkpoint
        from pipeline_assets.tasks.heldout import load_benchmark

        cfg = resolved(config, settings.profile)
        if cfg.num_threads:
            import torch
            torch.set_num_threads(cfg.num_threads)
        reads = Reads(store)
        device = device_for(cfg.device)
        records = load_benchmark(reads(BENCHMARKS), "arithmetic")[:cfg.limit]
        judge = RewardModelJudge(reads(REWARD), device=device, batch_size=cfg.batch_size)
        result: dict = {"release_stage": release_stage, "config": dataclasses.asdict(cfg), "policies": {}}
        for stage in policies:
            model, tok = load_checkpoint(reads(stage.key), device)
            out = evaluate_test_time_compute(model, tok, records, judge, ns=cfg.ns, temperature=cfg.temperature,
                                             max_new_tokens=cfg.max_new_tokens, batch_size=cfg.batch_size,
                                             resamples=cfg.resamples, seed=cfg.seed)
            result["policies"][stage.name] = out
            context.log.info(f"test-time compute | {stage.name} | N {out['ns']} | majority {out['majority']['mean']}"
                             f" | best-of-N {out['best_of_n']['mean']} | weighted {out['weighted']['mean']} | "
                             f"pass@N {out['pass_at_n']['mean']}")
        if tool_stage is not None:
            from pipeline_assets.tasks.tool_problems import MULTIPLY, problems

            tool_model, tool_tok = load_checkpoint(reads(tool_stage.key), device)  # `model`: the release policy, last
            hard = problems(MULTIPLY, "test", cfg.tools_limit, cfg.seed)
            axis = tools_vs_sampling(model, tok, tool_model, tool_tok, hard, n=max(cfg.ns), temperature=cfg.temperature,
                                     batch_size=cfg.batch_size, seed=cfg.seed)
            result["tools_vs_sampling"] = {"policy": release_stage, "tool_policy": tool_stage.name, **axis}
            context.log.info(f"test-time compute | {tool_stage.name} with tools, 1 answer: {axis['tool_accuracy']} "
                             f"({axis['tool_tokens_per_query']} tokens) vs {release_stage} majority of "
                             f"{axis['samples']}: {axis['majority_accuracy']} ({axis['majority_tokens_per_query']} "
                             f"tokens) on {axis['n_problems']} 3-digit products, p={axis['p_value']}")
        target = result["policies"][release_stage].get("majority_target") or {}
        passed = bool(target) and target["delta"] > 0 and target["p_value"] < cfg.alpha
        result["target"] = {"policy": release_stage, **target, "alpha": cfg.alpha, "passed": passed}
        with writing(context, store) as draft:
            write_summary(draft.work, result)
            (draft.work / "test_time_compute.png").write_bytes(curves_png(result["policies"]))
        return finish(context, store, draft, reads, {
            "majority_at_8": target.get("accuracy"), "majority_at_1": target.get("accuracy_at_1"),
            "p_value": target.get("p_value"), "n": len(records),
            "curves": dg.MetadataValue.json({name: {k: out[k] for k in ("ns", "majority", "best_of_n", "weighted",
                                                                        "pass_at_n", "tokens_per_query")}
                                             for name, out in result["policies"].items()})},
            [dg.AssetCheckResult(check_name=TTC_CHECK, passed=passed, metadata={
                "policy": release_stage, "delta": target.get("delta"), "p_value": target.get("p_value"),
                "alpha": cfg.alpha})])

    return test_time_compute
