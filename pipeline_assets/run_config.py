"""Typed run config per stage: a ``dg.Config`` generated from the stage's profile dataclass.

Every field of the stage's dataclass (profiles.py) becomes a typed Launchpad field whose default is the
active profile's value (``LLMDAG_PROFILE`` when the code location loads), so a user sees and edits the
real numbers, and Dagster rejects an unknown field or a wrong type before the run starts. Config flows
one way: profile -> this Config -> ``overridden`` -> the plain dataclass the stage function takes, whose
``validate()`` checks ranges (``llmdag materialize --config`` runs that check before submitting).

Generated rather than written out: the dataclasses hold ~230 fields; a hand-kept mirror would drift.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from typing import Any, TypeVar

import dagster as dg
import pydantic

from pipeline_assets.profiles import Profile, get_profile
from resources.settings import default_profile

T = TypeVar("T")
_SECTIONS: dict[type, str] = {}  # generated Config class -> Profile field it mirrors


def _config_type(tp: Any) -> Any:
    """A dataclass field type as a type Dagster's config system takes (tuples -> lists, Mapping -> dict)."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        rest = [a for a in args if a is not type(None)]
        if len(rest) == 1:
            return _config_type(rest[0]) | None
        return Any  # e.g. str | tuple[str, ...]: checked by the dataclass's validate()
    if origin is tuple:
        return list[_config_type(args[0])] if args else list
    if origin in (dict, Mapping) or tp is dict:
        return dict[str, _config_type(args[1])] if args else dict
    if typing.get_origin(tp) is typing.Literal:
        return str
    return tp


def _plain(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    return value


def stage_config(name: str, section: str, profile: Profile | None = None,
                 only: tuple[str, ...] | None = None) -> type[dg.Config]:
    """A Config class for ``Profile.<section>`` (or its fields ``only``) with the active profile's values."""
    base = getattr(profile or get_profile(default_profile()), section)
    hints = typing.get_type_hints(type(base))
    names = [f.name for f in dataclasses.fields(base)]
    if only is not None:
        unknown = sorted(set(only) - set(names))
        if unknown:
            raise ValueError(f"{name}: {type(base).__name__} has no fields {unknown}")
        names = [n for n in names if n in only]
    fields = {n: (_config_type(hints[n]), pydantic.Field(default=_plain(getattr(base, n)))) for n in names}
    which = "every field" if only is None else f"the fields {', '.join(names)}"
    doc = (f"Run config of this stage: {which} of {type(base).__name__} (pipeline_assets/profiles.py), "
           f"defaults from the '{(profile or get_profile(default_profile())).name}' profile.")
    cls = pydantic.create_model(name, __base__=dg.Config, __doc__=doc, **fields)
    _SECTIONS[cls] = section
    return cls


def _like(template: Any, value: Any) -> Any:
    """JSON-shaped run config back into the dataclass field's shape (lists -> tuples where it holds tuples)."""
    if isinstance(template, tuple) and isinstance(value, list):
        return tuple(value)
    return value


def overridden(base: T, config: dg.Config) -> T:
    """``base`` (the run's profile section) with every field the run config changed from its default."""
    defaults = {name: f.default for name, f in type(config).model_fields.items()}
    changes = {k: v for k, v in config.model_dump().items() if k in defaults and v != defaults[k]}
    valid = {f.name for f in dataclasses.fields(base)}
    unknown = sorted(set(changes) - valid)
    if unknown:
        raise ValueError(f"unknown config fields {unknown} for {type(base).__name__}; valid: {sorted(valid)}")
    cfg = dataclasses.replace(base, **{k: _like(getattr(base, k), v) for k, v in changes.items()})
    if hasattr(cfg, "validate"):
        cfg.validate()
    return cfg


def check_op_config(config_cls: type[dg.Config], values: dict, profile: Profile) -> None:
    """Build the stage's dataclass from run-config ``values`` and run its ``validate()``: range errors up front."""
    overridden(getattr(profile, _SECTIONS[config_cls]), config_cls(**values))


# One per stage asset; the launchpad shows these names.
# Corpus assets share one CorpusConfig; each gets the fields it alone decides. `tasks` is not offered: the
# dedup stages replay the ranks the filter wrote, so it must not change between per-source steps.
RawRunConfig = stage_config("RawRunConfig", "corpus", only=("max_bytes_per_source", "max_doc_bytes"))
FilterRunConfig = stage_config("FilterRunConfig", "corpus", only=("languages", "language_threshold"))
SignaturesRunConfig = stage_config("SignaturesRunConfig", "corpus",
                                   only=("minhash_ngrams", "minhash_buckets", "minhash_hashes_per_bucket"))
DecontRunConfig = stage_config("DecontRunConfig", "corpus", only=("decont_ngrams",))
MixtureRunConfig = stage_config("MixtureRunConfig", "corpus",
                                only=("val_fraction", "domain_weights", "max_repeats", "seed"))
TokenizerRunConfig = stage_config("TokenizerRunConfig", "tokenizer")
ShardsRunConfig = stage_config("ShardsRunConfig", "shards")
PretrainRunConfig = stage_config("PretrainRunConfig", "pretrain")
SFTDataRunConfig = stage_config("SFTDataRunConfig", "sft_data")
ReasoningDataRunConfig = stage_config("ReasoningDataRunConfig", "reasoning_data")
FeedbackRunConfig = stage_config("FeedbackRunConfig", "feedback")
PreferenceDataRunConfig = stage_config("PreferenceDataRunConfig", "preference_data")
SFTRunConfig = stage_config("SFTRunConfig", "sft")
RewardRunConfig = stage_config("RewardRunConfig", "reward")
DPORunConfig = stage_config("DPORunConfig", "dpo")
RLHFRunConfig = stage_config("RLHFRunConfig", "rlhf")
GRPORunConfig = stage_config("GRPORunConfig", "grpo")
DistillRunConfig = stage_config("DistillRunConfig", "distill")
QuantizeRunConfig = stage_config("QuantizeRunConfig", "quantize")
EvalRunConfig = stage_config("EvalRunConfig", "evals")
GateRunConfig = stage_config("GateRunConfig", "gates")
