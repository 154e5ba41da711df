"""Dagster resources for llmdag, one module each, imported from that module (so importing one never loads
the others): storage.ArtifactStore (artifact root, versions), settings.PipelineSettings (the active profile),
datatrove.DatatroveExecutorResource (where curation runs), sources.SourcesResource (built-in and landing
sources; part of the corpus stage)."""
