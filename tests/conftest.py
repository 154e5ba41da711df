"""Shared fixtures: an isolated artifact root, Dagster instance and landing folder per test session."""

from __future__ import annotations

import logging
import os
import signal
from collections import defaultdict
from pathlib import Path

import dagster as dg
import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
# Tiny models on 2 shared cores: one thread is 10-40x steadier (../shared/notes/trl.md).
torch.set_num_threads(1)
# A suite started by a shell or agent that ignores SIGTERM passes the ignore on to every process the tests start:
# datatrove's local pool then hung for ever in Pool.terminate (its idle workers ignored the SIGTERM it sends).
# SIGINT too (a background job of a non-interactive shell ignores it): Dagster's setup_interrupt_handlers, which
# its execution APIs call, maps SIGTERM to SIGINT's handler, so an ignored SIGINT ignored SIGTERM again mid-suite.
signal.signal(signal.SIGTERM, signal.SIG_DFL)
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture(autouse=True)
def _no_stale_defs_state_storage():
    """Entering a DagsterInstance sets a process-wide defs-state storage that leaving it does not reset
    (dagster 1.13.27): a later Definitions load in this process then fails with "Attempted to resolve
    undefined DagsterInstance weakref". Clear it after every test so tests cannot leak it to each other."""
    yield
    from dagster._core.storage.defs_state.base import _current_storage

    _current_storage.set(None)


def profile_sections(name: str):
    """Every section of profile ``name`` as its validated dataclass: ``profile_sections("small").sft``."""
    from types import SimpleNamespace

    import pipeline_assets.definitions  # noqa: F401  (loading the stages registers their sections)
    from pipeline_assets.profiles import section_config
    from pipeline_assets.run_config import registered_sections

    return SimpleNamespace(name=name, **{section: section_config(cls, section, name)
                                         for section, cls in registered_sections().items()})


@pytest.fixture
def instance() -> dg.DagsterInstance:
    with dg.instance_for_test() as inst:
        yield inst


def latest_metadata(instance: dg.DagsterInstance, key: list[str], partition: str | None = None) -> dict:
    """Metadata of the latest materialization of ``key`` (and partition) as plain values."""
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey(key), asset_partitions=[partition] if partition else None),
        limit=1,
    ).records
    assert records, f"{'/'.join(key)} [{partition}] was never materialized"
    meta = records[0].asset_materialization.metadata
    return {k: getattr(v, "value", v) for k, v in meta.items()}


def published(root: Path, key: str, partition: str | None = None, profile: str = "tiny") -> Path:
    """The version downstream reads: ``<root>/<key>/<partition>/<profile>/current`` (resources/storage.py)."""
    return Path(root).joinpath(*key.split("/"), partition or "_", profile, "current")


def check_evaluations(instance: dg.DagsterInstance) -> list:
    """Every asset check evaluation recorded on ``instance``, across runs."""
    return [e.dagster_event.event_specific_data for run in instance.get_runs()
            for e in instance.all_logs(run.run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION)]


def materialize_in_process(defs: dg.Definitions, instance: dg.DagsterInstance, selection: dg.AssetSelection,
                           run_config: dict | None = None) -> list[dg.ExecuteInProcessResult]:
    """In-process stand-in for the asset backfill ``llmdag materialize`` submits, for fixtures only.

    Unit-test instances have no daemon to run backfills (and each backfill run would re-import torch):
    this runs per-source steps once per registered source and cross-source steps once, in Dagster's
    own dependency order. The real backfill path is tested end to end in test_corpus.py (fixture_run).
    """
    from pipeline_assets.cli import register_sources

    partitions = register_sources(defs, instance)
    graph = defs.resolve_asset_graph()
    selected = selection.resolve(graph)
    level: dict[dg.AssetKey, int] = {}
    for key in graph.toposorted_asset_keys:
        if key in selected:
            part = graph.get(key).partitions_def is not None
            level[key] = max([level[p] + ((graph.get(p).partitions_def is not None) != part)
                              for p in graph.get(key).parent_keys if p in level] or [0])
    waves: dict[tuple[int, bool], list[dg.AssetKey]] = defaultdict(list)
    for key, lvl in level.items():
        waves[(lvl, graph.get(key).partitions_def is not None)].append(key)
    ops = (run_config or {}).get("ops", {})
    results = []
    for (_, partitioned), keys in sorted(waves.items(), key=lambda x: (x[0][0], not x[0][1])):
        wave_ops = {op: c for op, c in ops.items() if op in {"__".join(k.path) for k in keys}}
        for pk in partitions if partitioned else [None]:
            result = dg.materialize(list(defs.assets), selection=keys, partition_key=pk, instance=instance,
                                    resources=defs.resources, run_config={"ops": wave_ops} if wave_ops else None)
            results.append(result)
    return results



@pytest.fixture(scope="session")
def default_graph(tmp_path_factory):
    """The corpus group materialized once on the real default sources; model stages build on it."""
    from pipeline_assets.definitions import build_definitions

    root = tmp_path_factory.mktemp("default_graph")
    defs = build_definitions(root=str(root), landing=str(root / "landing"), builtin_sources=True)
    with dg.instance_for_test() as inst:
        results = materialize_in_process(defs, inst, dg.AssetSelection.groups("corpus").upstream())
        yield {"root": root, "defs": defs, "instance": inst, "results": results}


# Short enough for the default suite; the tiny profile's 300 steps run in the Quick start.
BASE_RUN = {"max_steps": 80, "eval_every": 40, "checkpoint_every": 20, "log_every": 10}


def run_assets(graph: dict, selection: str, ops: dict | None = None) -> dg.ExecuteInProcessResult:
    """One run of ``selection`` on a graph fixture; ``ops``: asset key -> config overrides."""
    defs = graph["defs"]
    run_config = {"ops": {k.replace("/", "__"): {"config": v} for k, v in ops.items()}} if ops else None
    return dg.materialize(list(defs.assets), selection=dg.AssetSelection.from_string(selection),
                          instance=graph["instance"], resources=defs.resources, raise_on_error=False,
                          run_config=run_config)


@pytest.fixture(scope="session")
def pretrained(default_graph):
    """Tokenizer, shards and a base model; the base run is interrupted once and resumed."""
    assert run_assets(default_graph, "group:tokenizer").success
    # An interrupted run (stops after step 40 of 80 with a checkpoint) publishes nothing ...
    stopped = run_assets(default_graph, 'key:"models/base"', {"models/base": {**BASE_RUN, "stop_after_steps": 40}})
    assert not stopped.success
    assert not published(default_graph["root"], "models/base").exists()
    # ... and re-materializing resumes from that checkpoint.
    assert run_assets(default_graph, 'key:"models/base"', {"models/base": BASE_RUN}).success
    return default_graph


def fit_targets(model, examples: list[tuple[list[int], list[int]]], steps: int, lr: float, pad_id: int = 0) -> None:
    """Full-batch AdamW on (context ids, target ids) pairs, loss on the targets only: a tiny model taught a
    known answer in seconds, so eval tests have something real to score."""
    import torch

    width = max(len(c) + len(t) for c, t in examples)
    ids = torch.full((len(examples), width), pad_id)
    labels = torch.full((len(examples), width), -100)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    for row, (ctx, tgt) in enumerate(examples):
        seq = ctx + tgt
        ids[row, :len(seq)], labels[row, len(ctx):len(seq)], mask[row, :len(seq)] = (
            torch.tensor(seq), torch.tensor(tgt), 1)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    model.train()
    for _ in range(steps):
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()


class LogRecords(logging.Handler):
    """Everything a Dagster sensor / schedule context logged: their logger is not one pytest's caplog sees."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def warnings(self) -> list[str]:
        return [r.getMessage() for r in self.records if r.levelno >= logging.WARNING]

    def warning_text(self) -> str:
        return "\n".join(self.warnings())


def capture_logs(context) -> LogRecords:
    handler = LogRecords()
    context.log.addHandler(handler)
    return handler
