"""Run-config overrides: any field of a stage's profile config can be set from the launchpad or a test.

Each stage asset takes a ``StageOverrides`` (a Dagster PermissiveConfig): the fields given there replace
the profile's values, and a typo fails the run with the list of valid field names.
"""

import dataclasses
from typing import Any, TypeVar

import dagster as dg

T = TypeVar("T")


class StageOverrides(dg.PermissiveConfig):
    """Fields of the stage's config dataclass to override for this run, e.g. ``{"max_steps": 50}``."""


def overridden(base: T, overrides: dg.Config) -> T:
    changes: dict[str, Any] = {k: v for k, v in overrides.model_dump().items() if v is not None}
    valid = {f.name for f in dataclasses.fields(base)}
    unknown = sorted(set(changes) - valid)
    if unknown:
        raise ValueError(f"unknown config fields {unknown} for {type(base).__name__}; valid: {sorted(valid)}")
    for f in dataclasses.fields(base):
        if f.name in changes and isinstance(getattr(base, f.name), tuple) and isinstance(changes[f.name], list):
            changes[f.name] = tuple(changes[f.name])  # run config arrives as JSON lists
    cfg = dataclasses.replace(base, **changes)
    if hasattr(cfg, "validate"):
        cfg.validate()
    return cfg
