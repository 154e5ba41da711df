"""Data checks of the corpus assets: each compares a number the asset just produced with a bound.

They run inside the asset (``check_specs`` + ``check_results``) on the new version before it is
published (pipeline_assets/publishing.py): a failing blocking check keeps the previous version current
and stops downstream steps; results are recorded per source partition.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import dagster as dg

from pipeline_assets.corpus.config import CorpusConfig

BLOCKING = {"better_than_chance", "has_documents", "unique_ids", "no_eval_ngrams_left", "weights_sum_to_one",
            "train_val_disjoint"}
MAX_QUARANTINE_FRACTION = 0.5
MAX_FILTER_DROP_FRACTION = 0.95
MAX_DEDUP_REMOVAL_FRACTION = 0.8


def specs(key: dg.AssetKey, names: list[str],
          partitions_def: dg.PartitionsDefinition | None = None) -> list[dg.AssetCheckSpec]:
    """With ``partitions_def`` each source's result is its own (one source passing never hides another failing)."""
    with warnings.catch_warnings():  # partitioned checks are "preview" in 1.13; checked on 1.13.27 (pinned)
        warnings.filterwarnings("ignore", message=".*partitions_def on an AssetCheckSpec.*")
        return [dg.AssetCheckSpec(name, asset=key, blocking=name in BLOCKING, partitions_def=partitions_def)
                for name in names]


def _result(key: dg.AssetKey, name: str, passed: bool, **metadata) -> dg.AssetCheckResult:
    severity = dg.AssetCheckSeverity.ERROR if name in BLOCKING else dg.AssetCheckSeverity.WARN
    return dg.AssetCheckResult(asset_key=key, check_name=name, passed=bool(passed), severity=severity,
                               metadata=metadata)


def raw(key: dg.AssetKey, r: dict) -> list[dg.AssetCheckResult]:
    frac = r["quarantined"] / max(r["docs_in"], 1)
    return [_result(key, "has_documents", r["docs_out"] > 0, documents=r["docs_out"]),
            _result(key, "quarantine_below_half", frac < MAX_QUARANTINE_FRACTION,
                    quarantine_fraction=round(frac, 4), threshold=MAX_QUARANTINE_FRACTION)]


def filtered(key: dg.AssetKey, r: dict) -> list[dg.AssetCheckResult]:
    frac = 1 - r["docs_out"] / max(r["docs_in"], 1)
    return [_result(key, "has_documents", r["docs_out"] > 0, documents=r["docs_out"]),
            _result(key, "drop_ratio_sane", frac < MAX_FILTER_DROP_FRACTION, drop_fraction=round(frac, 4),
                    threshold=MAX_FILTER_DROP_FRACTION)]


MAX_AUC_P_VALUE = 0.01
MIN_REFERENCE_KEPT = 0.9  # a classifier dropping >10% of held-out reference text would gut the clean sources


def quality_classifier(key: dg.AssetKey, r: dict) -> list[dg.AssetCheckResult]:
    held = r["heldout"]
    return [_result(key, "better_than_chance", r["auc_p_value"] < MAX_AUC_P_VALUE and held["auc"] > 0.5,
                    auc=held["auc"], p_value=r["auc_p_value"], n=held["n"], threshold=MAX_AUC_P_VALUE),
            _result(key, "keeps_reference", r["heldout_hq_kept"] >= MIN_REFERENCE_KEPT,
                    heldout_hq_kept=r["heldout_hq_kept"], threshold=MIN_REFERENCE_KEPT)]


def clusters(key: dg.AssetKey, report: dict) -> list[dg.AssetCheckResult]:
    total = report["documents_total"]
    frac = report["near_duplicates_to_remove"] / max(total, 1)
    return [_result(key, "removal_fraction_sane", frac < MAX_DEDUP_REMOVAL_FRACTION,
                    removal_fraction=round(frac, 4), threshold=MAX_DEDUP_REMOVAL_FRACTION)]


def _ids(files: list[Path]) -> list[str]:
    return [json.loads(line)["id"] for p in files for line in p.open(encoding="utf-8")]


def unique_ids(key: dg.AssetKey, docs_dir: Path) -> dg.AssetCheckResult:
    ids = _ids(sorted(docs_dir.glob("*.jsonl")))
    return _result(key, "unique_ids", len(ids) == len(set(ids)), documents=len(ids),
                   duplicate_ids=len(ids) - len(set(ids)))


def no_eval_ngrams_left(key: dg.AssetKey, docs_dir: Path, index_dir: Path, cfg: CorpusConfig) -> dg.AssetCheckResult:
    from pipeline_assets.corpus.decontaminate import count_contaminated  # datatrove: imported when it runs

    left = count_contaminated(docs_dir, index_dir, cfg)
    return _result(key, "no_eval_ngrams_left", not left, contaminated_documents=sum(left.values()),
                   by_task=dg.MetadataValue.json(dict(left)))


def mixture(key: dg.AssetKey, out_dir: Path) -> list[dg.AssetCheckResult]:
    manifest = json.loads((out_dir / "manifest.json").read_text())
    effective = manifest["domain_weights"]["effective"]
    train = set(_ids([out_dir / e["file"] for e in manifest["train"]]))
    val = set(_ids([out_dir / e["file"] for e in manifest["val"]]))
    return [_result(key, "weights_sum_to_one", abs(sum(effective.values()) - 1) < 1e-3,
                    weight_sum=round(sum(effective.values()), 6)),
            _result(key, "train_val_disjoint", not (train & val) and train and val,
                    train_ids=len(train), val_ids=len(val), overlap=len(train & val))]

