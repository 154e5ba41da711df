"""SourcesResource: the corpus sources a run knows: built-in local text, landing folders, configured ones."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
from pydantic import Field

from pipeline_assets.corpus.sources import SourceSpec, available_builtin_sources, landing_sources


class UserSource(dg.Config):
    """A source added through config instead of the landing folder."""

    name: str = Field(description="Partition key (letters, digits, _ . -).")
    path: str | None = Field(default=None, description="Local folder (JSONL/parquet/text) or datasets dir.")
    hf_dataset: str | None = Field(default=None, description="HF hub dataset id (needs network).")
    hf_split: str = "train"
    domain: str = Field(default="web", description="prose | code | legal | web | math: picks the filter recipe.")
    text_field: str = "text"


class SourcesResource(dg.ConfigurableResource):
    landing: str = Field(description="Landing directory (LLMDAG_LANDING): each subfolder is one source.")
    builtin: bool = Field(default=True, description="Include the built-in local sources.")
    extra: list[UserSource] = Field(default_factory=list, description="Sources added through config.")
    # The profile's arithmetic task space: what the built-in synthetic_arithmetic stream draws from.
    task_operand_max: int = 99
    task_operators: list[str] = Field(default_factory=lambda: ["+", "-"])

    def specs(self) -> dict[str, SourceSpec]:
        specs = (dict(available_builtin_sources(self.task_operand_max, tuple(self.task_operators)))
                 if self.builtin else {})
        specs.update(landing_sources(Path(self.landing)))
        for s in self.extra:
            specs[s.name] = SourceSpec(name=s.name, kind="hf" if s.hf_dataset else "folder", domain=s.domain,
                                       path=s.path, hf_dataset=s.hf_dataset, hf_split=s.hf_split,
                                       text_field=s.text_field)
        return specs

    def spec(self, name: str) -> SourceSpec:
        specs = self.specs()
        if name not in specs:
            raise KeyError(f"unknown source {name!r}: known sources are {sorted(specs)}; add a folder to "
                           f"{self.landing} or an entry under `extra` in the sources resource config")
        return specs[name]
