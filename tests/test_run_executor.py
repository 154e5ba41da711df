"""A run forks its steps only where two or more of them run torch (pipeline_assets/run_executor.py): runs
through Dagster's own run execution (``execute_job`` on a reconstructable job, as a run worker does), not
``materialize``, which always executes in process."""

from __future__ import annotations

import os

import dagster as dg

from pipeline_assets.profiles import PipelineConfig
from pipeline_assets.run_executor import executor_for, forks_steps, torch_keys


@dg.asset(kinds={"pytorch"})
def trains() -> int:
    return os.getpid()


@dg.asset(kinds={"pytorch"}, deps=[trains])
def evaluates() -> int:
    return os.getpid()


@dg.asset(kinds={"datatrove"})
def filters() -> int:
    return os.getpid()


ASSETS = [trains, evaluates, filters]


def _job() -> dg.JobDefinition:
    pipeline = PipelineConfig(dagster_executor="multiprocess", max_concurrent_steps=2)
    defs = dg.Definitions(assets=ASSETS, jobs=[dg.define_asset_job("everything")],
                          executor=executor_for(pipeline, torch_keys(ASSETS)))
    return defs.resolve_job_def("everything")


# By module name and folder: the step processes import this file as pytest did (it is not in a package).
RECONSTRUCTABLE = dg.build_reconstructable_job(__name__, "_job",
                                               reconstructor_working_directory=os.path.dirname(__file__))


def _executor_message(selection: list[dg.AssetKey]) -> str:
    with dg.instance_for_test() as instance:
        result = dg.execute_job(RECONSTRUCTABLE, instance=instance, asset_selection=selection)
        assert result.success
        events = instance.all_logs(result.run_id, of_type=dg.DagsterEventType.ENGINE_EVENT)
        return " | ".join(e.user_message for e in events if "xecut" in e.user_message)


def test_torch_keys_come_from_the_declared_kinds() -> None:
    torch = torch_keys(ASSETS)
    assert torch == {trains.key, evaluates.key}
    assert forks_steps(None, torch) and forks_steps(frozenset(torch | {filters.key}), torch)
    assert not forks_steps(frozenset({trains.key, filters.key}), torch)


def test_a_run_of_two_torch_steps_forks_and_one_of_fewer_runs_in_process() -> None:
    assert "multiprocess executor" in _executor_message([trains.key, evaluates.key])
    message = _executor_message([trains.key, filters.key])
    assert "in process" in message and "multiprocess" not in message
