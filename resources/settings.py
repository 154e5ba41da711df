"""PipelineSettings: which profile (tiny / small / scale) the run uses; a launchpad field like any other.
Where the work runs is the launcher resource's (resources/launcher.py)."""

from __future__ import annotations

from typing import Literal, TypeVar

import dagster as dg
from pydantic import Field

from pipeline_assets.profiles import PROFILES, PipelineConfig, default_profile, section_config

T = TypeVar("T")
ProfileName = Literal["tiny", "small", "scale"]

__all__ = ["PipelineSettings", "ProfileName", "default_profile"]


class PipelineSettings(dg.ConfigurableResource):
    """The profile is also part of every artifact path (ArtifactStore.profile): runs never overwrite another's."""

    profile: ProfileName = Field(description=f"One of {sorted(PROFILES)} (LLMDAG_PROFILE).")

    def config(self, cls: type[T], section: str) -> T:
        """This profile's ``section`` of pipeline_assets/profiles.py as a validated ``cls``."""
        return section_config(cls, section, self.profile)

    def pipeline(self) -> PipelineConfig:
        return self.config(PipelineConfig, "pipeline")
