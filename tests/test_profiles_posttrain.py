"""Every profile's stage configs validate and reach the Launchpad unchanged; `small`/`scale` are sized, not tiny's.

No torch, no training: configs, the generated run-config classes, and the SFT data the small profile builds.
"""

from __future__ import annotations

import dataclasses
import json

import pytest
from conftest import profile_sections

from pipeline_assets.evals.benchmarks import BenchmarkConfig
from pipeline_assets.posttrain.data import SFT_FILE, build_sft_dataset
from pipeline_assets.profiles import PROFILES, section_config
from pipeline_assets.run_config import _plain, overridden, registered_sections, resolved, stage_config
from pipeline_assets.tokenizer.train import TokenizerConfig

profile_sections("tiny")  # loads pipeline_assets.definitions: every stage registers its section
SECTIONS = registered_sections()
CASES = [(p, s) for p in PROFILES for s in SECTIONS]


def test_every_stage_section_is_covered():
    expected = {"pipeline", "corpus", "benchmarks", "tokenizer", "shards", "pretrain", "sft_data", "sft",
                "reasoning_data", "grpo", "distill", "feedback", "preference_data", "reward", "dpo", "rlhf",
                "quantize", "evals", "gates"}
    assert expected <= set(SECTIONS), expected - set(SECTIONS)


@pytest.mark.parametrize("profile_name", sorted(PROFILES))
def test_every_profile_section_configures_a_stage(profile_name):
    unknown = sorted(set(PROFILES[profile_name]) - set(SECTIONS))
    assert not unknown, f"profiles.py {profile_name}: sections {unknown} configure no stage"


def test_a_key_a_stage_config_lacks_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(PROFILES["tiny"], "sft", {**PROFILES["tiny"]["sft"], "lr": 1e-3})
    with pytest.raises(ValueError, match="tiny.sft does not fit SFTStageConfig"):
        section_config(SECTIONS["sft"], "sft", "tiny")


@pytest.mark.parametrize("profile_name, section", CASES)
def test_section_validates_and_launchpad_defaults_are_the_profile(profile_name, section, monkeypatch):
    cfg = section_config(SECTIONS[section], section, profile_name)  # validates
    monkeypatch.setenv("LLMDAG_PROFILE", profile_name)
    cls = stage_config(f"Check_{profile_name}_{section}", SECTIONS[section], section)
    shown = cls().model_dump()
    assert shown == {f.name: _plain(getattr(cfg, f.name)) for f in dataclasses.fields(cfg)}
    assert overridden(cfg, cls()) == cfg  # an untouched Launchpad form runs exactly the profile
    assert resolved(cls(), profile_name) == cfg


# (section, field) that must be re-sized for the ~110M model rather than inherited from tiny's CPU recipe.
SIZED = [
    ("sft_data", "arithmetic"), ("sft_data", "word_problems"),
    ("sft", "max_length"), ("sft", "learning_rate"), ("sft", "batch_size"), ("sft", "max_steps"),
    ("sft", "lr_scheduler_type"),
    ("reasoning_data", "size"), ("reasoning_data", "word_problem_fraction"), ("reasoning_data", "dev_size"),
    ("grpo", "learning_rate"), ("grpo", "num_generations"), ("grpo", "batch_size"), ("grpo", "max_completion_length"),
    ("grpo", "max_steps"),
    ("distill", "learning_rate"), ("distill", "batch_size"), ("distill", "num_prompts"), ("distill", "max_steps"),
    ("feedback", "max_new_tokens"), ("feedback", "judge_batch_size"),
    ("preference_data", "samples_per_prompt"), ("preference_data", "max_new_tokens"),
    ("reward", "learning_rate"), ("reward", "batch_size"), ("reward", "max_length"),
    ("dpo", "learning_rate"), ("dpo", "batch_size"), ("dpo", "max_length"),
    ("rlhf", "learning_rate"), ("rlhf", "batch_size"), ("rlhf", "max_completion_length"),
    ("quantize", "max_new_tokens"),
]
GPU_STAGES = ("sft", "grpo", "distill", "feedback", "preference_data", "reward", "dpo", "rlhf")


@pytest.mark.parametrize("name", ["small", "scale"])
def test_gpu_profiles_are_sized_not_tiny(name):
    tiny, big = profile_sections("tiny"), profile_sections(name)
    same = [f"{s}.{f}" for s, f in SIZED if getattr(getattr(big, s), f) == getattr(getattr(tiny, s), f)]
    assert not same, f"{name} still uses tiny's values for {same}"
    assert big.preference_data.prompts > tiny.preference_data.prompts and big.feedback.prompts > tiny.feedback.prompts
    assert all(getattr(big, s).device == "cuda" for s in GPU_STAGES)
    # Post-training learning rates sit well below SFT's, and all below pretraining's peak.
    assert big.sft.learning_rate < big.pretrain.learning_rate
    assert max(big.dpo.learning_rate, big.grpo.learning_rate, big.rlhf.learning_rate) <= big.sft.learning_rate / 10
    assert big.sft.warmup_steps < big.sft.max_steps // 10


def test_scale_is_scaled_again_from_small():
    small, scale = profile_sections("small"), profile_sections("scale")
    assert scale.sft.max_length > small.sft.max_length and scale.dpo.max_length > small.dpo.max_length
    assert scale.sft.batch_size > small.sft.batch_size and scale.grpo.batch_size > small.grpo.batch_size
    for section in ("sft", "grpo", "distill", "dpo", "reward", "rlhf"):
        assert getattr(scale, section).learning_rate < getattr(small, section).learning_rate, section


def _token_upper_bound(messages: list[dict], tok: TokenizerConfig) -> int:
    """Tokens of the ChatML rendering (tokenizer.train.chat_template; its check_chat_template pins the text) under
    ANY byte-level BPE of this config: each special token is one id, every other id covers >= 1 byte."""
    specials = 2 * len(messages)  # <|im_start|> and <|im_end|> per turn
    text = "".join(f"{m['role']}\n{m['content']}\n" for m in messages)
    assert tok.im_start_token not in text and tok.eos_token not in text
    return specials + len(text.encode("utf-8"))


@pytest.mark.parametrize("name", ["small", "scale"])
def test_sft_max_length_fits_every_row_of_the_profile_data(name, tmp_path):
    profile = profile_sections(name)
    assert profile.sft_data.word_problems > 0  # SFTDataConfig: worth it from `small` up
    task = BenchmarkConfig()
    for cfg in (profile.benchmarks, profile.sft_data, profile.reasoning_data):
        assert (cfg.operand_max, tuple(cfg.operators)) == (task.operand_max, task.operators)

    summary = build_sft_dataset(tmp_path, profile.sft_data, bench_dir=None)
    rows = [json.loads(line) for line in (tmp_path / SFT_FILE).read_text(encoding="utf-8").splitlines()]
    assert summary["counts"]["word_problem"] > 0
    longest = max(_token_upper_bound(r["messages"], profile.tokenizer) for r in rows)
    assert longest <= profile.sft.max_length, (longest, profile.sft.max_length)
    assert profile.sft.max_length <= profile.pretrain.seq_len  # RoPE never sees positions beyond pretraining

    # Stages that draw prompts from this file get as many as they ask for.
    distinct = {r["messages"][0]["content"] for r in rows}
    assert profile.distill.num_prompts + profile.distill.num_val_prompts <= len(distinct)
    assert profile.preference_data.prompts <= summary["counts"]["arithmetic"]
    assert profile.feedback.prompts <= summary["counts"]["arithmetic"]
    # Bare-integer answers ("-99", "297") plus <|im_end|> fit every generation budget that produces them.
    answer = max(len(r["messages"][-1]["content"]) for r in rows if r["kind"] in ("arithmetic", "word_problem"))
    for budget in (profile.grpo.max_completion_length, profile.rlhf.max_completion_length,
                   profile.preference_data.max_new_tokens, profile.distill.max_new_tokens,
                   profile.sft.arithmetic_max_new_tokens, profile.grpo.arithmetic_max_new_tokens):
        assert answer + 1 <= budget
