"""SourcesResource: the corpus sources a run knows: built-in local text, landing folders, configured ones.

Every source name is checked by ``pipeline_assets.names.validate_source_name``: a configured one when the
config is loaded (``UserSource``), a partition key when an asset asks for its source (``spec``), so a key
added through the UI or GraphQL, which bypasses the sensors, fails the step before any file is touched.
"""

from __future__ import annotations

from pathlib import Path

import dagster as dg
from pydantic import Field, field_validator

from pipeline_assets.corpus.sources import SourceSpec, available_builtin_sources, landing_sources
from pipeline_assets.names import is_source_name, validate_source_name


class UserSource(dg.Config):
    """A source added through config instead of the landing folder."""

    name: str = Field(description="Partition key (letters, digits, _ . -; at most 64, starting with a letter "
                                  "or digit).")
    path: str | None = Field(default=None, description="Local folder (JSONL/parquet/text) or datasets dir.")
    hf_dataset: str | None = Field(default=None, description="HF hub dataset id (needs network).")
    hf_split: str = "train"
    domain: str = Field(default="web", description="prose | code | legal | web | math: picks the filter recipe.")
    text_field: str = "text"

    @field_validator("name")
    @classmethod
    def _valid_name(cls, name: str) -> str:
        return validate_source_name(name, "configured source name")


class SourcesResource(dg.ConfigurableResource):
    landing: str = Field(description="Landing directory (LLMDAG_LANDING): each subfolder is one source.")
    builtin: bool = Field(default=True, description="Include the built-in local sources.")
    extra: list[UserSource] = Field(default_factory=list, description="Sources added through config.")
    # The profile's arithmetic task space: what the built-in synthetic_arithmetic stream draws from.
    task_operand_max: int = 99
    task_operators: list[str] = Field(default_factory=lambda: ["+", "-"])

    def specs(self) -> dict[str, SourceSpec]:
        """Every known source with a valid name (landing folders with bad names are left out, and reported by
        ``landing_sources_checked``; configured ones are refused when the config loads)."""
        specs = (dict(available_builtin_sources(self.task_operand_max, tuple(self.task_operators)))
                 if self.builtin else {})
        specs.update(landing_sources(Path(self.landing)))
        for s in self.extra:
            if not is_source_name(s.name):  # only reachable by bypassing pydantic (model_construct)
                continue
            specs[s.name] = SourceSpec(name=s.name, kind="hf" if s.hf_dataset else "folder", domain=s.domain,
                                       path=s.path, hf_dataset=s.hf_dataset, hf_split=s.hf_split,
                                       text_field=s.text_field)
        return specs

    def spec(self, name: str) -> SourceSpec:
        try:
            validate_source_name(name, "source partition key")
        except ValueError as e:
            raise ValueError(f"{e}. Nothing was read or written for it; a partition added through the UI or "
                             "GraphQL bypasses the sensors' checks: delete it from the 'sources' partitions") from None
        specs = self.specs()
        if name not in specs:
            raise KeyError(f"unknown source {name!r}: known sources are {sorted(specs)}; add a folder to "
                           f"{self.landing} or an entry under `extra` in the sources resource config")
        return specs[name]
