"""Which model stage comes from which: one table that the eval, report-card and release assets read."""

from dataclasses import dataclass

import dagster as dg

from pipeline_assets.asset_keys import eval_key, model_key


@dataclass(frozen=True)
class ModelStage:
    name: str
    parent: str | None  # the checkpoint it starts from (or distils / quantizes)
    kind: str = "causal_lm"  # "reward" models are scored on preference pairs, not generations

    @property
    def key(self) -> dg.AssetKey:
        return model_key(self.name)

    @property
    def eval_key(self) -> dg.AssetKey:
        return eval_key(self.name)


MODEL_STAGES: tuple[ModelStage, ...] = (
    ModelStage("base", None),
    ModelStage("sft", "base"),
    ModelStage("dpo", "sft"),
    ModelStage("reward", "dpo", kind="reward"),  # a scalar head on the DPO trunk (posttrain/reward.py)
    ModelStage("rlhf", "sft"),
    ModelStage("grpo", "sft"),
    ModelStage("distilled", "grpo"),
    ModelStage("quantized", "grpo"),
)


def stages_in(defined: set[dg.AssetKey]) -> list[ModelStage]:
    """The stages whose model asset exists in this Definitions (the graph grows stage by stage)."""
    return [s for s in MODEL_STAGES if s.key in defined]
