"""Domain mixing and the train/val split: the last corpus step, the input of tokenizer and pretraining.

Each document goes to val with probability ``val_fraction`` by a hash of its id (stable when sources
are added). Train data is then resampled so each domain's share of bytes matches ``domain_weights``:
a domain is repeated (at most ``max_repeats`` times) or subsampled, deterministically by id hash.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

from pipeline_assets.corpus.config import CorpusConfig

MANIFEST_FORMAT = "llmdag-mixture/1"


def _unit(doc_id: str, salt: str) -> float:
    """A deterministic uniform number in [0, 1) per document."""
    return int.from_bytes(hashlib.sha1(f"{salt}:{doc_id}".encode()).digest()[:8], "big") / 2**64


def _read(docs_dir: Path) -> list[dict]:
    return [json.loads(line) for path in sorted(docs_dir.glob("*.jsonl")) for line in path.open(encoding="utf-8")]


def build_mixture(sources: dict[str, tuple[str, Path]], out_dir: Path, cfg: CorpusConfig) -> dict:
    """``sources``: name -> (domain, decontaminated documents dir). Writes train/, val/, manifest.json."""
    cfg.validate()
    splits: dict[str, dict[str, list[dict]]] = {}
    domain_bytes: dict[str, int] = {}
    for name, (domain, docs_dir) in sorted(sources.items()):
        docs = _read(docs_dir)
        u = {d["id"]: _unit(d["id"], f"val{cfg.seed}") for d in docs}
        # Every source with 2+ documents gets at least one val document, so per-domain metrics exist.
        cut = max(cfg.val_fraction, min(u.values())) if len(docs) > 1 else cfg.val_fraction
        val = [d for d in docs if u[d["id"]] <= cut]
        train = [d for d in docs if u[d["id"]] > cut]
        splits[name] = {"train": train, "val": val}
        domain_bytes[domain] = domain_bytes.get(domain, 0) + sum(len(d["text"].encode()) for d in train)
    present = {d for d, b in domain_bytes.items() if b > 0}
    weights = {d: w for d, w in cfg.domain_weights.items() if d in present and w > 0}
    if not weights:
        raise ValueError(f"no domain with data has a positive weight: data in {sorted(present)}, "
                         f"weights {cfg.domain_weights}; add a weight for one of them")
    norm = sum(weights.values())
    weights = {d: w / norm for d, w in weights.items()}
    # Budget = the natural size of the weighted domains; a domain too small for its weight is repeated
    # at most max_repeats times and ends below its weight (the manifest shows requested vs realized).
    budget = sum(domain_bytes[d] for d in weights)
    repeats = {d: min(weights.get(d, 0.0) * budget / b, cfg.max_repeats) if b else 0.0
               for d, b in domain_bytes.items()}

    manifest: dict = {"format": MANIFEST_FORMAT, "train": [], "val": [], "val_fraction": cfg.val_fraction,
                      "max_repeats": cfg.max_repeats, "seed": cfg.seed}
    realized: dict[str, int] = {}
    for split in ("train", "val"):
        (out_dir / split).mkdir(parents=True, exist_ok=True)
    for name, (domain, _) in sorted(sources.items()):
        for split in ("train", "val"):
            docs = splits[name][split]
            path = out_dir / split / f"{name}.jsonl"
            n_docs = n_bytes = 0
            r = repeats[domain] if split == "train" else 1.0
            with path.open("w", encoding="utf-8") as f:
                # Epoch by epoch, so a repeated document is never adjacent to its copy.
                for epoch in range(math.ceil(r)):
                    for d in docs:
                        if epoch < math.floor(r) or _unit(d["id"], f"mix{cfg.seed}:{epoch}") < r - math.floor(r):
                            f.write(json.dumps(d, ensure_ascii=False) + "\n")
                            n_docs += 1
                            n_bytes += len(d["text"].encode())
            if split == "train":
                realized[domain] = realized.get(domain, 0) + n_bytes
            manifest[split].append({"file": f"{split}/{name}.jsonl", "source": name, "domain": domain,
                                    "documents": n_docs, "unique_documents": len(docs), "bytes": n_bytes,
                                    "repeats": round(r, 4)})
    total = sum(realized.values()) or 1
    manifest["domain_weights"] = {
        "requested": cfg.domain_weights,
        "effective": {d: round(w, 4) for d, w in weights.items()},
        "realized": {d: round(b / total, 4) for d, b in realized.items()},
        "unweighted_domains_dropped": sorted(present - set(weights)),
    }
    manifest["totals"] = {split: {"documents": sum(e["documents"] for e in manifest[split]),
                                  "bytes": sum(e["bytes"] for e in manifest[split])} for split in ("train", "val")}
    (out_dir / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return manifest
