"""Where a stage name points: the checkpoint dir of "sft", "models/sft" or "release" under the artifact root.

    artifact root = $LLMDAG_HOME, else $DAGSTER_HOME/llmdag, else ./.llmdag
    "sft" or "models/sft" -> <root>/models/sft/_/<profile>/current   (the published version)
    "release"            -> <root>/release/model/_/<profile>/current
    inside it, the checkpoint is <dir>/model/ when that holds a config.json, else the dir itself.
An existing path is used as given. A stage name is resolved only inside the root: each part must be a valid
name (names.py), and a ``current`` link that leads outside the root is refused. Plain (no Dagster, no torch at
import): the chat CLI and ``llmdag serve`` resolve names before loading anything.
"""

from __future__ import annotations

import os
from pathlib import Path

from pipeline_assets.names import check_segment


def artifact_root() -> Path:
    """Same rule as resources.storage.default_root (not imported: that module pulls in Dagster)."""
    if os.environ.get("LLMDAG_HOME"):
        return Path(os.environ["LLMDAG_HOME"]).expanduser()
    if os.environ.get("DAGSTER_HOME"):
        return Path(os.environ["DAGSTER_HOME"]).expanduser() / "llmdag"
    return Path.cwd() / ".llmdag"


def resolve_model_dir(spec: str, root: Path | None = None) -> Path:
    """A checkpoint path, or a stage name ("sft", "models/sft") under the artifact root; see the docstring."""
    path = Path(spec).expanduser()
    root = root or artifact_root()
    if _is_dir(path):
        return _checkpoint(path)  # a path the user gave: theirs to choose
    asset_dir = stage_dir(spec, root)
    if asset_dir.is_dir():
        model_dir = _checkpoint(asset_dir)  # its model/ subdir too must stay inside the root
        inside_root(model_dir, root)
        return model_dir
    profile = os.environ.get("LLMDAG_PROFILE", "tiny")
    models = root / "models"
    available = sorted(d.name for d in models.iterdir() if (d / "_" / profile / "current").is_dir()) \
        if models.is_dir() else []
    raise FileNotFoundError(
        f"{spec!r} is not a directory and {asset_dir} does not exist (artifact root {root}, from LLMDAG_HOME / "
        f"DAGSTER_HOME / ./.llmdag); materialized stages: {', '.join(available) or 'none'}. "
        "Materialize the model asset, set LLMDAG_HOME, or pass a checkpoint dir"
    )


def _is_dir(path: Path) -> bool:
    try:
        return path.is_dir()
    except (OSError, ValueError):  # a name too long for the file system, a NUL byte
        return False


def stage_dir(spec: str, root: Path) -> Path:
    """``<root>/models/<stage>/_/<profile>/current`` for "sft" or "models/sft", release/model's for "release";
    ValueError for anything that is not one valid name below ``models/`` ("../x", "models/../../x", a NUL)."""
    parts = _stage_parts(spec)
    profile = check_segment(os.environ.get("LLMDAG_PROFILE", "tiny"), "LLMDAG_PROFILE")
    if parts == ["release"]:  # what release/model published
        return root.joinpath("release", "model", "_", profile, "current")
    if len(parts) != 1:
        raise ValueError(f"{spec!r} is not a directory, nor a stage name (one name, optionally prefixed "
                         "'models/', e.g. sft or models/sft)")
    check_segment(parts[0], "stage name")
    # The published version of the active profile (resources/storage.py layout).
    return root.joinpath("models", parts[0], "_", profile, "current")


def _stage_parts(spec: str) -> list[str]:
    """``spec`` split on "/" with the optional "models/" prefix dropped and "release/model" as ["release"]."""
    parts = spec.strip("/").split("/")
    if parts in (["release"], ["release", "model"]):
        return ["release"]
    return parts[1:] if len(parts) > 1 and parts[0] == "models" else parts


def stage_name(spec: str) -> str | None:
    """The stage a spec names ("models/sft" -> "sft", "release/model" -> "release"), None for anything else."""
    parts = _stage_parts(spec)
    return parts[0] if len(parts) == 1 and parts[0] else None


def inside_root(path: Path, root: Path) -> Path:
    """``path`` resolved, if it stays inside the artifact root once symlinks are followed, else ValueError."""
    resolved, real_root = path.resolve(), root.expanduser().resolve()
    if not resolved.is_relative_to(real_root):
        raise ValueError(f"{path} resolves to {resolved}, outside the artifact root {real_root}: a symbolic "
                         "link leads elsewhere; refusing to load it (pass a checkpoint dir explicitly if meant)")
    return resolved


def _checkpoint(candidate: Path) -> Path:
    # Imported here: harness pulls in torch (~5 s), which a mistyped stage name should not wait for.
    from pipeline_assets.model_io import find_model_dir

    return find_model_dir(candidate)
