"""PipelineSettings: which profile (tiny / small / scale) the run uses; a launchpad field like any other."""

from __future__ import annotations

import os

import dagster as dg
from pydantic import Field

from pipeline_assets.profiles import PROFILES, Profile, get_profile


def default_profile() -> str:
    return os.environ.get("LLMDAG_PROFILE", "tiny")


class PipelineSettings(dg.ConfigurableResource):
    profile: str = Field(description=f"One of {sorted(PROFILES)} (LLMDAG_PROFILE).")

    def get(self) -> Profile:
        return get_profile(self.profile)
