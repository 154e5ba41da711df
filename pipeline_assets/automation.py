"""Jobs, the landing-folder sensor and the schedule: how the graph runs without someone clicking."""

from __future__ import annotations

from pathlib import Path

import dagster as dg

from pipeline_assets.corpus.assets import sources_partitions
from pipeline_assets.corpus.sources import SOURCE_NAME, landing_sources

# A new source: its own per-source assets, then what every source feeds (dedup across sources, mixture).
# Unpartitioned assets in a partitioned run materialize once, after the partition's upstream steps.
new_source_job = dg.define_asset_job(
    "ingest_source",
    selection=dg.AssetSelection.groups("corpus") | dg.AssetSelection.assets(["evals", "benchmarks"]),
    partitions_def=sources_partitions,
    description="Curate one source partition end to end, then re-cluster duplicates and rebuild the mixture.",
)


def landing_sensor_factory(landing: str) -> dg.SensorDefinition:
    @dg.sensor(job=new_source_job, minimum_interval_seconds=30, default_status=dg.DefaultSensorStatus.RUNNING,
               description=f"Adds a 'sources' partition for each new folder in {landing} and curates it.")
    def landing_folders(context: dg.SensorEvaluationContext) -> dg.SensorResult | dg.SkipReason:
        known = set(context.instance.get_dynamic_partitions(sources_partitions.name))
        folders = sorted(p.name for p in Path(landing).iterdir() if p.is_dir()) if Path(landing).is_dir() else []
        invalid = [f for f in folders if not SOURCE_NAME.match(f)]
        new = [name for name in landing_sources(Path(landing)) if name not in known and SOURCE_NAME.match(name)]
        if invalid:
            context.log.warning(f"ignored landing folders with invalid names (letters, digits, _ . -): {invalid}")
        if not new:
            return dg.SkipReason(f"no new folder in {landing}")
        return dg.SensorResult(
            run_requests=[dg.RunRequest(partition_key=name, run_key=f"landing-{name}") for name in new],
            dynamic_partitions_requests=[sources_partitions.build_add_request(new)],
        )

    return landing_folders

