"""PipelineSettings: which profile (tiny / small / scale) the run uses; a launchpad field like any other."""

from __future__ import annotations

import os
from typing import Literal

import dagster as dg
from pydantic import Field

from pipeline_assets.profiles import PROFILES, Profile, get_profile


def default_profile() -> str:
    return os.environ.get("LLMDAG_PROFILE", "tiny")


ProfileName = Literal["tiny", "small", "scale"]


class PipelineSettings(dg.ConfigurableResource):
    """The profile is also part of every artifact path (ArtifactStore.profile): runs never overwrite another's."""

    profile: ProfileName = Field(description=f"One of {sorted(PROFILES)} (LLMDAG_PROFILE).")

    def get(self) -> Profile:
        return get_profile(self.profile)
