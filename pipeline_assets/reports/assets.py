"""``reports/report_card`` (every stage side by side) and ``release/model`` (only when blocking gates pass)."""

import json
import re
import shutil
from collections.abc import Sequence
from pathlib import Path

import dagster as dg

from pipeline_assets.asset_keys import ARENA, RELEASE, REPORT_CARD, SYNTHETIC, TEST_TIME_COMPUTE, model_key
from pipeline_assets.corpus.assets import registered_sources
from pipeline_assets.metadata import path_md
from pipeline_assets.pretrain.variants import vs_dense
from pipeline_assets.publishing import Reads, finish, writing
from pipeline_assets.reports.gates import GateConfig, evaluate_gates
from pipeline_assets.reports.time_table import StepTime, time_table
from pipeline_assets.run_config import resolved, stage_config
from pipeline_assets.stages import ModelStage
from pipeline_assets.summary import SUMMARY_FILE
from resources.settings import PipelineSettings
from resources.storage import ArtifactStore

GateRunConfig = stage_config("GateRunConfig", GateConfig, "gates")

GATES_CHECK = "gates_pass"
INLINE_PNG = re.compile(r"!\[([^\]]*)\]\(data:image/png;base64,[^)]*\)")


def _json(path: Path | None) -> dict | None:
    return json.loads(path.read_text()) if path is not None and path.exists() else None


def _published(reads: Reads, key: list[str], partition: str | None = None) -> Path | None:
    """The published version, or None: the report card shows whatever stages exist so far."""
    asset = dg.AssetKey(key)
    return reads(asset, partition) if reads.store.has_current(key, partition) else None


def _model_summary(reads: Reads, stage: ModelStage) -> dict | None:
    root = _published(reads, stage.key.path)
    if root is None:
        return None
    summary = _json(root / SUMMARY_FILE)
    if summary is None:
        return None
    evals = _json(_file(reads, stage.eval_key.path, SUMMARY_FILE)) or {}
    # Missing keys (not None) let the report card fall back to the stage's eval (params, val bpb).
    return {"stage": f"models/{stage.name}", "parent": f"models/{stage.parent}" if stage.parent else None,
            "checkpoint_dir": str(root), **{k: summary[k] for k in (
                "num_params", "tokens_seen", "train_loss_first", "train_loss_final", "wall_time_s",
                "loss_history", "val_history", "mfu_pct") if summary.get(k) is not None},
            **({"num_params": evals["num_params"]} if "num_params" not in summary and evals.get("num_params") else {})}


def _file(reads: Reads, key: list[str], name: str, partition: str | None = None) -> Path | None:
    root = _published(reads, key, partition)
    return root / name if root is not None else None


def _stage_metrics(reads: Reads, stages: list[ModelStage]) -> dict[str, dict]:
    out = {}
    for s in stages:
        report = _json(_file(reads, s.eval_key.path, SUMMARY_FILE))
        if report:
            out[f"models/{s.name}"] = report["metrics"]
    return out


def _stage_items(reads: Reads, stages: list[ModelStage]) -> dict[str, dict]:
    """Per-item scores of each evaluated stage; evals written before per-item recording have none (delta gates)."""
    out = {}
    for s in stages:
        report = _json(_file(reads, s.eval_key.path, SUMMARY_FILE))
        if report and report.get("per_item"):
            out[f"models/{s.name}"] = report["per_item"]
    return out


def _check_description(release: dict, gates: dict) -> str:
    """What blocked the release, then what failed but does not block it (off its lineage, an ancestor's safety)."""
    blocking = release["blocked_by"]
    others = [m for g in gates["gates"] if g["status"] == "fail" for m in g["messages"] if m not in blocking]
    head = "blocked by:\n" + "\n".join(blocking) if blocking else f"{release['stage']}: its lineage's gates passed"
    return head + ("\nreported, not blocking:\n" + "\n".join(others) if others else "")


# The columns of the report card's per-source table: each filter of a domain recipe counts under one of them.
SAFETY_FILTERS = ("toxicity", "malware")
MODEL_FILTERS = ("quality_classifier",)


def _source_summaries(reads: Reads, sources: list[str]) -> dict[str, dict[str, dict]]:
    """Per-source corpus asset -> source -> its summary.json (a source without one is left out), read once."""
    return {asset: {p: stats for p in sources
                    if (stats := _json(_file(reads, ["corpus", asset], SUMMARY_FILE, p))) is not None}
            for asset in ("raw_documents", "filtered_documents", "deduplicated_documents", "decontaminated_documents")}


def per_source(summaries: dict[str, dict[str, dict]]) -> dict[str, dict]:
    """Per source: documents in, dropped by each kind of filter, kept (what reached the mixture's input)."""
    out = {}
    for part, filtered in summaries["filtered_documents"].items():
        raw = summaries["raw_documents"].get(part)
        if raw is None:
            continue
        dedup = summaries["deduplicated_documents"].get(part, {})
        decont = summaries["decontaminated_documents"].get(part, {})
        removed = filtered["removed_by_filter"]
        out[part] = {
            "docs_in": raw["docs_in"], "quarantined": raw["quarantined"],
            "language": removed.get("language", 0),
            "heuristic": sum(n for k, n in removed.items()
                             if k not in ("language", *SAFETY_FILTERS, *MODEL_FILTERS)),
            "quality": removed.get("quality_classifier", 0),
            **{k: removed.get(k, 0) for k in SAFETY_FILTERS},
            "safety_reasons": {k: filtered["drop_reasons"].get(k, {}) for k in SAFETY_FILTERS if removed.get(k)},
            "dedup": dedup.get("exact_duplicates_removed", 0) + dedup.get("near_duplicates_removed", 0),
            "decontamination": decont.get("contaminated_removed", 0),
            "kept": decont.get("docs_out"),
        }
    return out


SYNTHETIC_FIGURES = ("generation", "teacher_version", "rows", "rejected_rows", "new_rows", "asked", "acceptance_rate",
                     "acceptance_by_verifier", "acceptance_by_verifier_all", "rejected_by_reason_all",
                     "rows_by_generation", "rows_by_kind", "distinct_1", "distinct_2")


def _synthetic_section(reads: Reads, stages: list[ModelStage]) -> dict | None:
    """datasets/synthetic's figures, and per training stage that reads it: the share it trained at and the
    paired effect its eval measured against the same recipe without the rows."""
    summary = _json(_file(reads, SYNTHETIC.path, SUMMARY_FILE))
    if summary is None:
        return None
    consumers = {}
    for s in stages:
        if SYNTHETIC in s.inputs:
            model = _json(_file(reads, s.key.path, SUMMARY_FILE)) or {}
            report = _json(_file(reads, s.eval_key.path, SUMMARY_FILE)) or {}
            consumers[f"models/{s.name}"] = {"rows": model.get("synthetic_rows"), "share": model.get("synthetic_share"),
                                            "max_share": model.get("synthetic_max_share"),
                                            "effect": report.get("synthetic_effect")}
    return {**{k: summary.get(k) for k in SYNTHETIC_FIGURES}, "consumers": consumers}


def _architecture_section(reads: Reads, stages: list[ModelStage]) -> dict[str, dict]:
    """Per pretraining variant with experts (models/base_moe): its cost and fairness figures beside the dense
    model it is compared with, and its routing as its eval measured it."""
    out = {}
    for s in stages:
        model = _json(_file(reads, s.key.path, SUMMARY_FILE)) or {}
        if not (model.get("config") or {}).get("moe_num_experts") or s.parent_key is None:
            continue
        dense = _json(_file(reads, s.parent_key.path, SUMMARY_FILE)) or {}
        report = _json(_file(reads, s.eval_key.path, SUMMARY_FILE)) or {}
        out[f"models/{s.name}"] = {"vs": f"models/{s.parent}", "num_experts": model["config"]["moe_num_experts"],
                                   "top_k": model["config"]["moe_top_k"], **vs_dense(model, dense),
                                   "router_aux_loss_final": model.get("router_aux_loss_final"),
                                   "routing": report.get("moe_routing")}
    return out


def _corpus_section(reads: Reads, sources: list[str]) -> dict:
    summaries = _source_summaries(reads, sources)
    # raw_documents removes nothing by filter: its quarantine reasons stand in that column
    rows = [{"stage": f"corpus/{asset}", "partition": part, "docs_in": stats.get("docs_in"),
             "docs_out": stats.get("docs_out"),
             "removed_by_filter": stats.get("removed_by_filter", stats.get("quarantine_reasons"))}
            for asset in ("raw_documents", "filtered_documents", "decontaminated_documents")
            for part, stats in summaries[asset].items()]
    dedup = _json(_file(reads, ["corpus", "duplicate_clusters"], SUMMARY_FILE)) or {}
    manifest = _json(_file(reads, ["corpus", "training_mixture"], "manifest.json")) or {}
    decont = list(summaries["decontaminated_documents"].values())
    by_task: dict[str, int] = {}
    for d in decont:
        for task, n in d.get("contaminated_by_task", {}).items():
            by_task[task] = by_task.get(task, 0) + n
    return {"stages": rows, "per_source": per_source(summaries),
            "quality_classifier": _json(_file(reads, ["corpus", "quality_classifier"], SUMMARY_FILE)),
            "decontamination": {"docs_in": sum(d.get("docs_in", 0) for d in decont),
                                "contaminated_removed": sum(d.get("contaminated_removed", 0) for d in decont),
                                "contaminated_by_task": by_task},
            "dedup": {"exact_removed": dedup.get("exact_duplicates"),
                      "near_dup_removed": dedup.get("near_duplicates_to_remove"),
                      "clusters": dedup.get("clusters"), "largest_cluster": dedup.get("largest_cluster")},
            "mixture": {"domain_weights": manifest.get("domain_weights", {}).get("realized"),
                        **{f"{split}_{k}": manifest.get("totals", {}).get(split, {}).get(k)
                           for split in ("train", "val") for k in ("documents", "bytes")}}}


def _step_times(instance: dg.DagsterInstance, parents: dict[str, list[str]],
                partitioned: set[str]) -> list[StepTime]:
    """Each asset's latest materialization per partition: its step's start and end (Dagster's step stats) and
    what it cost (its metadata, pipeline_assets/step_usage.py)."""
    steps: list[StepTime] = []
    for name in parents:
        key = dg.AssetKey.from_user_string(name)
        for partition in sorted(instance.get_materialized_partitions(key)) if name in partitioned else [None]:
            records = instance.fetch_materializations(
                dg.AssetRecordsFilter(asset_key=key, asset_partitions=[partition] if partition else None),
                limit=1).records
            entry = records[0].event_log_entry if records else None
            if entry is None or entry.step_key is None or entry.asset_materialization is None:
                continue
            stats = instance.get_run_step_stats(entry.run_id, step_keys=[entry.step_key])
            if not stats or stats[0].start_time is None:
                continue
            meta = entry.asset_materialization.metadata
            steps.append(StepTime(name, partition, stats[0].start_time, stats[0].end_time or entry.timestamp,
                                  _number(meta, "cpu_time_s"), _number(meta, "peak_rss_mb")))
    return steps


def _number(metadata: dict, name: str) -> float | None:
    value = getattr(metadata.get(name), "value", None)
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def report_assets(stages: list[ModelStage], upstream: Sequence[dg.AssetsDefinition],
                  test_time_compute: bool = False) -> list[dg.AssetsDefinition]:
    """``upstream``: every other asset of the graph (their code versions and edges go on the report card: a
    run of a selection sees only part of the graph); ``test_time_compute``: the graph has
    evals/test_time_compute, whose curves the card plots."""
    code_versions = {k.to_user_string(): v for a in upstream for k, v in a.code_versions_by_key.items() if v}
    parents = {k.to_user_string(): sorted(p.to_user_string() for p in deps)
               for a in upstream for k, deps in a.asset_deps.items()}
    partitioned = {k.to_user_string() for a in upstream if a.partitions_def is not None for k in a.keys}
    lineage = {f"models/{s.name}": f"models/{s.parent}" if s.parent else None for s in stages}
    evals = [s.eval_key for s in stages]
    card_deps = evals + [s.key for s in stages] + ([TEST_TIME_COMPUTE] if test_time_compute else []) + [ARENA]

    @dg.asset(key=REPORT_CARD, deps=card_deps, group_name="reports", code_version="1",
              kinds={"markdown"}, automation_condition=dg.AutomationCondition.eager())
    def report_card(context: dg.AssetExecutionContext, store: ArtifactStore,
                    settings: PipelineSettings) -> dg.MaterializeResult:
        """One markdown page: data, tokenizer, every checkpoint's metrics and deltas, loss curves, gates."""
        from pipeline_assets.reports.report_card import render_report_card  # matplotlib: run time only

        release_stage = settings.pipeline().release_stage
        reads = Reads(store)
        metrics = _stage_metrics(reads, stages)
        items = _stage_items(reads, stages)
        evals_full = {f"models/{s.name}": _json(_file(reads, s.eval_key.path, SUMMARY_FILE)) for s in stages}
        tok = _json(_file(reads, ["tokenizer", "tokenizer"], SUMMARY_FILE))
        data = {"title": f"llmdag report card ({settings.profile})", "profile": settings.profile,
                "code_versions": code_versions,
                "corpus": {**_corpus_section(reads, registered_sources(context)),
                           "synthetic": _synthetic_section(reads, stages)}, "tokenizer": tok,
                "models": [m for s in stages if (m := _model_summary(reads, s))],
                "architectures": _architecture_section(reads, stages),
                "test_time_compute": _json(_file(reads, TEST_TIME_COMPUTE.path, SUMMARY_FILE))
                if test_time_compute else None,
                "arena": _json(_file(reads, ARENA.path, SUMMARY_FILE)),
                "evals": {k: v for k, v in evals_full.items() if v},
                "gates": evaluate_gates(metrics, lineage, settings.config(GateConfig, "gates"), items,
                                        release_stage=f"models/{release_stage}"), "lineage": lineage,
                "time_table": time_table(_step_times(context.instance, parents, partitioned), parents)}
        with writing(context, store) as draft:
            result = render_report_card(data, draft.work)
            (draft.work / "report_data.json").write_text(json.dumps(data, indent=2, default=str))
        final = draft.version.path
        # The plots stay files beside the markdown: base64 images would put megabytes in the event log.
        markdown = INLINE_PNG.sub(lambda m: f"_[{m.group(1)}: see the PNG files in {final}]_",
                                  (final / "report_card.md").read_text())
        return finish(context, store, draft, reads, {
            "report": dg.MetadataValue.md(markdown), "stages": len(data["models"]),
            "gates_passed": data["gates"]["passed"], "released": result["released"],
            "git_revision": result["git_revision"], "report_card_md": path_md(final / "report_card.md"),
            "report_card_json": path_md(final / "report_card.json")})

    @dg.asset(key=RELEASE, deps=[REPORT_CARD] + evals + [s.key for s in stages], group_name="release",
              code_version="1", kinds={"huggingface"},
              check_specs=[dg.AssetCheckSpec(GATES_CHECK, asset=RELEASE, blocking=True,
                                             description="Every blocking gate on the released stage's lineage passes "
                                                         "(and its own safety gate).")])
    def release_model(context: dg.AssetExecutionContext, store: ArtifactStore, settings: PipelineSettings,
                      config: GateRunConfig) -> dg.MaterializeResult:
        """Ships ``models/<release_stage>`` only if the blocking gates of its lineage pass; ``gates_pass`` says why not.

        Only the stages the released model is built from (base -> sft -> grpo, say) and its own safety can block
        it; a failing stage off that path (dpo) is listed in the check, not blocking. A refused release is
        recorded (its gates.json, the failed check) but never published: the last good release stays the one
        users load. Run config overrides any GateConfig field.
        """
        release_stage = settings.pipeline().release_stage
        reads = Reads(store)
        metrics = _stage_metrics(reads, stages)
        shipped = f"models/{release_stage}"
        gates = evaluate_gates(metrics, lineage, resolved(config, settings.profile), _stage_items(reads, stages),
                               release_stage=shipped)
        # A stage with no published checkpoint or no eval has passed no gate: refuse, do not crash.
        missing = []
        if not store.has_current(shipped):
            missing.append(f"{shipped}: no published checkpoint")
        if shipped not in metrics:
            missing.append(f"{shipped}: not evaluated (materialize evals/{release_stage})")
        release = {**gates["release"], "blocked_by": [*missing, *gates["release"]["blocked_by"]]}
        release["released"] = not release["blocked_by"]
        gates = {**gates, "release": release}
        with writing(context, store) as draft:
            if release["released"]:
                shutil.copytree(reads(model_key(release_stage)), draft.work, dirs_exist_ok=True)
            (draft.work / "gates.json").write_text(json.dumps(gates, indent=2, default=str))
        if not release["released"]:
            context.log.warning("release blocked by gates:\n" + "\n".join(release["blocked_by"]))
        check = dg.AssetCheckResult(check_name=GATES_CHECK, passed=release["released"],
                                    description=_check_description(release, gates),
                                    metadata={"blocked_by": dg.MetadataValue.json(release["blocked_by"]),
                                              "failures": dg.MetadataValue.json(gates["failures"])})
        return finish(context, store, draft, reads, {
            "released_stage": shipped, "released": release["released"],
            "gates": dg.MetadataValue.json(gates["summary"]),
            "warnings": dg.MetadataValue.json(gates["warnings"])}, [check])

    return [report_card, release_model]
