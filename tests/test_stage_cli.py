"""One command-line style: every stage's flags are its config dataclass's fields (the Launchpad's names),
defaulting to the chosen profile's values; a registered model stage runs from the command line as its asset
runs it."""

from __future__ import annotations

import argparse
import dataclasses
import json

import pytest
from conftest import profile_sections
from test_stage_registry import TOY

from pipeline_assets.config_flags import add_config_flags, add_profile_flag, config_from_args
from pipeline_assets.run_config import registered_sections
from pipeline_assets.stage_cli import stage_main
from pipeline_assets.stages import register_stage, unregister_stage

profile_sections("tiny")  # loads the Definitions: every stage registers its section
SECTIONS = registered_sections()


def _parser(cls: type) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser()
    add_profile_flag(parser)
    add_config_flags(parser, cls)
    return parser


@pytest.mark.parametrize("section", sorted(SECTIONS))
def test_every_field_is_a_flag_defaulting_to_the_profile(section):
    cls = SECTIONS[section]
    parser = _parser(cls)
    flags = {a.dest for a in parser._actions}  # argparse keeps no public list of its actions
    assert {f.name for f in dataclasses.fields(cls)} <= flags
    for profile in ("tiny", "small"):
        assert config_from_args(cls, section, parser.parse_args(["--profile", profile])) == getattr(
            profile_sections(profile), section)


def test_flags_override_typed_values():
    cls = SECTIONS["sft"]
    args = _parser(cls).parse_args(["--max-steps", "70", "--no-keep-best-dev", "--stop-at-dev-accuracy", "none",
                                    "--eval-prompts", "a", "b"])
    cfg = config_from_args(cls, "sft", args)
    assert (cfg.max_steps, cfg.keep_best_dev, cfg.stop_at_dev_accuracy, cfg.eval_prompts) == (70, False, None,
                                                                                              ("a", "b"))
    assert cfg.learning_rate == profile_sections("tiny").sft.learning_rate  # untouched: the profile's
    with pytest.raises(ValueError):
        config_from_args(cls, "sft", _parser(cls).parse_args(["--max-steps", "0"]))  # validate() runs


def test_a_registered_stage_runs_from_the_command_line(tmp_path, capsys):
    base = tmp_path / "base"
    base.mkdir()
    (base / "config.json").write_text("{}")
    register_stage(TOY)
    try:
        result = stage_main("toy", ["--models-base", str(base), "--out", str(tmp_path / "out"), "--max-steps", "2"])
    finally:
        unregister_stage("toy")
    assert result["steps"] == 2 and (tmp_path / "out" / "config.json").is_file()
    assert json.loads((tmp_path / "out" / "summary.json").read_text())["steps"] == 2
    assert '"steps": 2' in capsys.readouterr().out


def test_config_json_carries_an_assets_resolved_config(tmp_path):
    """What an asset launching its stage under accelerate passes: every field, tuples and None included."""
    from pipeline_assets.config_flags import parse_config_args

    cls = SECTIONS["sft"]
    cfg = dataclasses.replace(profile_sections("tiny").sft, max_steps=70, stop_at_dev_accuracy=None,
                              eval_prompts=("x", "y"))
    path = tmp_path / "config.json"
    path.write_text(json.dumps(dataclasses.asdict(cfg)))
    _, loaded = parse_config_args(argparse.ArgumentParser(), cls, "sft", ["--config-json", str(path)])
    assert loaded == cfg
    path.write_text(json.dumps({**dataclasses.asdict(cfg), "max_steps": 0}))
    with pytest.raises(ValueError):  # validate() runs on it too
        parse_config_args(argparse.ArgumentParser(), cls, "sft", ["--config-json", str(path)])
