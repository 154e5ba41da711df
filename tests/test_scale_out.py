"""Scale-out on real engines: LLMDAG_LAUNCHER picks where work runs, curation runs on a real one-node Slurm
cluster (Debian's slurm-wlm) and an in-process Ray cluster with the same documents as a local run, a failed
Slurm task fails with its log, an interrupted wait cancels its jobs, a rerun skips finished ranks, Dagster keeps
its state in a real PostgreSQL, and the k8s executor config passes dagster-k8s's own schema."""

from __future__ import annotations

import _thread
import json
import os
import signal
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from pydoc_data.topics import topics

import dagster as dg
import pytest
from conftest import published
from dagster._config import process_config
from dagster._core.instance.ref import InstanceRef
from engine_steps import Boom, Sleep
from postgres_server import postgres_server
from slurm_cluster import slurm_cluster

from pipeline_assets.corpus.config import CorpusConfig
from pipeline_assets.corpus.filters import filter_partition
from pipeline_assets.definitions import build_definitions, build_resources
from pipeline_assets.k8s import k8s_executor_config, training_steps
from resources.datatrove import SiteSlurmExecutor, TaskFailed
from resources.engines import SlurmSettings, default_launcher
from resources.launcher import LauncherResource

TESTS = Path(__file__).parent


# --- where work runs: the launcher, apart from the profile ---------------------------------------------------

def test_launcher_picks_engines_apart_from_the_profile(monkeypatch: pytest.MonkeyPatch) -> None:
    for launcher in ("local", "slurm", "ray", "k8s"):
        for profile, processes, accelerate in (("tiny", 1, "ddp"), ("scale", 8, "fsdp2")):
            resources = build_resources(root="/tmp/llmdag-x", profile=profile, launcher=launcher)
            assert resources["launcher"].kind == launcher and resources["settings"].profile == profile
            assert resources["launcher"].train_processes_per_node == processes
            assert resources["launcher"].accelerate_config == accelerate
    monkeypatch.setenv("LLMDAG_LAUNCHER", "slurm")
    assert default_launcher() == "slurm"
    monkeypatch.setenv("LLMDAG_LAUNCHER", "sge")
    with pytest.raises(ValueError, match="LLMDAG_LAUNCHER='sge'; valid: local, slurm, ray, k8s"):
        default_launcher()


def test_slurm_settings_reach_the_batch_script(tmp_path: Path) -> None:
    settings = SlurmSettings(account="proj42", qos="high", time="00:30:00", venv="/opt/venv/bin/activate",
                             sbatch_args={"constraint": "cpu", "exclusive": ""})
    ex = SiteSlurmExecutor([Sleep(0)], tasks=3, workers=2, time=settings.time, partition=settings.partition,
                           qos=settings.qos or "", venv_path=settings.activate_script(),
                           sbatch_args=settings.extra_sbatch_args(), logging_dir=str(tmp_path / "logs"))
    script = ex.get_launch_file_contents(ex.get_sbatch_args(3), "true")
    for line in ("#SBATCH --account=proj42", "#SBATCH --qos=high", "#SBATCH --time=00:30:00",
                 "#SBATCH --constraint=cpu", "#SBATCH --exclusive", "#SBATCH --array=0-2%2",
                 "source /opt/venv/bin/activate"):
        assert line in script, line
    assert "--partition" not in script  # unset: the cluster's default partition
    bare = SiteSlurmExecutor([Sleep(0)], tasks=1, time="1:00", partition="gpu", qos="",
                             logging_dir=str(tmp_path / "logs2"))
    args = bare.get_sbatch_args(1)
    assert args["partition"] == "gpu" and "qos" not in args  # datatrove's "normal" is not every site's qos


def test_accelerate_configs_load_with_accelerates_own_reader(tmp_path: Path) -> None:
    from accelerate.commands.config.config_args import load_config_from_file
    from accelerate.utils import DistributedType

    from resources.training import accelerate_config

    ddp = load_config_from_file(str(accelerate_config("ddp")))  # an unknown key would be a TypeError here
    fsdp = load_config_from_file(str(accelerate_config("fsdp2")))
    assert ddp.distributed_type == DistributedType.MULTI_GPU and fsdp.distributed_type == DistributedType.FSDP
    assert fsdp.fsdp_config["fsdp_version"] == 2
    with pytest.raises(ValueError, match="accelerate config 'zero3' not found; known: ddp, fsdp2"):
        accelerate_config("zero3")
    import torch

    if not torch.cuda.is_available():  # FSDP on CPU would silently train one unsharded model per process
        with pytest.raises(dg.Failure, match="fsdp2 needs CUDA GPUs"):
            LauncherResource(train_processes_per_node=2, accelerate_config="fsdp2").run_trainer(
                None, "pipeline_assets.posttrain.sft", [], tmp_path, runner="accelerate")

def test_k8s_executor_config_passes_dagster_k8s_schema() -> None:
    from dagster_k8s import k8s_job_executor

    defs = build_definitions(root="/tmp/llmdag-k8s", profile="small", launcher="k8s")
    assert defs.executor.name == "k8s_job_executor"
    assets = list(defs.assets)
    training = training_steps(assets)
    assert {"models__base", "models__sft", "models__grpo"} <= set(training)
    config = k8s_executor_config("/tmp/llmdag-k8s", training, gpus_per_training_step=1)
    schema = k8s_job_executor.config_schema.config_type
    checked = process_config(schema, config)
    assert checked.success, checked.errors
    assert config["per_step_k8s_config"]["models__sft"]["container_config"]["resources"]["limits"][
        "nvidia.com/gpu"] == "1"
    assert "models__sft" not in k8s_executor_config("/r", training, 0)["per_step_k8s_config"]["models__sft"][
        "container_config"]["resources"]["limits"]  # tiny on k8s: no GPU asked for
    assert config["volume_mounts"][0]["mount_path"] == "/tmp/llmdag-k8s"
    typo = process_config(schema, {**config, "max_concurent": 4})
    assert not typo.success  # the schema, not a cluster, catches a misspelt key


# --- a real one-node Slurm cluster ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def slurm_env(tmp_path_factory: pytest.TempPathFactory):
    """SLURM_CONF of a running cluster, set for this process and (through --export=ALL) its tasks."""
    with slurm_cluster(tmp_path_factory.mktemp("slurm")) as env, pytest.MonkeyPatch.context() as mp:
        mp.setenv("SLURM_CONF", env["SLURM_CONF"])
        # engine_steps must import in a task: sbatch exports this environment to it.
        mp.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(TESTS), os.environ.get("PYTHONPATH")])))
        yield env


def _queued(job_name_prefix: str = "llmdag-") -> list[str]:
    out = subprocess.run(["squeue", "--noheader", "-o", "%j"], capture_output=True, text=True).stdout.split()
    return [n for n in out if n.startswith(job_name_prefix)]


def _wait_until_unqueued(prefix: str = "llmdag-", timeout_s: float = 20) -> list[str]:
    """A cancelled job lingers in squeue for a moment (CG): wait for it to leave."""
    deadline = time.monotonic() + timeout_s
    while _queued(prefix) and time.monotonic() < deadline:
        time.sleep(0.5)
    return _queued(prefix)


def _fast_slurm(**kw) -> LauncherResource:
    settings = SlurmSettings(mem_per_cpu_gb=0.5, time="00:10:00", poll_s=2, deadline_s=300, **kw)
    return LauncherResource(kind="slurm", datatrove_workers=2, slurm=settings)


def test_slurm_failed_task_fails_with_its_log_and_cancels_the_rest(slurm_env, tmp_path: Path) -> None:
    with pytest.raises(TaskFailed, match=r"(?s)task 1 failed.*rank one exploded on the cluster"):
        _fast_slurm().run_datatrove([Boom()], tmp_path / "boom" / "logs", tasks=2)
    assert not _wait_until_unqueued()  # merge_stats (waiting on the failed array) was cancelled, not left pending


def test_interrupted_wait_cancels_the_jobs_it_submitted(slurm_env, tmp_path: Path) -> None:
    """A terminated Dagster step raises an interrupt in the step's wait: its Slurm jobs must not outlive it."""
    started = time.monotonic()
    # Dagster's run worker handles SIGINT itself; a test process started with SIGINT ignored (nohup, some CI
    # shells) would make interrupt_main a no-op, so the handler is installed here as the worker has it.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    timer = threading.Timer(8, _thread.interrupt_main)  # what Dagster's termination raises in the step
    timer.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            _fast_slurm().run_datatrove([Sleep(300)], tmp_path / "sleep" / "logs", tasks=2)
    finally:
        timer.cancel()
        signal.signal(signal.SIGINT, previous)
    assert time.monotonic() - started < 60
    assert not _wait_until_unqueued()


def test_rerun_skips_completed_ranks(slurm_env, tmp_path: Path) -> None:
    logs = tmp_path / "noop" / "logs"
    _fast_slurm().run_datatrove([Sleep(0)], logs, tasks=2)
    assert sorted(p.name for p in (logs / "completions").iterdir()) == ["00000", "00001"]
    assert (logs / "stats.json").is_file()  # datatrove's merge_stats job finished before run() returned
    script = logs / "launch_script.slurm"
    stamp = script.stat().st_mtime_ns
    _fast_slurm().run_datatrove([Sleep(0)], logs, tasks=2)
    assert script.stat().st_mtime_ns == stamp  # nothing resubmitted


def _landing(tmp: Path) -> Path:
    landing = tmp / "landing"
    (landing / "docs").mkdir(parents=True)
    with (landing / "docs" / "d.jsonl").open("w") as f:
        for k in sorted(topics)[:30]:
            f.write(json.dumps({"id": k, "text": topics[k][:4000]}) + "\n")
    (landing / "docs" / "llmdag_source.json").write_text(json.dumps({"domain": "prose"}))
    return landing


def _materialize(home: Path, root: Path, landing: Path, launcher: str, select: str) -> None:
    env = {**os.environ, "DAGSTER_HOME": str(home), "LLMDAG_HOME": str(root), "LLMDAG_LANDING": str(landing),
           "LLMDAG_BUILTIN_SOURCES": "0", "LLMDAG_LAUNCHER": launcher}
    cli = subprocess.run([sys.executable, "-m", "pipeline_assets.cli", "materialize", "--select", select],
                         env=env, capture_output=True, text=True, timeout=900)
    assert cli.returncode == 0, cli.stdout[-3000:] + cli.stderr[-3000:]


def _files(version: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((version / "documents").glob("*.jsonl"))}


def test_llmdag_materialize_curates_on_real_slurm_like_local(slurm_env, tmp_path: Path) -> None:
    """LLMDAG_LAUNCHER=slurm and nothing else: the filter step goes through sbatch, byte-identical documents.

    Both versions filter the same published raw documents with the same quality classifier (fastText trains
    with 10 Hogwild threads, so a retrained classifier could score differently): only the launcher differs.
    """
    landing, home, root = _landing(tmp_path), tmp_path / "dagster_home", tmp_path / "artifacts"
    home.mkdir()
    _materialize(home, root, landing, "local", "+corpus/filtered_documents")
    local = published(root, "corpus/filtered_documents", "docs").resolve()
    _materialize(home, root, landing, "slurm", "corpus/filtered_documents")
    on_slurm = published(root, "corpus/filtered_documents", "docs").resolve()
    assert on_slurm != local and local.is_dir()  # a new version, beside the local one
    assert len(b"".join(_files(local).values()).splitlines()) >= 10
    assert _files(on_slurm) == _files(local)
    assert list((on_slurm / "logs" / "slurm_logs").glob("*.out"))  # really ran under sbatch
    assert not list((local / "logs").glob("slurm_logs/*.out"))
    assert not _queued()
    instance = dg.DagsterInstance.from_ref(InstanceRef.from_dir(str(home)))
    try:
        messages = [e.user_message for r in instance.get_run_records()
                    for e in instance.all_logs(r.dagster_run.run_id)]
    finally:
        instance.dispose()
    assert any("tasks submitted" in m for m in messages)  # progress in the Dagster run log
    assert any(m.endswith("tasks complete") for m in messages)


# --- Ray: datatrove's Ray executor on an in-process cluster --------------------------------------------------

def test_ray_filters_the_same_documents_as_local(tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    (raw / "documents").mkdir(parents=True)
    with (raw / "documents" / "00000.jsonl").open("w") as f:
        for k in sorted(topics)[:24]:
            f.write(json.dumps({"id": k, "text": topics[k][:4000], "metadata": {"source": "docs"}}) + "\n")
    cfg = CorpusConfig(tasks=2)
    outputs = {}
    for kind in ("local", "ray"):
        out = tmp_path / kind
        run = LauncherResource(kind=kind, datatrove_workers=2).run_datatrove
        summary = filter_partition(raw, out, "prose", cfg, run)
        outputs[kind] = (summary["docs_out"], {p.name: p.read_bytes() for p in (out / "documents").glob("*.jsonl")})
    assert outputs["local"][0] >= 10
    assert outputs["ray"] == outputs["local"]  # same ids, same bytes
    import ray

    assert not ray.is_initialized()  # the in-process cluster of the step is gone with it


# --- PostgreSQL as Dagster's storage ---------------------------------------------------------------------------

def test_llmdag_materialize_keeps_dagster_state_in_postgresql(tmp_path: Path) -> None:
    import psycopg2

    from pipeline_assets.instance_config import check_pg_url

    home, root = tmp_path / "dagster_home", tmp_path / "artifacts"
    home.mkdir()
    with postgres_server() as url:
        env = {**os.environ, "DAGSTER_HOME": str(home), "LLMDAG_HOME": str(root), "DAGSTER_PG_URL": url,
               "LLMDAG_LANDING": str(tmp_path / "landing"), "LLMDAG_BUILTIN_SOURCES": "0"}
        cli = subprocess.run([sys.executable, "-m", "pipeline_assets.cli", "materialize", "--select",
                              "evals/benchmarks"], env=env, capture_output=True, text=True, timeout=600)
        assert cli.returncode == 0, cli.stdout[-3000:] + cli.stderr[-3000:]
        assert "PostgreSQL storage" in cli.stdout
        with psycopg2.connect(url.replace("postgresql+psycopg2://", "postgresql://")) as conn, conn.cursor() as cur:
            cur.execute("select status from runs")
            assert ("SUCCESS",) in cur.fetchall()
            cur.execute("select count(*) from event_logs where dagster_event_type = 'ASSET_MATERIALIZATION'")
            assert cur.fetchone()[0] >= 1
        assert not list(home.rglob("*.db"))  # no SQLite beside it: runs, events, schedules all in PostgreSQL
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("DAGSTER_PG_URL", url)
            instance = dg.DagsterInstance.from_config(str(home))
            try:
                assert instance.run_monitoring_enabled and instance.run_retries_enabled
                assert instance.run_retries_max_retries == 1 and not instance.run_retries_retry_on_asset_or_op_failure
                assert type(instance.run_storage).__name__ == "PostgresRunStorage"
                assert instance.get_concurrency_config().pool_config.default_pool_limit == 1
            finally:
                instance.dispose()
    with pytest.raises(SystemExit, match=r"postgresql\+psycopg2://"):
        check_pg_url("postgresql://postgres@127.0.0.1:5432/dagster")


# --- training out of process: torchrun through Dagster Pipes, here and on Slurm ---------------------------------

PRETRAIN_RUN_CONFIG = {"d_model": 64, "n_layers": 2, "n_heads": 4, "n_kv_heads": 2, "intermediate_size": 192,
                       "seq_len": 64, "batch_size": 8, "max_steps": 60, "warmup_steps": 5, "eval_every": 30,
                       "eval_batches": 2, "checkpoint_every": 30, "log_every": 10, "learning_rate": 3e-3,
                       "device": "cpu", "num_threads": 1, "sample_max_new_tokens": 4}


@pytest.fixture(scope="module")
def token_store(tmp_path_factory: pytest.TempPathFactory):
    """An artifact root holding published token shards and tokenizer (what models/base reads)."""
    import shutil

    from test_pretrain_stage import make_token_fixture

    from pipeline_assets.asset_keys import SHARDS, TOKENIZER
    from resources.storage import ArtifactStore

    tok_dir, shards_dir = make_token_fixture(tmp_path_factory.mktemp("tokens"))
    root = tmp_path_factory.mktemp("artifacts")
    store = ArtifactStore(root=str(root))
    for key, src in ((TOKENIZER, tok_dir), (SHARDS, shards_dir)):
        with store.writing(key.path) as draft:
            shutil.copytree(src, draft.work, dirs_exist_ok=True)
        store.publish(draft.version)
    return root


def _materialize_base(root: Path, launcher: LauncherResource, **config) -> tuple[dg.ExecuteInProcessResult, list[str]]:
    """models/base with ``launcher``; each test passes its own seed, so its own run dir."""
    from pipeline_assets.pretrain.assets import base
    from resources.settings import PipelineSettings
    from resources.storage import ArtifactStore

    instance = dg.DagsterInstance.ephemeral()
    result = dg.materialize(
        [base], resources={"store": ArtifactStore(root=str(root)), "settings": PipelineSettings(profile="tiny"),
                           "launcher": launcher},
        run_config={"ops": {"models__base": {"config": {**PRETRAIN_RUN_CONFIG, **config}}}}, raise_on_error=False,
        instance=instance)
    return result, [r.user_message for r in instance.all_logs(result.run_id)]


def _pretrain_through_pipes(root: Path, launcher: LauncherResource, seed: int,
                            **config) -> tuple[dg.ExecuteInProcessResult, dict, list[str]]:
    result, logs = _materialize_base(root, launcher, seed=seed, **config)
    assert result.success, [e.message for e in result.all_events if e.is_failure]
    summary = json.loads((published(root, "models/base") / "summary.json").read_text())
    return result, summary, logs


def test_pretraining_runs_under_torchrun_through_pipes(token_store: Path) -> None:
    launcher = LauncherResource(train_processes_per_node=2)
    result, summary, logs = _pretrain_through_pipes(token_store, launcher, seed=1)
    assert summary["world_size"] == 2 and summary["steps"] == 60  # two torchrun ranks, not the step's process
    assert summary["tokens_seen"] == 60 * 2 * 8 * 64 and not summary["resumed_from_step"]
    meta = result.asset_materializations_for_node("models__base")[0].metadata
    assert meta["steps"].value == 60 and "loss_curve" in meta
    assert any("exported" in m for m in logs)  # rank 0's log lines streamed into the Dagster run
    # The equivalent single process: one batch of 16 = the two ranks' 8 + 8 (rank r takes the r-th slice of the
    # same permutation), so the same data every step and, up to float summation order, the same curve.
    _, alone, _ = _pretrain_through_pipes(token_store, LauncherResource(), seed=1, batch_size=16)
    assert alone["world_size"] == 1 and alone["tokens_seen"] == summary["tokens_seen"]
    assert [s for s, _ in alone["loss_history"]] == [s for s, _ in summary["loss_history"]]
    for (_, one), (_, two) in zip(alone["loss_history"], summary["loss_history"], strict=True):
        assert two == pytest.approx(one, rel=1e-5)  # measured: at most 1.7e-7 apart


def test_torchrun_pretraining_resumes_from_its_checkpoint(token_store: Path) -> None:
    launcher = LauncherResource(train_processes_per_node=2)
    stopped, _ = _materialize_base(token_store, launcher, seed=3, stop_after_steps=30)
    assert not stopped.success  # the stop was asked for: the step fails, naming where it stopped
    assert any("stopped at step 30" in str(e.event_specific_data) for e in stopped.all_events if e.is_step_failure)
    _, summary, _ = _pretrain_through_pipes(token_store, launcher, seed=3)
    assert summary["resumed_from_step"] == 30 and summary["steps"] == 60 and summary["world_size"] == 2


def test_pretraining_runs_as_a_slurm_job_through_pipes(slurm_env, token_store: Path, tmp_path: Path) -> None:
    launcher = LauncherResource(kind="slurm", train_processes_per_node=2,
                                slurm=SlurmSettings(cpus_per_task=1, mem_per_cpu_gb=1, time="00:10:00"))
    _, summary, logs = _pretrain_through_pipes(token_store, launcher, seed=2)
    assert summary["world_size"] == 2 and summary["steps"] == 60 and not summary["resumed_from_step"]
    assert any(m.startswith("Slurm job ") for m in logs) and any("exported" in m for m in logs)
    launch = next((token_store / "_runs").rglob("train.sbatch")).parent
    assert list(launch.glob("slurm-*.out")) and (launch / "train.sbatch").is_file()
    assert "srun --kill-on-bad-exit=1 torchrun" in (launch / "train.sbatch").read_text()
    assert not _wait_until_unqueued("llmdag-train")


# --- a TRL stage under accelerate launch through Dagster Pipes ---------------------------------------------------

SFT_RUN_CONFIG = {"max_steps": 24, "batch_size": 8, "warmup_steps": 2, "log_every": 4, "learning_rate": 3e-3,
                  "replay_fraction": 0.0, "eval_every": None, "stop_at_dev_accuracy": None, "keep_best_dev": False,
                  "eval_prompts": ["What is 2 + 3?"], "eval_max_new_tokens": 8, "device": "cpu"}


@pytest.fixture(scope="module")
def sft_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An artifact root with what models/sft reads: a random-init base with our ChatML tokenizer, the benchmark,
    datasets/sft (no replay: the shards dir is published empty)."""
    import shutil

    import torch
    from test_posttrain_sft_rl import SFT_DATA, _write_corpus
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from pipeline_assets.asset_keys import BASE, BENCHMARKS, SHARDS
    from pipeline_assets.asset_keys import SFT_DATA as SFT_DATA_KEY
    from pipeline_assets.evals.benchmarks import BenchmarkConfig, build_benchmarks
    from pipeline_assets.posttrain.data import build_sft_dataset
    from pipeline_assets.tokenizer.train import TokenizerConfig, train_tokenizer
    from resources.storage import ArtifactStore

    tmp = tmp_path_factory.mktemp("sft_inputs")
    for name in ("tok", "bench", "shards"):
        (tmp / name).mkdir()
    train_tokenizer([_write_corpus(tmp / "corpus.jsonl")], tmp / "tok", TokenizerConfig(vocab_size=512),
                    log=lambda _: None)
    tok = AutoTokenizer.from_pretrained(tmp / "tok")
    torch.manual_seed(0)
    LlamaForCausalLM(LlamaConfig(
        vocab_size=len(tok), hidden_size=64, intermediate_size=192, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=4, max_position_embeddings=256, tie_word_embeddings=True, pad_token_id=tok.pad_token_id,
        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)).save_pretrained(tmp / "base")
    tok.save_pretrained(tmp / "base")
    build_benchmarks(tmp / "bench", BenchmarkConfig())
    build_sft_dataset(tmp / "sft", SFT_DATA, tmp / "bench")
    root = tmp_path_factory.mktemp("sft_artifacts")
    store = ArtifactStore(root=str(root))
    for key, src in ((BASE, "base"), (BENCHMARKS, "bench"), (SFT_DATA_KEY, "sft"), (SHARDS, "shards")):
        with store.writing(key.path) as draft:
            shutil.copytree(tmp / src, draft.work, dirs_exist_ok=True)
        store.publish(draft.version)
    return root


def _materialize_sft(root: Path, launcher: LauncherResource, **config) -> tuple[dg.ExecuteInProcessResult, dict,
                                                                                 list[str]]:
    from pipeline_assets.posttrain.assets import model_asset
    from pipeline_assets.stages import stage
    from resources.settings import PipelineSettings
    from resources.storage import ArtifactStore

    instance = dg.DagsterInstance.ephemeral()
    result = dg.materialize(
        [model_asset(stage("sft"))], instance=instance, raise_on_error=False,
        resources={"store": ArtifactStore(root=str(root)), "settings": PipelineSettings(profile="tiny"),
                   "launcher": launcher},
        run_config={"ops": {"models__sft": {"config": {**SFT_RUN_CONFIG, **config}}}})
    assert result.success, [e.message for e in result.all_events if e.is_failure]
    summary = json.loads((published(root, "models/sft") / "summary.json").read_text())
    return result, summary, [r.user_message for r in instance.all_logs(result.run_id)]


def test_sft_trains_under_accelerate_launch_like_in_process(sft_store: Path) -> None:
    from transformers import AutoModelForCausalLM

    _, alone, _ = _materialize_sft(sft_store, LauncherResource(), seed=5)
    result, two, logs = _materialize_sft(sft_store, LauncherResource(train_processes_per_node=2), seed=5)
    assert (alone["world_size"], two["world_size"]) == (1, 2) and two["steps"] == alone["steps"] == 24
    # batch_size is global: each process takes 4 of the 8 rows, so both runs see the same tokens per step.
    assert abs(two["tokens_seen"] - alone["tokens_seen"]) <= 0.15 * alone["tokens_seen"]
    # The same random init, then curves that track each other (measured: medians of the last 8 steps 2.98 vs
    # 2.58; a batch of the long docstring rows spikes to ~6 in both, so medians, not last values).
    assert two["loss_history"][0][1] == pytest.approx(alone["loss_history"][0][1], rel=0.05)
    tail_two, tail_alone = (statistics.median(v for _, v in run["loss_history"][-8:]) for run in (two, alone))
    assert tail_two < 0.6 * two["loss_history"][0][1] and tail_two == pytest.approx(tail_alone, rel=0.3)
    assert any(m.startswith("sft | full fine-tune") for m in logs)  # rank 0's lines streamed into the run
    out = published(sft_store, "models/sft")
    AutoModelForCausalLM.from_pretrained(out)  # one complete checkpoint (written by rank 0 alone)
    assert not (out / ".trainer").exists()
    assert not list(sft_store.rglob("config-*.json"))  # the launch dir lived under the unpublished trainer dir



def test_sft_trains_as_a_slurm_job_under_accelerate_launch(slurm_env, sft_store: Path) -> None:
    launcher = LauncherResource(kind="slurm", train_processes_per_node=2,
                                slurm=SlurmSettings(cpus_per_task=1, mem_per_cpu_gb=1, time="00:10:00"))
    _, summary, logs = _materialize_sft(sft_store, launcher, seed=6)
    assert summary["world_size"] == 2 and summary["steps"] == 24
    assert any(m.startswith("Slurm job ") for m in logs) and any(m.startswith("sft | done") for m in logs)
    assert not _wait_until_unqueued("llmdag-train")

# --- stopping a runner: every rank goes, even where SIGTERM was ignored ------------------------------------------

RANK_SCRIPT = ("import os, pathlib, time\n"
               "pathlib.Path(os.environ['RANKS_DIR'], os.environ['RANK']).write_text(str(os.getpid()))\n"
               "time.sleep(600)\n")


def _rank_pids(ranks_dir: Path, n: int, timeout_s: float = 90) -> list[int]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        files = [ranks_dir / str(r) for r in range(n)]
        if all(f.is_file() and f.read_text() for f in files):
            return [int(f.read_text()) for f in files]
        time.sleep(0.2)
    raise AssertionError(f"the ranks never started: {sorted(p.name for p in ranks_dir.iterdir())}")


def _gone(pids: list[int], timeout_s: float) -> bool:
    import psutil

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        alive = [p for p in pids if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE]
        if not alive:
            return True
        time.sleep(0.2)
    return False


def test_stopping_torchrun_stops_ranks_that_inherited_sigterm_ignored(tmp_path: Path) -> None:
    """A CI job or a daemon under nohup starts Dagster with SIGTERM/SIGINT ignored: an interrupted step still
    stops the runner and both ranks with SIGTERM, well inside the grace period before SIGKILL."""
    from resources import training

    script = tmp_path / "rank.py"
    script.write_text(RANK_SCRIPT)
    (tmp_path / "ranks").mkdir()
    command = training.local_command("x", [], 2, None)
    command = [*command[:command.index("-m")], str(script)]  # a plain script instead of a module
    ignored = {s: signal.signal(s, signal.SIG_IGN) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        proc = training.spawn(command, {**os.environ, "RANKS_DIR": str(tmp_path / "ranks")})
    finally:
        for s, handler in ignored.items():
            signal.signal(s, handler)
    pids = _rank_pids(tmp_path / "ranks", 2)
    started = time.monotonic()
    training.stop_tree(proc)
    assert _gone([proc.pid, *pids], 5) and time.monotonic() - started < training.STOP_GRACE_S  # SIGTERM did it


def test_a_killed_step_process_takes_its_ranks_with_it(tmp_path: Path) -> None:
    """The step's own process SIGKILLed (an OOM kill, a crashed run worker): no cleanup code runs, the runner gets
    SIGTERM from the kernel (PR_SET_PDEATHSIG) and torchrun's agent stops its ranks."""
    script = tmp_path / "rank.py"
    script.write_text(RANK_SCRIPT)
    (tmp_path / "ranks").mkdir()
    step = subprocess.Popen([sys.executable, "-c", (
        "import os, sys, time\n"
        "from resources import training\n"
        "command = training.local_command('x', [], 2, None)\n"
        f"command = [*command[:command.index('-m')], {str(script)!r}]\n"
        "training.spawn(command, dict(os.environ))\n"
        "time.sleep(600)\n")], env={**os.environ, "RANKS_DIR": str(tmp_path / "ranks")}, cwd=Path(__file__).parents[1])
    pids = _rank_pids(tmp_path / "ranks", 2)
    step.kill()
    step.wait()
    assert _gone(pids, 40)


def test_fsdp2_pretraining_matches_ddp_and_resumes(token_store: Path) -> None:
    """The scale profile's parallelism on 2 CPU ranks (gloo): the DDP run's curve, through a stop and a resume
    from the gathered checkpoint, and an export plain transformers loads."""
    from transformers import AutoModelForCausalLM

    launcher = LauncherResource(train_processes_per_node=2)
    stopped, _ = _materialize_base(token_store, launcher, seed=4, parallelism="fsdp2", stop_after_steps=30)
    assert not stopped.success
    _, fsdp, logs = _pretrain_through_pipes(token_store, launcher, seed=4, parallelism="fsdp2")
    assert fsdp["resumed_from_step"] == 30 and fsdp["world_size"] == 2 and fsdp["steps"] == 60
    assert fsdp["samples"] and any("sample |" in m for m in logs)  # generated on every rank, kept by rank 0
    AutoModelForCausalLM.from_pretrained(published(token_store, "models/base"))
    _, ddp, _ = _pretrain_through_pipes(token_store, launcher, seed=4)
    for (_, a), (_, b) in zip(ddp["loss_history"], fsdp["loss_history"], strict=True):
        assert b == pytest.approx(a, rel=1e-6)  # measured: identical on CPU
    assert fsdp["window_val_loss"] == pytest.approx(ddp["window_val_loss"], rel=1e-6)
