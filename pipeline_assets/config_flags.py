"""Command-line flags generated from a config dataclass: one style for every stage's CLI.

Every field becomes ``--field-name`` (the Launchpad's field names, kebab-cased), its default the chosen
profile's value (``--profile``, pipeline_assets/profiles.py); a flag not given keeps that value. ``none``
sets an Optional field to None, a tuple field takes several values, a mapping field JSON. No Dagster here:
pretraining's CLI runs under torchrun.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import types
import typing
from collections.abc import Mapping, Sequence
from typing import Any

from pipeline_assets.profiles import PROFILES, default_profile, section_config


def _optional(kind: type) -> Any:
    def parse(text: str) -> Any:
        return None if text.lower() == "none" else kind(text)

    parse.__name__ = f"{kind.__name__}|none"
    return parse


def _type_name(tp: Any) -> str:
    return tp.__name__ if isinstance(tp, type) else str(tp).replace("typing.", "")


def _flag_kwargs(tp: Any) -> dict[str, Any]:
    """argparse keywords for a field of type ``tp``."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    optional = origin in (typing.Union, types.UnionType) and type(None) in args
    if optional:
        rest = [a for a in args if a is not type(None)]
        tp = rest[0] if len(rest) == 1 else str
        origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is bool:
        return {"action": argparse.BooleanOptionalAction}
    if origin is tuple:
        inner = args[0] if args else str
        return {"type": inner if inner in (int, float, str) else str, "nargs": "*"}
    if origin in (dict, Mapping) or tp in (dict, Mapping):
        return {"type": json.loads, "metavar": "JSON"}
    if origin is typing.Literal:
        return {"type": str, "choices": list(args)}
    base = tp if tp in (int, float, str) else str
    return {"type": _optional(base) if optional else base}


def add_config_flags(parser: argparse.ArgumentParser, cls: type,
                     helps: Mapping[str, Mapping[str, str]] | None = None) -> None:
    """``--field-name`` for every field of dataclass ``cls``; ``helps``: group title -> {field: help}, in
    that order (fields it does not name go to a group of their own)."""
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    groups = {title: list(fields) for title, fields in (helps or {}).items()}
    listed = {n for fields in groups.values() for n in fields}
    rest = [n for n in names if n not in listed]
    if rest:
        groups[f"{cls.__name__} fields"] = rest
    text = {n: h for fields in (helps or {}).values() for n, h in fields.items()}
    for title, fields in groups.items():
        group = parser.add_argument_group(title)
        for name in fields:
            # SUPPRESS: a flag not given is absent from the namespace, so the profile's value stays and an
            # explicit "none" is a real override.
            group.add_argument("--" + name.replace("_", "-"), dest=name, default=argparse.SUPPRESS,
                               help=text.get(name, _type_name(hints[name])),
                               **_flag_kwargs(hints[name]))


def add_profile_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--profile", choices=sorted(PROFILES), default=default_profile(),
                        help="the profile whose values are the defaults (LLMDAG_PROFILE; pipeline_assets/profiles.py)")


def config_from_args(cls: type, section: str, args: argparse.Namespace) -> Any:
    """``cls`` from ``args.profile``'s section with every flag given applied, validated."""
    changes = {f.name: getattr(args, f.name) for f in dataclasses.fields(cls) if hasattr(args, f.name)}
    return _changed(cls, section, args.profile, changes)


def config_from_json(cls: type, section: str, profile: str, text: str) -> Any:
    """``cls`` from ``profile``'s section with the JSON object's fields (``dataclasses.asdict`` of one), validated."""
    return _changed(cls, section, profile, json.loads(text))


def _changed(cls: type, section: str, profile: str, changes: Mapping[str, Any]) -> Any:
    """``profile``'s section of ``cls`` with ``changes`` (lists as the tuples the dataclasses hold), validated."""
    cfg = dataclasses.replace(section_config(cls, section, profile),
                              **{k: tuple(v) if isinstance(v, list) else v for k, v in changes.items()})
    validate = getattr(cfg, "validate", None)
    if validate is not None:
        validate()
    return cfg


def parse_config_args(parser: argparse.ArgumentParser, cls: type, section: str,
                      argv: Sequence[str] | None = None) -> tuple[argparse.Namespace, Any]:
    """Add ``--profile``, ``--config-json`` and ``cls``'s flags to ``parser``, parse ``argv``: (the namespace,
    the validated config). ``--config-json FILE`` (what an asset launching the stage passes) replaces the flags."""
    add_profile_flag(parser)
    parser.add_argument("--config-json", type=argparse.FileType("r"), default=None, metavar="FILE",
                        help="the whole config as JSON (an asset's resolved run config); the config flags are ignored")
    add_config_flags(parser, cls)
    args = parser.parse_args(argv)
    if args.config_json is not None:
        with args.config_json as f:
            return args, config_from_json(cls, section, args.profile, f.read())
    return args, config_from_args(cls, section, args)
