"""PipelineSettings: which profile (tiny / small / scale) and launcher (local / slurm / ray / k8s) the run uses;
launchpad fields like any other."""

from __future__ import annotations

from typing import Literal, TypeVar

import dagster as dg
from pydantic import Field

from pipeline_assets.profiles import PROFILES, PipelineConfig, default_profile, section_config
from resources.engines import Launcher

T = TypeVar("T")
ProfileName = Literal["tiny", "small", "scale"]

__all__ = ["PipelineSettings", "ProfileName", "default_profile"]


class PipelineSettings(dg.ConfigurableResource):
    """The profile is also part of every artifact path (ArtifactStore.profile): runs never overwrite another's."""

    profile: ProfileName = Field(description=f"One of {sorted(PROFILES)} (LLMDAG_PROFILE).")
    launcher: Launcher = Field(default="local", description="Where curation and training run: local, slurm, "
                               "ray or k8s (LLMDAG_LAUNCHER); engine settings are the datatrove resource's config.")

    def config(self, cls: type[T], section: str) -> T:
        """This profile's ``section`` of pipeline_assets/profiles.py as a validated ``cls``."""
        return section_config(cls, section, self.profile)

    def pipeline(self) -> PipelineConfig:
        return self.config(PipelineConfig, "pipeline")
