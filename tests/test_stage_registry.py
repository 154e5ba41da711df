"""A stage added by one module plus one registry entry: its model asset (with its Launchpad form), eval
asset, gates and report-card row all appear, and the generated model asset materializes."""

from __future__ import annotations

import dagster as dg
import pytest
from conftest import latest_metadata, published, run_assets

from pipeline_assets.definitions import build_definitions
from pipeline_assets.profiles import section_config
from pipeline_assets.reports.gates import GateConfig, evaluate_gates
from pipeline_assets.reports.report_card import build_report_card_json
from pipeline_assets.stages import ModelStage, model_stages, register_stage, stage, unregister_stage

TOY = ModelStage("toy", "base", section="toy", trainer="tests.toy_stage:train", config="tests.toy_stage:ToyConfig",
                 description="A toy stage: copies its parent.", lm_eval_task=None)


@pytest.fixture
def toy():
    register_stage(TOY)
    yield TOY
    unregister_stage("toy")


def test_a_registered_stage_gets_model_eval_gate_and_report_row(toy, tmp_path):
    defs = build_definitions(root=str(tmp_path), landing=str(tmp_path / "landing"), builtin_sources=False)
    graph = defs.resolve_asset_graph()
    model, evals = dg.AssetKey(["models", "toy"]), dg.AssetKey(["evals", "toy"])
    assert graph.get(model).parent_keys == {dg.AssetKey(["models", "base"])}
    assert model in graph.get(evals).parent_keys
    assert evals in graph.get(dg.AssetKey(["reports", "report_card"])).parent_keys
    assert graph.get(model).check_keys  # the blocking training check
    # The Launchpad form is ToyConfig's fields with the profile's values (no "toy" section: the defaults).
    schema = defs.get_assets_def(model).op.config_schema.as_field().config_type.fields
    assert {"max_steps", "learning_rate"} <= set(schema)

    cfg = section_config(GateConfig, "gates", "tiny")
    assert cfg.target_metrics["models/toy"] == ("arithmetic_accuracy",)
    metrics = {"models/base": {"arithmetic_accuracy": 0.1}, "models/toy": {"arithmetic_accuracy": 0.5}}
    gates = evaluate_gates(metrics, {"models/toy": "models/base"}, cfg)
    target = next(g for g in gates["gates"] if g["stage"] == "models/toy" and g["kind"] == "target")
    assert target["status"] == "pass" and target["target"]["metric"] == "arithmetic_accuracy"
    card = build_report_card_json({"evals": {"models/toy": {"metrics": metrics["models/toy"]}},
                                   "lineage": {"models/toy": "models/base"}, "gates": gates})
    assert card["stages"]["toy"]["parent"] == "base"
    assert card["stages"]["toy"]["target"]["metric"] == "arithmetic_accuracy"


def test_the_registry_is_ordered_and_checked():
    names = [s.name for s in model_stages()]
    assert names[0] == "base" and all(names.index(s.parent) < names.index(s.name) for s in model_stages()
                                      if s.parent)
    with pytest.raises(ValueError, match="parent 'nope' is not registered"):
        register_stage(ModelStage("orphan", "nope"))
    with pytest.raises(ValueError, match="unknown model stage 'orphan'"):
        stage("orphan")


def test_the_generated_model_asset_materializes(toy, pretrained, tmp_path):
    graph = {**pretrained, "defs": build_definitions(root=str(pretrained["root"]),
                                                     landing=str(pretrained["root"] / "landing"))}
    result = run_assets(graph, 'key:"models/toy"', {"models/toy": {"max_steps": 4}})
    assert result.success, [e.message for e in result.all_events if e.is_failure]
    assert (published(pretrained["root"], "models/toy") / "config.json").is_file()
    meta = latest_metadata(pretrained["instance"], ["models", "toy"])
    assert meta["steps"] == 4 and meta["resumable"] is True
