"""Typed run config per stage: a ``dg.Config`` generated from the stage's config dataclass.

Every field of the stage's dataclass becomes a typed Launchpad field whose default is the
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

from pipeline_assets.profiles import PipelineConfig, default_profile, section_config

T = TypeVar("T")
_SECTIONS: dict[type, tuple[type, str]] = {}  # generated Config class -> (dataclass, profiles.py section)
_REGISTERED: dict[str, type] = {"pipeline": PipelineConfig}  # profiles.py section -> the dataclass it configures


def register_section(section: str, cls: type) -> None:
    """Declare that ``section`` of every profile configures dataclass ``cls`` (stage_config does it too)."""
    if _REGISTERED.setdefault(section, cls) is not cls:
        raise ValueError(f"profiles.py section {section!r} already configures {_REGISTERED[section].__name__}")


def registered_sections() -> dict[str, type]:
    """Every section a loaded stage declared, with its dataclass: what profiles.py may set."""
    return dict(_REGISTERED)


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


def stage_config(name: str, cls: type, section: str, only: tuple[str, ...] | None = None) -> type[dg.Config]:
    """A Config class for dataclass ``cls`` (or its fields ``only``), defaults from the active profile's
    ``section`` (pipeline_assets/profiles.py)."""
    register_section(section, cls)
    profile = default_profile()
    base = section_config(cls, section, profile)
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(base)]
    if only is not None:
        unknown = sorted(set(only) - set(names))
        if unknown:
            raise ValueError(f"{name}: {cls.__name__} has no fields {unknown}")
        names = [n for n in names if n in only]
    fields = {n: (_config_type(hints[n]), pydantic.Field(default=_plain(getattr(base, n)))) for n in names}
    which = "every field" if only is None else f"the fields {', '.join(names)}"
    doc = (f"Run config of this stage: {which} of {cls.__name__}, defaults from the '{profile}' profile's "
           f"'{section}' section (pipeline_assets/profiles.py).")
    config_cls = pydantic.create_model(name, __base__=dg.Config, __doc__=doc, **fields)
    _SECTIONS[config_cls] = (cls, section)
    return config_cls


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


def resolved(config: dg.Config, profile: str) -> Any:
    """The stage's dataclass for a run: ``profile``'s section with every field the run config changed."""
    cls, section = _SECTIONS[type(config)]
    return overridden(section_config(cls, section, profile), config)


def check_op_config(config_cls: type[dg.Config], values: dict, profile: str) -> None:
    """Build the stage's dataclass from run-config ``values`` and run its ``validate()``: range errors up front."""
    resolved(config_cls(**values), profile)
