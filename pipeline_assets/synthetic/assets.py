"""`datasets/synthetic`: teacher-generated, verifier-filtered chat rows that accumulate across materializations.

The asset resolves its config, reads its upstream versions and its own published version (the rows it adds
to), calls ``generate.build_synthetic_dataset`` and re-checks what it wrote with two blocking checks: every
accepted row passes its verifier again, and none overlaps an eval item. A failed check keeps the version
unpublished, so models/distilled never trains on rows that did not pass.
"""

import json
from pathlib import Path

import dagster as dg

from pipeline_assets.asset_keys import BENCHMARKS, GRPO, MIXTURE, SFT_DATA, SYNTHETIC
from pipeline_assets.corpus.config import CorpusConfig
from pipeline_assets.jsonl import read_jsonl
from pipeline_assets.metadata import path_md, table
from pipeline_assets.posttrain.data import SYNTHETIC_FILE, SFTDataConfig
from pipeline_assets.publishing import Reads, finish, writing
from pipeline_assets.run_config import resolved, stage_config
from pipeline_assets.summary import write_summary
from pipeline_assets.synthetic.config import SyntheticDataConfig
from pipeline_assets.synthetic.prompts import STDLIB_SOURCE
from pipeline_assets.synthetic.verify import verify
from resources.settings import PipelineSettings
from resources.storage import ArtifactStore

SyntheticDataRunConfig = stage_config("SyntheticDataRunConfig", SyntheticDataConfig, "synthetic_data")
REVERIFY_CHECK = "accepted_rows_reverify"
OVERLAP_CHECK = "no_eval_overlap"


def _stdlib_files(mixture: Path) -> list[Path]:
    """The mixture's train files of the standard-library source: the documents docstring questions ask about."""
    manifest = json.loads((mixture / "manifest.json").read_text())
    return [mixture / e["file"] for e in manifest["train"] if e["source"] == STDLIB_SOURCE]


def reverify(rows: list[dict], min_f1: float) -> list[str]:
    """Ids of accepted rows whose stored reply fails its verifier when checked again."""
    return [r["id"] for r in rows if not verify(r, r["messages"][-1]["content"], min_f1).accepted]


def overlapping(rows: list[dict], bench_dir: Path, corpus: CorpusConfig) -> list[str]:
    """Ids of rows that share an n-gram with (or ask) an eval item."""
    from pipeline_assets.synthetic.clean import Decontaminator  # datatrove: imported when it runs

    decont = Decontaminator(bench_dir, corpus)
    try:
        return [r["id"] for r in rows if decont(r)]
    finally:
        decont.close()


@dg.asset(key=SYNTHETIC, deps=[GRPO, SFT_DATA, BENCHMARKS, MIXTURE], group_name="datasets",
          code_version="1", kinds={"pytorch"},
          check_specs=[dg.AssetCheckSpec(REVERIFY_CHECK, asset=SYNTHETIC, blocking=True),
                       dg.AssetCheckSpec(OVERLAP_CHECK, asset=SYNTHETIC, blocking=True)])
def synthetic_data(context: dg.AssetExecutionContext, store: ArtifactStore, settings: PipelineSettings,
                   config: SyntheticDataRunConfig) -> dg.MaterializeResult:
    """Teacher answers to grounded prompts that passed their verifier, decontamination and near-dedup; each
    materialization adds a generation to the rows of the published version."""
    from pipeline_assets.synthetic.generate import build_synthetic_dataset  # transformers, torch
    cfg = resolved(config, settings.profile)
    corpus = settings.config(CorpusConfig, "corpus")
    reads = Reads(store)
    previous = store.current(SYNTHETIC.path) if store.has_current(SYNTHETIC.path) else None
    teacher = Path(cfg.teacher_path) if cfg.teacher_path else reads(GRPO)
    with writing(context, store) as draft:
        result = build_synthetic_dataset(
            draft.work, cfg, teacher, reads(SFT_DATA), reads(BENCHMARKS),
            _stdlib_files(reads(MIXTURE)), corpus, settings.config(SFTDataConfig, "sft_data"), previous,
            log=context.log.info)
        write_summary(draft.work, result)
    rows = read_jsonl(draft.version.path / SYNTHETIC_FILE)
    failed = reverify(rows, cfg.docstring_min_f1)
    overlap = overlapping(rows, reads(BENCHMARKS), corpus)
    checks = [
        dg.AssetCheckResult(check_name=REVERIFY_CHECK, passed=not failed,
                            metadata={"rows": len(rows), "failed": len(failed), "failed_ids": failed[:20]}),
        dg.AssetCheckResult(check_name=OVERLAP_CHECK, passed=not overlap,
                            metadata={"rows": len(rows), "overlapping": len(overlap), "ids": overlap[:20]}),
    ]
    acceptance = [{"verifier": v, **a} for v, a in result["acceptance_by_verifier"].items()]
    return finish(context, store, draft, reads, {
        **{k: v for k, v in result.items() if isinstance(v, (int, float, str)) or v is None},
        "dagster/row_count": result["rows"],
        "acceptance_by_verifier": table(acceptance),
        "rejected_by_reason": dg.MetadataValue.json(result["rejected_by_reason"]),
        "rows_by_generation": dg.MetadataValue.json(result["rows_by_generation"]),
        "samples": table(result["samples"]),
        "teacher_dir": path_md(teacher),
        "accumulated_from": result["accumulated_from"] or "nothing (first generation)",
    }, checks)
