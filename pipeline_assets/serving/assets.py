"""``serving/smoke``: the release served by ``llmdag serve``'s app and probed with the openai client; a release
that cannot be served, or answers differently served than evaluated, fails ``serves_release``."""

import dagster as dg

from pipeline_assets.asset_keys import BENCHMARKS, RELEASE, SERVING_SMOKE, eval_key
from pipeline_assets.evals.config import EvalConfig
from pipeline_assets.metadata import path_md
from pipeline_assets.profiles import section_config
from pipeline_assets.publishing import Reads, finish, writing
from pipeline_assets.run_config import resolved, stage_config
from pipeline_assets.serving.config import ServeConfig
from pipeline_assets.summary import SUMMARY_FILE, read_summary, write_summary
from resources.settings import PipelineSettings
from resources.storage import ArtifactStore

ServeRunConfig = stage_config("ServeRunConfig", ServeConfig, "serve")
SERVES_CHECK = "serves_release"
# Served and evaluated greedy answers agree on at least this share of items: both are the same greedy decode,
# but the eval pads batches (left-padding moves float sums), so an exact 1.0 is not promised.
MIN_AGREEMENT = 0.95


def agreement(served: dict[str, bool], evaluated: dict | None) -> tuple[float | None, float | None, int]:
    """(share of common items scored the same, the eval's accuracy on them, how many) vs the eval's per-item
    arithmetic scores (``per_item.arithmetic_accuracy``: ids + scores)."""
    items = (evaluated or {}).get("per_item", {}).get("arithmetic_accuracy") or {}
    scores = dict(zip(items.get("ids", []), items.get("scores", []), strict=False))
    common = [i for i in served if i in scores]
    if not common:
        return None, None, 0
    same = sum(bool(scores[i]) == served[i] for i in common) / len(common)
    return round(same, 4), round(sum(scores[i] for i in common) / len(common), 4), len(common)


def smoke_asset(release_stage: str) -> dg.AssetsDefinition:
    @dg.asset(key=SERVING_SMOKE, deps=[RELEASE, eval_key(release_stage), BENCHMARKS], group_name="serving",
              code_version="1", kinds={"fastapi"},
              check_specs=[dg.AssetCheckSpec(SERVES_CHECK, asset=SERVING_SMOKE, description=(
                  "The release serves over the OpenAI API: listed, streamed, 4xx for bad requests, and served "
                  f"greedy answers agree with evals/{release_stage} on >= {MIN_AGREEMENT:.0%} of items."))])
    def serving_smoke(context: dg.AssetExecutionContext, store: ArtifactStore, settings: PipelineSettings,
                      config: ServeRunConfig) -> dg.MaterializeResult:
        """Starts the ``llmdag serve`` app on the published release (127.0.0.1, a free port), sends the held-out
        arithmetic set one request at a time and ``smoke_concurrency`` at once, a stream and bad requests, and
        tears it down; records latency, throughput and the served accuracy next to the evaluated one."""
        from pipeline_assets.model_io import find_model_dir
        from pipeline_assets.serving.server import ServedModel
        from pipeline_assets.serving.smoke import smoke_test
        from pipeline_assets.tasks.heldout import load_benchmark

        cfg = resolved(config, settings.profile)
        if not store.has_current(RELEASE.path):
            raise dg.Failure("release/model has no published version (its gates blocked every release so far): "
                             "nothing to serve; `llmdag serve <stage>` serves any stage")
        reads = Reads(store)
        records = load_benchmark(reads(BENCHMARKS), "arithmetic")
        max_tokens = section_config(EvalConfig, "evals", settings.profile).arithmetic_max_new_tokens
        out = smoke_test(ServedModel("release", find_model_dir(reads(RELEASE))), cfg, records, max_tokens)
        same, evaluated, n = agreement(out["correct_by_id"], read_summary(reads(eval_key(release_stage))))
        out.update(release_stage=release_stage, agreement_with_eval=same, eval_accuracy_same_items=evaluated,
                   agreement_n=n)
        problems = list(out["problems"])
        if same is None:
            problems.append(f"evals/{release_stage} has no per-item arithmetic scores to compare with")
        elif same < MIN_AGREEMENT:
            problems.append(f"served answers agree with evals/{release_stage} on {same:.0%} of {n} items "
                            f"(needs {MIN_AGREEMENT:.0%})")
        context.log.info(f"serving/smoke | {out['n']} prompts | served accuracy {out['accuracy']} vs evaluated "
                         f"{evaluated} | p50 {out['latency_p50_s']} s p95 {out['latency_p95_s']} s | "
                         f"{out['concurrent_tokens_per_s']} tok/s at {out['concurrency']} clients vs "
                         f"{out['sequential_tokens_per_s']} one at a time")
        with writing(context, store) as draft:
            write_summary(draft.work, {**out, "problems": problems})
        check = dg.AssetCheckResult(check_name=SERVES_CHECK, passed=not problems,
                                    description="; ".join(problems) or "served, streamed, refused bad requests and "
                                                                       "matched the eval",
                                    metadata={"problems": dg.MetadataValue.json(problems)})
        return finish(context, store, draft, reads, {
            "served_accuracy": out["accuracy"], "eval_accuracy": evaluated, "agreement_with_eval": same,
            "n": out["n"], "latency_p50_s": out["latency_p50_s"], "latency_p95_s": out["latency_p95_s"],
            "sequential_tokens_per_s": out["sequential_tokens_per_s"],
            "concurrent_tokens_per_s": out["concurrent_tokens_per_s"], "throughput_ratio": out["throughput_ratio"],
            "refusal_statuses": dg.MetadataValue.json(out["refusal_statuses"]), "example": dg.MetadataValue.json(
                out["example"]), "summary": path_md(draft.version.path / SUMMARY_FILE)}, [check])

    return serving_smoke
