"""Profiles: every size, step count, device and executor of the pipeline, in one table.

``tiny`` (default): CPU, real local text, the whole graph in minutes. ``small``: one GPU, ~100M params.
``scale``: many GPUs / nodes through existing engines (datatrove on Ray/Slurm, torchrun, k8s).
Pick with ``LLMDAG_PROFILE``; any field can still be overridden per run from the launchpad.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from pipeline_assets.corpus.config import CorpusConfig
from pipeline_assets.evals.benchmarks import BenchmarkConfig
from pipeline_assets.evals.config import EVAL_PROFILES, EvalConfig
from pipeline_assets.posttrain.config import (
    DistillConfig,
    DPOStageConfig,
    FeedbackConfig,
    GRPOStageConfig,
    PreferenceDataConfig,
    QuantizeConfig,
    RewardModelConfig,
    RLHFConfig,
    SFTStageConfig,
)
from pipeline_assets.posttrain.data import ReasoningDataConfig, SFTDataConfig
from pipeline_assets.pretrain.config import SCALE, SMALL, TINY, PretrainConfig
from pipeline_assets.reports.gates import GATE_PROFILES, GateConfig
from pipeline_assets.tokenizer.shards import ShardConfig
from pipeline_assets.tokenizer.train import TokenizerConfig


@dataclass(frozen=True)
class Profile:
    name: str
    corpus: CorpusConfig = field(default_factory=CorpusConfig)
    benchmarks: BenchmarkConfig = field(default_factory=BenchmarkConfig)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    shards: ShardConfig = field(default_factory=ShardConfig)
    pretrain: PretrainConfig = TINY
    sft_data: SFTDataConfig = field(default_factory=SFTDataConfig)
    sft: SFTStageConfig = field(default_factory=SFTStageConfig)
    reasoning_data: ReasoningDataConfig = field(default_factory=ReasoningDataConfig)
    grpo: GRPOStageConfig = field(default_factory=GRPOStageConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)
    feedback: FeedbackConfig = field(default_factory=FeedbackConfig)
    feedback_prompts: int = 200  # arithmetic prompts the judge labels (+10% safety prompts)
    preference_data: PreferenceDataConfig = field(default_factory=PreferenceDataConfig)
    preference_prompts: int = 1000  # arithmetic prompts sampled for on-policy pairs (+10% safety prompts)
    reward: RewardModelConfig = field(default_factory=RewardModelConfig)
    dpo: DPOStageConfig = field(default_factory=DPOStageConfig)
    rlhf: RLHFConfig = field(default_factory=RLHFConfig)
    quantize: QuantizeConfig = field(default_factory=QuantizeConfig)
    evals: EvalConfig = EVAL_PROFILES["tiny"]
    gates: GateConfig = GATE_PROFILES["tiny"]
    release_stage: str = "grpo"  # the model stage release/model ships when every blocking gate passes
    datatrove_executor: str = "local"  # local | ray | slurm (resources/datatrove.py)
    # 1 = a source's ranks run in the step's own process. A worker pool (forkserver, re-importing datatrove
    # per executor run, ~8 runs per source) cost 54 s vs 4 s on 0.27 MB here; sources already run in
    # parallel as separate Dagster runs of the backfill. Larger profiles amortize the pool over real data.
    datatrove_workers: int = 1
    dagster_executor: str = "in_process"  # in_process | multiprocess | k8s


# The arithmetic task of each profile: the benchmark's test split is drawn from the same space SFT and GRPO
# train on (a test in tests/test_definitions.py keeps the three equal). tiny: a + b with a, b <= 49, the
# space a ~1M-param model measurably learns in minutes on CPU (SFT 0 -> ~0.26, GRPO +0.18-0.28 on held-out
# items; ../shared/notes/post-training.md); its test split has 247 problems (dev 254, train 1,999).
TINY_TASK = {"operand_max": 49, "operators": ("+",)}

PROFILES: dict[str, Profile] = {
    "tiny": Profile(
        name="tiny",
        benchmarks=BenchmarkConfig(arithmetic_size=240, word_problem_fraction=0.0, **TINY_TASK),
        # 1,600 of the 1,999 training-split problems; the other 399 stay unseen by SFT.
        sft_data=SFTDataConfig(arithmetic=1600, **TINY_TASK),
        reasoning_data=ReasoningDataConfig(size=1500, **TINY_TASK),
    ),
    "small": Profile(
        name="small",
        # The whole of every built-in source, more ranks for the 16-core GPU hosts.
        corpus=CorpusConfig(max_bytes_per_source=None, tasks=8),
        tokenizer=TokenizerConfig(vocab_size=32768, max_train_bytes=500_000_000),
        pretrain=SMALL, evals=EVAL_PROFILES["small"], gates=GATE_PROFILES["small"],
        datatrove_workers=8,
    ),
    "scale": Profile(
        name="scale",
        corpus=CorpusConfig(max_bytes_per_source=None, tasks=256),
        tokenizer=TokenizerConfig(vocab_size=65536, max_train_bytes=2_000_000_000),
        pretrain=SCALE, evals=EVAL_PROFILES["scale"], gates=GATE_PROFILES["scale"],
        datatrove_executor="slurm", datatrove_workers=-1, dagster_executor="k8s",
    ),
}


def get_profile(name: str) -> Profile:
    if name not in PROFILES:
        raise ValueError(f"unknown profile {name!r}; valid: {sorted(PROFILES)} (set LLMDAG_PROFILE)")
    return PROFILES[name]


def with_overrides(profile: Profile, **sections) -> Profile:
    return replace(profile, **sections)
