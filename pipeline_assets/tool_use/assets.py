"""datasets/tool_use: the asset around tool_use/data.py, with a blocking check that no held-out problem leaked.

models/tool_use itself is generated from its stage-registry entry (pipeline_assets/stages.py), like every
post-training model.
"""

import dagster as dg

from pipeline_assets.asset_keys import SFT_DATA, TOOL_USE_DATA
from pipeline_assets.jsonl import read_jsonl
from pipeline_assets.publishing import Reads, finish, writing
from pipeline_assets.run_config import resolved, stage_config
from pipeline_assets.tool_use.data import TOOL_USE_FILE, ToolDataConfig, build_tool_dataset, heldout_leaks
from resources.settings import PipelineSettings
from resources.storage import ArtifactStore

ToolDataRunConfig = stage_config("ToolDataRunConfig", ToolDataConfig, "tool_data")
HELDOUT_CHECK = "no_heldout_problems"


@dg.asset(key=TOOL_USE_DATA, deps=[SFT_DATA], group_name="datasets", code_version="1", kinds={"json"},
          check_specs=[dg.AssetCheckSpec(HELDOUT_CHECK, asset=TOOL_USE_DATA, blocking=True)])
def tool_use_dataset(context: dg.AssetExecutionContext, store: ArtifactStore, settings: PipelineSettings,
                     config: ToolDataRunConfig) -> dg.MaterializeResult:
    """Function-calling exchanges (calculator, sandboxed Python, docs lookup) run for real, plus SFT rows with the
    tools offered and unused, and without tools."""
    reads = Reads(store)
    cfg = resolved(config, settings.profile)
    with writing(context, store) as draft:
        result = build_tool_dataset(draft.work, cfg, reads(SFT_DATA))
    leaks = heldout_leaks(read_jsonl(draft.version.path / TOOL_USE_FILE))
    return finish(context, store, draft, reads, {
        "rows": result["rows"], "dagster/row_count": result["rows"], "counts": dg.MetadataValue.json(result["counts"]),
        "tools": dg.MetadataValue.json(result["tools"])},
        [dg.AssetCheckResult(check_name=HELDOUT_CHECK, passed=not leaks,
                             metadata={"leaks": len(leaks), "examples": dg.MetadataValue.json(leaks[:5])})])
