"""``reports/report_card`` (every stage side by side) and ``release/model`` (only when blocking gates pass)."""

import json
import shutil
from pathlib import Path

import dagster as dg

from pipeline_assets.lineage import ModelStage
from pipeline_assets.metadata import path_md
from pipeline_assets.reports.gates import evaluate_gates
from pipeline_assets.reports.report_card import render_report_card
from pipeline_assets.run_config import StageOverrides, overridden
from resources import ArtifactStore, PipelineSettings

REPORT = dg.AssetKey(["reports", "report_card"])
RELEASE = dg.AssetKey(["release", "model"])


def _json(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.exists() else None


def _model_summary(store: ArtifactStore, stage: ModelStage) -> dict | None:
    root = store.path(stage.key.path)
    summary = _json(root / "summary.json") or _json(root / "pretrain_summary.json")
    if summary is None:
        return None
    evals = _json(store.path(stage.eval_key.path) / "eval.json") or {}
    # Missing keys (not None) let the report card fall back to the stage's eval (params, val bpb).
    return {"stage": f"models/{stage.name}", "parent": f"models/{stage.parent}" if stage.parent else None,
            "checkpoint_dir": str(root), **{k: summary[k] for k in (
                "num_params", "tokens_seen", "train_loss_first", "train_loss_final", "wall_time_s", "val_bpb",
                "loss_history", "val_history", "mfu_pct") if summary.get(k) is not None},
            **({"num_params": evals["num_params"]} if "num_params" not in summary and evals.get("num_params") else {})}


def _stage_metrics(store: ArtifactStore, stages: list[ModelStage]) -> dict[str, dict]:
    out = {}
    for s in stages:
        report = _json(store.path(s.eval_key.path) / "eval.json")
        if report:
            out[f"models/{s.name}"] = report["metrics"]
    return out


def _corpus_section(store: ArtifactStore) -> dict:
    rows = []
    for asset, stats_file in (("raw_documents", "stats.json"), ("filtered_documents", "stats_summary.json"),
                              ("decontaminated_documents", "stats_summary.json")):
        for part_dir in sorted(store.asset_root(["corpus", asset]).glob("[!.]*")):
            stats = _json(part_dir / stats_file) or {}
            rows.append({"stage": f"corpus/{asset}", "partition": part_dir.name,
                         "docs_in": stats.get("records_in", stats.get("documents_in")),
                         "docs_out": stats.get("documents", stats.get("documents_out")),
                         "removed_by_filter": stats.get("dropped_by_filter", stats.get("quarantine_reasons"))})
    dedup = _json(store.path(["corpus", "duplicate_clusters"]) / "report.json") or {}
    manifest = _json(store.path(["corpus", "training_mixture"]) / "manifest.json") or {}
    decont = [_json(d / "stats_summary.json") or {} for d in
              sorted(store.asset_root(["corpus", "decontaminated_documents"]).glob("[!.]*"))]
    by_task: dict[str, int] = {}
    for d in decont:
        for task, n in d.get("contaminated_by_task", {}).items():
            by_task[task] = by_task.get(task, 0) + n
    return {"stages": rows,
            "decontamination": {"documents_in": sum(d.get("documents_in", 0) for d in decont),
                                "contaminated_removed": sum(d.get("contaminated_removed", 0) for d in decont),
                                "contaminated_by_task": by_task},
            "dedup": {"exact_removed": dedup.get("exact_duplicates"),
                      "near_dup_removed": dedup.get("near_duplicates_to_remove"),
                      "clusters": dedup.get("clusters"), "largest_cluster": dedup.get("largest_cluster")},
            "mixture": {"domain_weights": manifest.get("domain_weights", {}).get("realized"),
                        **{f"{split}_{k}": manifest.get("totals", {}).get(split, {}).get(k)
                           for split in ("train", "val") for k in ("documents", "bytes")}}}


def report_assets(stages: list[ModelStage], code_versions: dict[str, str]) -> list[dg.AssetsDefinition]:
    """``code_versions``: asset key -> code version of every other asset, shown on the report card."""
    lineage = {f"models/{s.name}": f"models/{s.parent}" if s.parent else None for s in stages}
    evals = [s.eval_key for s in stages]

    @dg.asset(key=REPORT, deps=evals + [s.key for s in stages], group_name="reports", code_version="1",
              kinds={"markdown"}, automation_condition=dg.AutomationCondition.eager())
    def report_card(context: dg.AssetExecutionContext, store: ArtifactStore,
                    settings: PipelineSettings) -> dg.MaterializeResult:
        """One markdown page: data, tokenizer, every checkpoint's metrics and deltas, loss curves, gates."""
        profile = settings.get()
        metrics = _stage_metrics(store, stages)
        evals_full = {f"models/{s.name}": _json(store.path(s.eval_key.path) / "eval.json") for s in stages}
        tok = _json(store.path(["tokenizer", "tokenizer"]) / "tokenizer_summary.json")
        data = {"title": f"llmdag report card ({profile.name})", "profile": profile.name,
                "code_versions": code_versions,
                "corpus": _corpus_section(store), "tokenizer": tok,
                "models": [m for s in stages if (m := _model_summary(store, s))],
                "evals": {k: v for k, v in evals_full.items() if v},
                "gates": evaluate_gates(metrics, lineage, profile.gates), "lineage": lineage}
        final = store.asset_path(context)
        with store.writing(final) as work:
            result = render_report_card(data, work)
            (work / "report_data.json").write_text(json.dumps(data, indent=2, default=str))
        markdown = (final / "report_card.md").read_text()
        return dg.MaterializeResult(metadata={
            "report": dg.MetadataValue.md(markdown), "stages": len(data["models"]),
            "gates_passed": data["gates"]["passed"], "git_revision": result["git_revision"],
            "path": path_md(final / "report_card.md")})

    @dg.asset(key=RELEASE, deps=[REPORT] + evals + [s.key for s in stages], group_name="release",
              code_version="1", kinds={"huggingface"})
    def release_model(context: dg.AssetExecutionContext, store: ArtifactStore, settings: PipelineSettings,
                      config: StageOverrides) -> dg.MaterializeResult:
        """Ships ``models/<release_stage>`` only if every blocking gate passes; otherwise fails saying which.

        Run config overrides any GateConfig field (budgets, thresholds, which gate kinds block).
        """
        profile = settings.get()
        gates = evaluate_gates(_stage_metrics(store, stages), lineage, overridden(profile.gates, config))
        if not gates["passed"]:
            raise dg.Failure(description="release blocked by gates:\n" + "\n".join(gates["failures"]),
                             metadata={"failures": dg.MetadataValue.json(gates["failures"])})
        source = store.path(["models", profile.release_stage])
        final = store.asset_path(context)
        with store.writing(final) as work:
            shutil.copytree(source, work, dirs_exist_ok=True)
            (work / "gates.json").write_text(json.dumps(gates, indent=2, default=str))
        return dg.MaterializeResult(metadata={
            "released_stage": f"models/{profile.release_stage}", "gates": dg.MetadataValue.json(gates["summary"]),
            "warnings": dg.MetadataValue.json(gates["warnings"]), "path": path_md(final)})

    return [report_card, release_model]
