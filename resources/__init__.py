"""Dagster resources for llmdag, one module each, imported from that module (so importing one never loads
the others): storage.ArtifactStore (artifact root, versions), settings.PipelineSettings (the active profile),
launcher.LauncherResource (where curation and training run; it calls datatrove.py, training.py and reads
engines.py's site settings), sources.SourcesResource (built-in and landing sources; part of the corpus stage)."""
