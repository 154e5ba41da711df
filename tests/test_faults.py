"""Faults: NaN/inf stops every trainer naming the step, kill -9 at chosen points resumes to the same result,
and a failed Slurm/Ray task fails the asset with its log. CPU only, tiny configs.

    pytest tests/test_faults.py -q

Kills are deterministic: the stage runs in a subprocess with ``LLMDAG_FAULT_AT=<point>`` (pipeline_assets/
faults.py), which SIGKILLs it exactly there; the rerun (without the variable) must match a straight run.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import dagster as dg
import pytest
import torch

from pipeline_assets import faults
from pipeline_assets.finite import NonFiniteError, assert_finite_weights
from pipeline_assets.pretrain.checkpoint import latest_checkpoint, list_checkpoints
from resources.storage import ArtifactStore
from tests.test_pretrain_stage import TEST_CFG, _cli_args, _env, make_token_fixture

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def token_dirs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return make_token_fixture(tmp_path_factory.mktemp("tokens"))


def _store(root: Path) -> ArtifactStore:
    return ArtifactStore(root=str(root), profile="tiny", keep=2)


def _publish_dir(store: ArtifactStore, key: list[str], src: Path | None = None) -> Path:
    """Publish a version of ``key`` (a copy of ``src``, or a marker file): the 'previous good version'."""
    import shutil

    with store.writing(key) as draft:
        if src is not None:
            shutil.copytree(src, draft.work, dirs_exist_ok=True)
        (draft.work / "good.txt").write_text("previous version")
    store.publish(draft.version)
    return store.current(key)


def _slot_entries(store: ArtifactStore, key: list[str], partition: str | None = None) -> list[str]:
    return sorted(p.name for p in store.slot(key, partition).iterdir() if not p.name.endswith(".lock"))


# --- faults module --------------------------------------------------------------------------------------
def test_fault_points_parse_and_are_inert_when_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(faults.ENV, "pretrain.after_step:3,pretrain.after_step:7,curation.after_filter")
    faults.reload()
    try:
        assert faults._POINTS == {"pretrain.after_step": {3, 7}, "curation.after_filter": None}
        faults.at("pretrain.after_step", 4)  # not armed for 4: returns
        faults.at("checkpoint.mid_write", 3)  # not armed at all
    finally:
        monkeypatch.delenv(faults.ENV)
        faults.reload()
    assert faults._POINTS == {}
    faults.at("curation.after_filter")  # unset: a no-op


# --- finite weights ---------------------------------------------------------------------------------------
def test_assert_finite_weights_dir_and_state_dict(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    good = {"a.weight": torch.ones(3, 3), "b.int8": torch.ones(4, dtype=torch.int8)}
    assert assert_finite_weights(good) == 2
    save_file(good, str(tmp_path / "model.safetensors"))
    assert assert_finite_weights(tmp_path) == 2
    bad = {**good, "c.weight": torch.tensor([1.0, float("nan"), float("inf")])}
    with pytest.raises(NonFiniteError, match=r"c\.weight \(2/3 non-finite\)"):
        assert_finite_weights(bad, where="x")
    (tmp_path / "sub").mkdir()
    save_file(bad, str(tmp_path / "sub" / "adapter_model.safetensors"))
    with pytest.raises(NonFiniteError, match="adapter_model.safetensors:c.weight"):
        assert_finite_weights(tmp_path)


def _fake_context(key: list[str]) -> Any:
    return SimpleNamespace(assets_def=SimpleNamespace(check_specs=[]), asset_key=dg.AssetKey(key),
                           log=SimpleNamespace(error=print, info=print), partition_key=None)


def test_finish_refuses_non_finite_weights_and_keeps_previous(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    from pipeline_assets.publishing import finish

    store, key = _store(tmp_path), ["models", "sft"]
    before = _publish_dir(store, key)
    with store.writing(key) as draft:
        save_file({"w": torch.tensor([float("nan")])}, str(draft.work / "model.safetensors"))
    with pytest.raises(NonFiniteError, match="models/sft .*kept unpublished"):
        finish(_fake_context(key), store, draft, None, {})
    assert store.current(key) == before
    with store.writing(key) as draft:  # a finite one publishes
        save_file({"w": torch.ones(2)}, str(draft.work / "model.safetensors"))
    finish(_fake_context(key), store, draft, None, {})
    assert store.current(key) == draft.version.path


# --- TRL stage: NaN loss ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def sft_inputs(token_dirs: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    root = tmp_path_factory.mktemp("sft")
    tok = AutoTokenizer.from_pretrained(token_dirs[0])
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=128,
                         tie_word_embeddings=True, pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id,
                         eos_token_id=tok.eos_token_id)
    LlamaForCausalLM(config).save_pretrained(root / "base")
    tok.save_pretrained(root / "base")
    with (root / "sft.jsonl").open("w") as f:
        for i in range(16):
            f.write(json.dumps({"messages": [{"role": "user", "content": f"What is {i} + 1?"},
                                             {"role": "assistant", "content": str(i + 1)}]}) + "\n")
    return {"base": root / "base", "data": root / "sft.jsonl"}


def _sft_cfg() -> Any:
    from pipeline_assets.posttrain.sft import SFTStageConfig

    return SFTStageConfig(max_steps=3, batch_size=4, max_length=32, warmup_steps=0, assistant_only_loss=False,
                          batching="random", device="cpu", log_every=1, eval_prompts=("Hi",),
                          eval_max_new_tokens=2)


@pytest.mark.parametrize("poison_at", [0, 1], ids=["nan_every_step", "nan_from_step_2"])
def test_sft_nan_loss_raises_naming_step_and_keeps_published(
        sft_inputs: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, poison_at: int) -> None:
    """Weights poisoned before step poison_at+1: the loss is NaN from there; HF's nan filter would log 0.0."""
    from pipeline_assets.posttrain.common import LossHistory
    from pipeline_assets.posttrain.sft import run_sft

    def poison(self, args, state, control, model=None, **kwargs):
        if state.global_step == poison_at:
            with torch.no_grad():
                next(model.parameters()).fill_(float("nan"))

    monkeypatch.setattr(LossHistory, "on_step_begin", poison, raising=False)
    store, key = _store(tmp_path), ["models", "sft"]
    before = _publish_dir(store, key, sft_inputs["base"])
    lines: list[str] = []
    with pytest.raises(NonFiniteError, match=rf"training (loss|grad_norm) is nan at step {poison_at + 1}\b"):
        with store.writing(key) as draft:
            run_sft(_sft_cfg(), sft_inputs["base"], sft_inputs["data"], draft.work, log=lines.append)
    assert store.current(key) == before and (before / "good.txt").is_file()
    assert _slot_entries(store, key) == sorted([before.name, "current"])  # the draft is gone


def test_sft_finite_run_still_publishes(sft_inputs: dict[str, Path], tmp_path: Path) -> None:
    from pipeline_assets.posttrain.sft import run_sft

    store, key = _store(tmp_path), ["models", "sft"]
    with store.writing(key) as draft:
        result = run_sft(_sft_cfg(), sft_inputs["base"], sft_inputs["data"], draft.work, log=lambda _: None)
    store.publish(draft.version)
    losses = [v for _, v in result["loss_history"]]
    assert len(losses) == 3 and all(math.isfinite(v) and v > 0 for v in losses)
    assert assert_finite_weights(store.current(key)) > 0


# --- TRL stage: kill -9 at chosen points, rerun resumes, bit-identical ------------------------------------
# 16 rows / batch 4 = 4 steps an epoch, so 8 steps cross an epoch and the resume from step 3 replays the
# second epoch's order (BucketSampler.set_epoch); dropout makes the restored RNG state matter too.
SFT_KILL = dict(max_steps=8, save_every=3, batching="bucket")
SFT_RUN = textwrap.dedent('''
    import json, sys
    from pathlib import Path
    from pipeline_assets.posttrain.sft import SFTStageConfig, run_sft

    base, data, out, ckpt, cfg = sys.argv[1:6]
    cfg = SFTStageConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in json.loads(cfg).items()})
    run_sft(cfg, Path(base), Path(data), Path(out), log=print, checkpoint_dir=Path(ckpt))
''')


@pytest.fixture(scope="module")
def sft_dropout_base(sft_inputs: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    out = tmp_path_factory.mktemp("sft-dropout") / "base"
    config = LlamaConfig.from_pretrained(sft_inputs["base"], attention_dropout=0.2)
    torch.manual_seed(1)
    LlamaForCausalLM(config).save_pretrained(out)
    AutoTokenizer.from_pretrained(sft_inputs["base"]).save_pretrained(out)
    return out


def _sft_kill_cfg() -> Any:
    import dataclasses

    return dataclasses.replace(_sft_cfg(), **SFT_KILL)


@pytest.fixture(scope="module")
def straight_sft(sft_dropout_base: Path, sft_inputs: dict[str, Path],
                 tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Uninterrupted, in this process; without checkpoints: saving resume points must not change the run."""
    from safetensors.torch import load_file

    from pipeline_assets.posttrain.sft import run_sft

    out = tmp_path_factory.mktemp("sft-straight")
    result = run_sft(_sft_kill_cfg(), sft_dropout_base, sft_inputs["data"], out, log=lambda _: None)
    assert result["resumed_from_step"] is None and result["steps"] == 8
    return {"weights": load_file(out / "model.safetensors"), "loss": result["loss_history"]}


@pytest.mark.parametrize("fault, resume_step, broken", [
    ("posttrain.after_step:5", 3, None),  # between checkpoints 3 and 6
    ("posttrain.mid_checkpoint:6", 3, "checkpoint-6"),  # weights + optimizer + RNG of step 6, no trainer_state
    ("posttrain.after_step:7", 6, None),  # resumes inside the second epoch: its order, not the first's
], ids=["after_step_5", "mid_checkpoint_6", "after_step_7"])
def test_sft_kill_9_then_rerun_resumes_bit_identical(sft_dropout_base: Path, sft_inputs: dict[str, Path],
                                                     straight_sft: dict[str, Any], tmp_path: Path, fault: str,
                                                     resume_step: int, broken: str | None) -> None:
    import dataclasses

    from safetensors.torch import load_file

    from pipeline_assets.posttrain.sft import run_sft

    out, ckpt = tmp_path / "out", tmp_path / "out" / ".trainer"
    env = {**{k: v for k, v in _env().items() if k != faults.ENV}, faults.ENV: fault}
    cfg = json.dumps(dataclasses.asdict(_sft_kill_cfg()))
    killed = subprocess.run([sys.executable, "-c", SFT_RUN, str(sft_dropout_base), str(sft_inputs["data"]),
                             str(out), str(ckpt), cfg], cwd=REPO, env=env, capture_output=True, text=True,
                            timeout=300)
    assert killed.returncode == -signal.SIGKILL, killed.stdout[-2000:] + killed.stderr[-2000:]
    assert not (out / "model.safetensors").exists() and not (out / "summary.json").exists()
    if broken:  # the kill landed inside the save: a checkpoint dir without its completion marker
        assert (ckpt / broken).is_dir() and not (ckpt / broken / "trainer_state.json").exists()
    lines: list[str] = []
    result = run_sft(_sft_kill_cfg(), sft_dropout_base, sft_inputs["data"], out, log=lines.append,
                     checkpoint_dir=ckpt)
    assert result["resumed_from_step"] == resume_step and result["steps"] == 8
    assert any(f"resuming from {ckpt / f'checkpoint-{resume_step}'}" in line for line in lines), lines
    # HF restores optimizer, scheduler, RNG and the data position (skip_first_batches over the same seeded
    # order), and with one CPU thread every op is deterministic, so the resumed run IS the straight run.
    weights = load_file(out / "model.safetensors")
    assert weights.keys() == straight_sft["weights"].keys()
    for k, v in weights.items():
        assert torch.equal(v, straight_sft["weights"][k]), f"{k} differs after kill at {fault} + rerun"
    assert result["loss_history"] == straight_sft["loss"]  # the curve spans the kill (from trainer_state)
    assert sorted(p.name for p in ckpt.glob("checkpoint-*")) == ["checkpoint-8"]  # the broken one is gone


class _StopBeforeTraining(Exception):
    pass


def _stage_calls(inputs: dict[str, Path], root: Path) -> dict[str, Any]:
    """One call per TRL stage, on the tiny base, with just enough input to build its trainer."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from pipeline_assets.posttrain import config as pc
    from pipeline_assets.posttrain import distill, dpo, grpo, reward, rlhf

    base = inputs["base"]
    q = [{"role": "user", "content": "What is 1 + 1?"}]
    pair = {"prompt": q, "chosen": [{"role": "assistant", "content": "2"}],
            "rejected": [{"role": "assistant", "content": "3"}], "source": "rule", "kind": "arithmetic",
            "answer": "2"}
    pairs = root / "pairs"
    pairs.mkdir()
    for name in ("train", "test"):
        (pairs / f"{name}.jsonl").write_text(json.dumps(pair) + "\n")
    AutoModelForSequenceClassification.from_pretrained(base, num_labels=1).save_pretrained(root / "rm")
    AutoTokenizer.from_pretrained(base).save_pretrained(root / "rm")
    reasoning = root / "reasoning.jsonl"
    reasoning.write_text("".join(json.dumps({"prompt": f"What is {i} + 1?", "answer": str(i + 1)}) + "\n"
                                 for i in range(4)))
    prompts = [{"prompt": f"What is {i} + 2?", "test": i % 2 == 1} for i in range(4)]
    heldout = [{"prompt": "What is 1 + 1?", "answer": "2"}]
    small = dict(max_steps=2, batch_size=2, device="cpu")
    return {
        "reward": lambda out, ck: reward.run_reward_model(pc.RewardModelConfig(**small, max_length=32), base, pairs,
                                                          out, checkpoint_dir=ck),
        "dpo": lambda out, ck: dpo.run_dpo(pc.DPOStageConfig(**small, max_length=32), base, pairs, out,
                                           checkpoint_dir=ck),
        "rlhf": lambda out, ck: rlhf.run_rlhf(pc.RLHFConfig(**small, num_generations=2, max_completion_length=2),
                                              base, root / "rm", prompts, out, checkpoint_dir=ck),
        "grpo": lambda out, ck: grpo.run_grpo(pc.GRPOStageConfig(**small, num_generations=2, max_completion_length=2,
                                                               arithmetic_max_new_tokens=2),
                                            base, reasoning, out, heldout, checkpoint_dir=ck),
        "distill": lambda out, ck: distill.run_distill(
            pc.DistillConfig(**small, num_prompts=8, num_val_prompts=2, max_new_tokens=2, max_length=32), base,
            inputs["data"], out, checkpoint_dir=ck),
    }


@pytest.mark.parametrize("stage", ["reward", "dpo", "rlhf", "grpo", "distill"])
def test_every_trl_stage_trains_through_train_resumable(sft_inputs: dict[str, Path], tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch, stage: str) -> None:
    """The kill matrix runs on SFT; every other stage must build its trainer with resume points in the
    checkpoint_dir it was given (full state) and train through the same helper, or none without one."""
    import importlib

    from pipeline_assets.posttrain import distill

    module = importlib.import_module(f"pipeline_assets.posttrain.{stage}")
    seen: list[tuple[Any, Any]] = []

    def spy(trainer: Any, checkpoint_dir: Path | None = None, log: Any = print) -> int | None:
        seen.append((trainer.args, checkpoint_dir))
        raise _StopBeforeTraining

    monkeypatch.setattr(module, "train_resumable", spy)
    # A random-init teacher never ends an answer with eos; distillation would refuse to start.
    monkeypatch.setattr(distill, "generate_replies", lambda model, tok, prompts, n: [("2", True)] * len(prompts))
    call = _stage_calls(sft_inputs, tmp_path)[stage]
    for ck in (tmp_path / "ck", None):
        with pytest.raises(_StopBeforeTraining):
            call(tmp_path / f"out-{ck is None}", ck)
    (with_ck, ck), (without, none) = seen
    assert ck == tmp_path / "ck" and none is None
    assert Path(with_ck.output_dir) == ck and with_ck.save_strategy == "steps" and not with_ck.save_only_model
    assert with_ck.save_steps == 50 and with_ck.save_total_limit == 1  # save_interval(2 steps): the floor
    assert without.save_strategy == "no"


def test_training_asset_work_dir_is_keyed_and_publishes_without_trainer_state(tmp_path: Path) -> None:
    """What the models/* assets do around run_*: the trainer's checkpoints live in a work dir keyed by the
    upstream versions + config, survive a failed attempt, are found by the rerun, and are not published."""
    import dataclasses

    from pipeline_assets.asset_keys import BASE, SFT
    from pipeline_assets.posttrain.assets import TRAINER_DIR, _resume_key, _train
    from pipeline_assets.posttrain.config import SFTStageConfig
    from pipeline_assets.publishing import Reads

    store = _store(tmp_path)
    _publish_dir(store, BASE.path)
    context = SimpleNamespace(asset_key=SFT, run_id="r1", assets_def=SimpleNamespace(partitions_def=None))
    cfg = SFTStageConfig()
    key = _resume_key(Reads(store), [BASE], cfg)
    assert key == _resume_key(Reads(store), [BASE], dataclasses.replace(cfg, save_every=7, log_every=3))
    assert key != _resume_key(Reads(store), [BASE], dataclasses.replace(cfg, learning_rate=cfg.learning_rate / 2))

    def killed(work: Path) -> dict:
        (work / TRAINER_DIR / "checkpoint-3").mkdir(parents=True)
        (work / TRAINER_DIR / "checkpoint-3" / "trainer_state.json").write_text("{}")
        raise RuntimeError("the attempt dies mid-training")

    with pytest.raises(RuntimeError):
        _train(context, store, killed, key)
    assert not store.has_current(SFT.path)

    def rerun(work: Path) -> dict:
        found = sorted(p.name for p in (work / TRAINER_DIR).iterdir())
        (work / "model.safetensors").write_text("weights")
        return {"found": found}

    draft, result = _train(context, store, rerun, key)
    assert result == {"found": ["checkpoint-3"]}
    assert sorted(p.name for p in draft.version.path.iterdir()) == ["model.safetensors", "summary.json"]
    # new upstream version: a fresh work dir, never the old run's checkpoints
    _publish_dir(store, BASE.path)
    other = _resume_key(Reads(store), [BASE], cfg)
    assert other != key
    assert _train(context, store, lambda work: {"fresh": not (work / TRAINER_DIR).exists()}, other)[1] == {
        "fresh": True}


DPO_RUN = textwrap.dedent('''
    import sys
    from pathlib import Path
    from pipeline_assets.posttrain.config import DPOStageConfig
    from pipeline_assets.posttrain.dpo import run_dpo

    base, pairs, out, ckpt = map(Path, sys.argv[1:5])
    run_dpo(DPOStageConfig(max_steps=6, batch_size=2, max_length=32, device="cpu", save_every=2), base, pairs,
            out, checkpoint_dir=ckpt)
''')


def test_dpo_kill_9_then_rerun_resumes_bit_identical(sft_dropout_base: Path, tmp_path: Path) -> None:
    """A second stage through the same helper, with a reference model: 4 pairs / batch 2 = 2 steps an epoch."""
    from safetensors.torch import load_file

    from pipeline_assets.posttrain.config import DPOStageConfig
    from pipeline_assets.posttrain.dpo import run_dpo

    pairs = tmp_path / "pairs"
    pairs.mkdir()
    rows = [{"prompt": [{"role": "user", "content": f"What is {i} + 1?"}],
             "chosen": [{"role": "assistant", "content": str(i + 1)}],
             "rejected": [{"role": "assistant", "content": str(i + 2)}], "kind": "arithmetic", "answer": str(i + 1)}
            for i in range(5)]
    (pairs / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[:4]))
    (pairs / "test.jsonl").write_text(json.dumps(rows[4]) + "\n")
    straight = run_dpo(DPOStageConfig(max_steps=6, batch_size=2, max_length=32, device="cpu"), sft_dropout_base,
                       pairs, tmp_path / "straight", log=lambda _: None)
    out, ckpt = tmp_path / "out", tmp_path / "out" / ".trainer"
    env = {**{k: v for k, v in _env().items() if k != faults.ENV}, faults.ENV: "posttrain.after_step:5"}
    killed = subprocess.run([sys.executable, "-c", DPO_RUN, str(sft_dropout_base), str(pairs), str(out), str(ckpt)],
                            cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert killed.returncode == -signal.SIGKILL, killed.stdout[-2000:] + killed.stderr[-2000:]
    result = run_dpo(DPOStageConfig(max_steps=6, batch_size=2, max_length=32, device="cpu", save_every=2),
                     sft_dropout_base, pairs, out, log=lambda _: None, checkpoint_dir=ckpt)
    assert result["resumed_from_step"] == 4 and result["steps"] == 6
    a, b = load_file(tmp_path / "straight" / "model.safetensors"), load_file(out / "model.safetensors")
    for k in a:
        assert torch.equal(a[k], b[k]), f"{k} differs after kill at step 5 + rerun"
    assert result["loss_history"] == straight["loss_history"]


# --- pretraining: NaN val / train loss --------------------------------------------------------------------
PRE_CFG = TEST_CFG.replace(max_steps=6, checkpoint_every=3, eval_every=3, log_every=3, keep_last=None,
                           eval_batches=1, sample_max_new_tokens=2, sample_prompts=("def ",))


def test_pretrain_nan_val_loss_stops_before_checkpoint_and_publish(
        token_dirs: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import pipeline_assets.pretrain.train as train_mod

    real_evaluate = train_mod.evaluate
    calls = []

    def evaluate(*args: Any, **kwargs: Any) -> float:
        calls.append(1)
        return float("nan") if len(calls) == 2 else real_evaluate(*args, **kwargs)  # the eval at step 6

    monkeypatch.setattr(train_mod, "evaluate", evaluate)
    store, key = _store(tmp_path), ["models", "base"]
    before = _publish_dir(store, key)
    run_dir = tmp_path / "run"
    with pytest.raises(NonFiniteError, match=r"val loss is nan at step 6\b"):
        with store.writing(key) as draft:
            train_mod.train(PRE_CFG, token_dirs[1], token_dirs[0], run_dir, draft.work, log=lambda _: None)
    assert store.current(key) == before
    assert _slot_entries(store, key) == sorted([before.name, "current"])
    # the NaN step never became a resume point: the newest checkpoint is the last good one
    assert [s for s, _ in list_checkpoints(run_dir)] == [3]


def test_pretrain_nan_grad_norm_names_step(token_dirs: tuple[Path, Path], tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    import pipeline_assets.pretrain.train as train_mod

    real_step = train_mod._train_step
    steps = []

    def train_step(*args: Any, **kwargs: Any) -> torch.Tensor:
        steps.append(1)
        out = real_step(*args, **kwargs)
        return torch.stack([out[0], torch.tensor(float("inf")), out[2]]) if len(steps) == 2 else out

    monkeypatch.setattr(train_mod, "_train_step", train_step)
    with pytest.raises(NonFiniteError, match=r"grad norm is inf at step 2\b"):
        train_mod.train(PRE_CFG, token_dirs[1], token_dirs[0], tmp_path / "run", tmp_path / "out",
                        log=lambda _: None)
    assert list_checkpoints(tmp_path / "run") == [] and not (tmp_path / "out").exists()


# --- pretraining: kill -9 at chosen points, rerun, bit-identical ------------------------------------------
KILL_ARGS = ("--max-steps", "24", "--checkpoint-every", "8", "--keep-last", "none", "--eval-every", "none",
             "--dropout", "0.1")


def _pretrain_cli(token_dirs: tuple[Path, Path], run_dir: Path, out: Path, fault: str | None = None,
                  check: bool = True) -> subprocess.CompletedProcess:
    env = {k: v for k, v in _env().items() if k != faults.ENV}
    if fault:
        env[faults.ENV] = fault
    cmd = [sys.executable, "-m", "pipeline_assets.pretrain.train",
           *_cli_args(token_dirs[0], token_dirs[1], run_dir, out, *KILL_ARGS)]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    if check:
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    return proc


@pytest.fixture(scope="module")
def straight_pretrain(token_dirs: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("straight") / "out"
    _pretrain_cli(token_dirs, out.parent / "run", out)
    return out


@pytest.mark.parametrize("fault, resume_step, leftover", [
    ("pretrain.after_step:12", 8, None),  # mid-run between checkpoints
    ("checkpoint.mid_write:16", 8, "step_000016-tmp"),  # weights written, no meta.json yet
], ids=["after_step_12", "mid_checkpoint_16"])
def test_pretrain_kill_9_then_rerun_is_bit_identical(token_dirs: tuple[Path, Path], straight_pretrain: Path,
                                                     tmp_path: Path, fault: str, resume_step: int,
                                                     leftover: str | None) -> None:
    from safetensors.torch import load_file

    run_dir, out = tmp_path / "run", tmp_path / "out"
    killed = _pretrain_cli(token_dirs, run_dir, out, fault, check=False)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert [s for s, _ in list_checkpoints(run_dir)][-1] == resume_step
    if leftover:
        assert (run_dir / leftover).is_dir() and not (run_dir / leftover / "meta.json").exists()
    assert not (out / "model.safetensors").exists()
    _pretrain_cli(token_dirs, run_dir, out)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["resumed_from_step"] == resume_step and summary["steps"] == 24
    assert not list(run_dir.glob("*-tmp"))
    a, b = load_file(straight_pretrain / "model.safetensors"), load_file(out / "model.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), f"{k} differs after kill at {fault} + rerun"
    assert latest_checkpoint(run_dir).name == "step_000024"


# --- Slurm / Ray / local: a failed task fails the asset with its log, within a deadline --------------------
def _fake_logging_dir(root: Path, done: list[int], failed: dict[int, str] | None = None) -> Path:
    (root / "completions").mkdir(parents=True)
    (root / "logs").mkdir()
    for r in done:
        (root / "completions" / f"{r:05d}").touch()
    for r, msg in (failed or {}).items():
        (root / "logs" / f"task_{r:05d}.log").write_text(
            f"2026-01-01 00:00:00.000 | INFO     | datatrove.executor.base:_run_for_rank:123 - start\n"
            f"2026-01-01 00:00:01.000 | ERROR    | datatrove.executor.base:_run_for_rank:150 - {msg}\n"
            f"Traceback (most recent call last):\n  ...\nValueError: {msg}\n")
    return root


class _FakeClock:
    def __init__(self) -> None:
        self.t, self.sleeps = 0.0, 0

    def __call__(self) -> float:
        return self.t

    def sleep(self, s: float) -> None:
        self.t += s
        self.sleeps += 1


def test_slurm_wait_returns_when_all_ranks_complete(tmp_path: Path) -> None:
    from resources.datatrove import wait_for_ranks

    d = _fake_logging_dir(tmp_path / "logs", done=[0])
    clock = _FakeClock()

    def sleep(s: float) -> None:  # rank 1 finishes during the second poll
        clock.sleep(s)
        if clock.sleeps == 2:
            (d / "completions" / "00001").touch()

    wait_for_ranks(d, 2, poll_s=30, deadline_s=3600, clock=clock, sleep=sleep, since=0)
    assert clock.sleeps == 2


def test_slurm_failed_task_fails_with_its_log(tmp_path: Path) -> None:
    from resources.datatrove import TaskFailed, wait_for_ranks

    d = _fake_logging_dir(tmp_path / "logs", done=[0], failed={1: "boom in rank one"})
    clock = _FakeClock()
    with pytest.raises(TaskFailed, match=r"(?s)task 1 failed.*task_00001\.log.*boom in rank one"):
        wait_for_ranks(d, 3, poll_s=30, deadline_s=3600, clock=clock, sleep=clock.sleep, since=0)
    assert clock.sleeps == 0  # at the first poll, not after the deadline
    # a log left by an earlier (failed) attempt of a resumed work dir does not count until rewritten
    os.utime(d / "logs" / "task_00001.log", (1_000, 1_000))
    (d / "completions" / "00001").touch()
    (d / "completions" / "00002").touch()
    wait_for_ranks(d, 3, poll_s=30, deadline_s=3600, clock=clock, sleep=clock.sleep)


def test_slurm_job_state_and_slurm_log_failures(tmp_path: Path) -> None:
    from resources.datatrove import TaskFailed, wait_for_ranks

    d = _fake_logging_dir(tmp_path / "logs", done=[0])
    clock = _FakeClock()
    with pytest.raises(TaskFailed, match="OUT_OF_MEMORY"):
        wait_for_ranks(d, 2, poll_s=30, deadline_s=3600, clock=clock, sleep=clock.sleep, since=0,
                       job_states=lambda: {"0": "COMPLETED", "1": "OUT_OF_MEMORY"})
    slurm_logs = tmp_path / "slurm_logs"
    slurm_logs.mkdir()
    (slurm_logs / "123_1.out").write_text("slurmstepd: error: *** JOB 124 ON n1 CANCELLED AT 2026-01-01 "
                                          "DUE TO TIME LIMIT ***\n")
    with pytest.raises(TaskFailed, match=r"(?s)123_1\.out.*DUE TO TIME LIMIT"):
        wait_for_ranks(d, 2, poll_s=30, deadline_s=3600, clock=clock, sleep=clock.sleep, since=0,
                       slurm_logs_dir=slurm_logs, job_states=lambda: {"0": "COMPLETED", "1": "RUNNING"})


def test_slurm_wait_has_a_deadline(tmp_path: Path) -> None:
    from resources.datatrove import TaskFailed, wait_for_ranks

    d = _fake_logging_dir(tmp_path / "logs", done=[0])
    clock = _FakeClock()
    with pytest.raises(TaskFailed, match=r"not finished after 300 s.*ranks \[1\]"):
        wait_for_ranks(d, 2, poll_s=30, deadline_s=300, clock=clock, sleep=clock.sleep, since=0,
                       job_states=lambda: {"1": "PENDING"})
    assert clock.t <= 330


def test_executor_run_fails_when_a_task_fails(tmp_path: Path) -> None:
    """The local path (and Ray's, which only warns) end with every rank's marker or raise with its log."""
    from engine_steps import Boom

    from resources.datatrove import TaskFailed, raise_if_incomplete
    from resources.launcher import LauncherResource

    with pytest.raises(ValueError, match="rank one exploded"):
        LauncherResource(kind="local", datatrove_workers=1).run_datatrove([Boom()], tmp_path / "logs", tasks=2)
    with pytest.raises(TaskFailed, match=r"(?s)1/2 tasks incomplete.*rank one exploded"):
        raise_if_incomplete(tmp_path / "logs", 2, "ray")


# --- curation: kill -9 in every stage (ingest, filter, dedup, decontamination), rerun, identical documents ---
CURATE = textwrap.dedent('''
    import json, sys
    from pipeline_assets.corpus.config import CorpusConfig
    from pipeline_assets.corpus.decontaminate import build_index, decontaminate_partition
    from pipeline_assets.corpus.dedup import deduplicate_partition, find_duplicates, signatures
    from pipeline_assets.corpus.filters import filter_partition
    from pipeline_assets.corpus.ingest import ingest_source
    from pipeline_assets.corpus.config import ContentSafetyConfig
    from pipeline_assets.corpus.sources import SourceSpec
    from resources.launcher import LauncherResource
    from resources.storage import ArtifactStore, fingerprint

    root, src, eval_text = sys.argv[1:4]
    store, cfg = ArtifactStore(root=root), CorpusConfig(tasks=2)
    run = LauncherResource(kind="local", datatrove_workers=1).run_datatrove
    spec = SourceSpec("src", "folder", "prose", path=src)
    RAW, FILTERED = ["corpus", "raw_documents"], ["corpus", "filtered_documents"]
    SIGS, CLUSTERS = ["corpus", "minhash_signatures"], ["corpus", "duplicate_clusters"]
    DEDUPED, DECONT = ["corpus", "deduplicated_documents"], ["corpus", "decontaminated_documents"]
    # As the assets do; a stage already published is not redone (a rerun materializes what is missing).
    if not store.has_current(RAW, "src"):  # as the raw_documents asset: a fresh work dir per attempt
        with store.writing(RAW, "src") as draft:
            ingest_source(spec, draft.work, cfg.tasks, None, cfg.max_doc_bytes)
        store.publish(draft.version)
    raw = store.current(RAW, "src")
    if not store.has_current(FILTERED, "src"):
        # a resumable work dir keyed by inputs + config; completed ranks are skipped
        with store.writing(FILTERED, "src", resume_key=fingerprint(raw, spec.domain, cfg.__dict__)) as draft:
            filter_partition(raw, draft.work, spec.domain, cfg, run, safety=ContentSafetyConfig())
        store.publish(draft.version)
    docs = store.current(FILTERED, "src") / "documents"
    if not store.has_current(SIGS, "src"):
        with store.writing(SIGS, "src", resume_key=fingerprint(docs, cfg.__dict__, {"keep_numbers": False})) as draft:
            signatures(docs, draft.work, cfg, run)
        store.publish(draft.version)
    if not store.has_current(CLUSTERS):  # as duplicate_clusters: a fresh work dir per attempt
        with store.writing(CLUSTERS) as draft:
            find_duplicates({"src": store.current(SIGS, "src")}, draft.work, cfg, run)
        store.publish(draft.version)
    clusters = store.current(CLUSTERS)
    if not store.has_current(DEDUPED, "src"):
        with store.writing(DEDUPED, "src",
                           resume_key=fingerprint(docs, clusters / "file_index.json", cfg.__dict__)) as draft:
            deduplicate_partition(docs, clusters, "src", draft.work, cfg, run)
        store.publish(draft.version)
    deduped = store.current(DEDUPED, "src") / "documents"
    with store.writing(DECONT, "src", resume_key=fingerprint(deduped, eval_text, cfg.__dict__)) as draft:
        build_index({"qa": [eval_text]}, draft.work / "index", cfg)
        decontaminate_partition(deduped, draft.work / "index", draft.work, cfg, run)
    store.publish(draft.version)
''')
RAW_KEY, FILTERED_KEY = ["corpus", "raw_documents"], ["corpus", "filtered_documents"]
SIGS_KEY, CLUSTERS_KEY = ["corpus", "minhash_signatures"], ["corpus", "duplicate_clusters"]
DEDUPED_KEY, DECONT_KEY = ["corpus", "deduplicated_documents"], ["corpus", "decontaminated_documents"]
# (key, partition) in pipeline order: what a run publishes, and what a kill must leave unpublished.
CURATED = [(RAW_KEY, "src"), (FILTERED_KEY, "src"), (SIGS_KEY, "src"), (CLUSTERS_KEY, None),
           (DEDUPED_KEY, "src"), (DECONT_KEY, "src")]


@pytest.fixture(scope="module")
def curation_source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from pydoc_data.topics import topics

    src = tmp_path_factory.mktemp("source")
    keys = sorted(topics)[:14]
    with (src / "docs.jsonl").open("w") as f:
        for k in keys:
            f.write(json.dumps({"id": k, "text": topics[k][:3000]}) + "\n")
        f.write(json.dumps({"id": "copy", "text": topics[keys[0]][:3000]}) + "\n")  # removed by dedup
        f.write(json.dumps({"id": "junk", "text": "$$ ## 12 34 ;; " * 20}) + "\n")
        f.write("not json\n")  # quarantined
    return src


def _eval_text(src: Path) -> str:
    """A passage of one source document posing as an eval item: decontamination must remove that document."""
    return json.loads((src / "docs.jsonl").read_text().splitlines()[3])["text"][200:600]


def _curate(root: Path, src: Path, fault: str | None = None) -> SimpleNamespace:
    """Run CURATE in its own session; output goes to a file, not a pipe: datatrove's multiprocess Manager
    (a child process) outlives a SIGKILLed parent and would hold a pipe open. The group is killed after."""
    env = {k: v for k, v in _env().items() if k != faults.ENV}
    if fault:
        env[faults.ENV] = fault
    log = root.parent / f"{root.name}-curate-{fault or 'clean'}.log"
    with log.open("w") as out:
        proc = subprocess.Popen([sys.executable, "-c", CURATE, str(root), str(src), _eval_text(src)], cwd=REPO,
                                env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            rc = proc.wait(timeout=300)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)  # orphans of this run only (its own session)
    return SimpleNamespace(returncode=rc, stderr=log.read_text())


def _normalized(line: str) -> dict:
    """A document as published, minus the absolute path datatrove's reader records (another root/version)."""
    doc = json.loads(line)
    meta = doc.get("metadata") or {}
    if "file_path" in meta:
        meta["file_path"] = meta["file_path"].rpartition("/documents/")[2]
    return doc


def _published_files(store: ArtifactStore, key: list[str], partition: str | None = "src") -> dict[str, Any]:
    """Documents (JSONL) and binary outputs (signatures, clusters, indexes) of the published version; logs
    and JSON summaries hold timings and absolute paths, so they are left out."""
    import hashlib

    cur = store.current(key, partition)
    out: dict[str, Any] = {}
    for p in sorted(q for q in cur.rglob("*") if q.is_file()):
        rel = p.relative_to(cur)
        if "logs" in rel.parts or p.suffix == ".json":
            continue
        out[str(rel)] = ([_normalized(line) for line in p.read_text().splitlines()] if p.suffix == ".jsonl"
                         else hashlib.sha256(p.read_bytes()).hexdigest())
    return out


@pytest.fixture(scope="module")
def straight_curation(curation_source: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("curated")
    proc = _curate(root, curation_source)
    assert proc.returncode == 0, proc.stderr[-3000:]
    store = _store(root)
    out = {"/".join(key): _published_files(store, key, part) for key, part in CURATED}
    assert any(k.startswith("documents/") and v for k, v in out["corpus/filtered_documents"].items())
    assert any(k.startswith("removed/") for k in out["corpus/filtered_documents"])  # the junk doc was rejected
    for key, removed in (("corpus/deduplicated_documents", "src/copy"), ("corpus/decontaminated_documents", None)):
        dropped = [d for k, docs in out[key].items() if k.startswith("removed/") for d in docs]
        assert len(dropped) == 1 and (removed is None or dropped[0]["id"] == removed), (key, dropped)
    return out


@pytest.mark.parametrize("fault, killed", [
    ("curation.mid_ingest:5", 0),
    ("curation.mid_filter:2", 1),
    ("curation.after_filter", 1),
    ("curation.mid_signatures", 2),
    ("curation.mid_clusters", 3),
    ("curation.mid_dedup", 4),
    ("curation.after_decont", 5),
])
def test_curation_kill_9_then_rerun_gives_identical_documents(
        curation_source: Path, straight_curation: dict[str, Any], tmp_path: Path, fault: str, killed: int) -> None:
    store = _store(tmp_path)
    key, part = CURATED[killed]
    proc = _curate(tmp_path, curation_source, fault)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]
    # nothing half-written is visible: no `current`, no version dir, only the dead writer's work dir; the
    # stages before it are published, none after it is
    assert [store.has_current(k, p) for k, p in CURATED] == [i < killed for i in range(len(CURATED))]
    entries = _slot_entries(store, key, part)
    assert entries and all(e.startswith(".work-") for e in entries), entries
    resumable = key not in (RAW_KEY, CLUSTERS_KEY)
    assert bool([e for e in entries if e.startswith(".work-r-")]) == resumable  # the rerun reuses it
    proc = _curate(tmp_path, curation_source)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for k, p in CURATED:
        assert _published_files(store, k, p) == straight_curation["/".join(k)], f"{'/'.join(k)} after {fault}"
    leftovers = [e for e in _slot_entries(store, key, part) if e.startswith(".work-")
                 and not e.startswith(".work-r-")]
    assert not leftovers, leftovers  # the dead writer's work dir was pruned at publish
