"""Dagster resources for llmdag: artifact storage, the active profile, datatrove executors."""

from resources.datatrove import DatatroveExecutorResource
from resources.settings import PipelineSettings
from resources.sources import SourcesResource, UserSource
from resources.storage import ArtifactStore

__all__ = ["ArtifactStore", "DatatroveExecutorResource", "PipelineSettings", "SourcesResource", "UserSource"]
