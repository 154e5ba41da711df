"""The command line of a registered model stage (pipeline_assets/stages.py): its inputs as
``--<asset-key>`` dirs and its config's fields as flags (pipeline_assets/config_flags.py).

A registered model stage (pipeline_assets/stages.py) runs exactly as its asset does, on published dirs:

    python -m pipeline_assets.posttrain.sft --help
    python -m pipeline_assets.posttrain.sft --models-base DIR --datasets-sft DIR \\
        --tokenizer-tokenized-shards DIR --evals-benchmarks DIR --out OUT --max-steps 200
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pipeline_assets.config_flags import parse_config_args
from pipeline_assets.pipes_rank0 import is_rank0, rank0_pipes
from pipeline_assets.stages import StageInputs, resolve, stage
from pipeline_assets.summary import write_summary


def input_flag(key: str) -> str:
    """``models/base`` -> ``--models-base``: the flag that names an input asset's published dir."""
    return "--" + key.replace("/", "-").replace("_", "-")


def add_input_flags(parser: argparse.ArgumentParser, keys: Sequence[str], required: bool = True) -> None:
    """One ``--<asset-key> DIR`` flag per input asset (dest: the key). Not required: the flag overrides the
    profile's current published version (`current_inputs`), as bench/ scripts take their inputs."""
    paths = parser.add_argument_group("Inputs: the published dir of each asset " + (
        "the stage reads" if required else "(default: the profile's current version under LLMDAG_HOME)"))
    for key in keys:
        paths.add_argument(input_flag(key), dest=key, type=Path, required=required, metavar="DIR", help=key)


def current_inputs(args: argparse.Namespace, keys: Sequence[str], profile: str) -> dict[str, Path]:
    """Each input's dir: its flag's when given, else the profile's current published version; exits with what
    to materialize or pass when one has none."""
    from resources.storage import ArtifactStore, default_root

    store = ArtifactStore(root=default_root(), profile=profile)
    try:
        return {key: getattr(args, key) or store.current(key) for key in keys}
    except FileNotFoundError as e:
        raise SystemExit(f"{e}, or pass {' and '.join(input_flag(k) for k in keys)}") from None


def stage_main(name: str, argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Run registered model stage ``name`` from the command line, as its asset runs it.

    Under ``accelerate launch`` (a ``multi_process`` stage sent out of process by its asset) every rank runs
    this; rank 0 alone writes the summary, streams its log into the Dagster run and reports where the summary
    is through Pipes (pipeline_assets/pipes_rank0.py).
    """
    entry = stage(name)
    cls = resolve(entry.config)
    parser = argparse.ArgumentParser(prog=f"python -m {entry.trainer.partition(':')[0]}",
                                     description=entry.description or f"models/{name}")
    keys = [k.to_user_string() for k in (entry.parent_key, *entry.inputs) if k is not None]
    add_input_flags(parser, keys)
    parser.add_argument("--out", type=Path, required=True, help="the checkpoint dir to write (created)")
    parser.add_argument("--checkpoint-dir", type=Path, default=None,
                        help="trainer resume points; a rerun with the same dir resumes (default: none)")
    args, cfg = parse_config_args(parser, cls, entry.section, argv)
    args.out.mkdir(parents=True, exist_ok=True)
    inputs = StageInputs({key: getattr(args, key) for key in keys}, args.profile)
    with rank0_pipes() as report:
        result = resolve(entry.trainer)(cfg, inputs, args.out, args.checkpoint_dir if entry.resumable else None,
                                        report.log)
        if is_rank0():
            write_summary(args.out, result)
            print(json.dumps({k: v for k, v in result.items() if not k.endswith(("history", "curve", "samples"))},
                             indent=2, default=str))
        report.result(summary=str(args.out / "summary.json"))
    return result
