"""Collapse guard (pipeline_assets/synthetic/collapse.py): replacing data with samples degrades, accumulating holds.

    python -m pytest -q tests/test_synthetic_collapse.py              # input validation (fast)
    python -m pytest -q -m slow tests/test_synthetic_collapse.py      # both arms, 4 generations (~2.5-3 min)
"""

from __future__ import annotations

import pytest

from pipeline_assets.synthetic.collapse import (
    HELDOUT_ROWS,
    TRAIN_ROWS,
    CollapseConfig,
    decode,
    encode,
    real_split,
    run_arms,
    run_collapse,
)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"generations": 3, "mode": "mix"}, r"mode must be one of \('replace', 'accumulate'\), got 'mix'"),
        ({"generations": 0, "mode": "replace"}, r"generations must be an int >= 1"),
        ({"generations": -2, "mode": "accumulate"}, r"generations must be an int >= 1"),
        ({"generations": 2.0, "mode": "accumulate"}, r"generations must be an int >= 1"),
    ],
)
def test_bad_arm_raises_before_training(kwargs: dict, message: str):
    with pytest.raises(ValueError, match=message):
        run_collapse(["some real text"], ["held out"], **kwargs)


def test_bad_config_and_empty_data_raise():
    with pytest.raises(ValueError, match=r"CollapseConfig.steps must be a positive int, got 0"):
        CollapseConfig(steps=0)
    with pytest.raises(ValueError, match=r"multiple of heads"):
        CollapseConfig(hidden=30, heads=4)
    with pytest.raises(ValueError, match=r"temperature must be > 0"):
        CollapseConfig(temperature=0.0)
    with pytest.raises(ValueError, match=r"must both be non-empty"):
        run_collapse([], ["held out"], generations=2, mode="replace")


def test_real_split_is_fixed_and_disjoint_and_tokens_round_trip():
    train, heldout = real_split(TRAIN_ROWS, HELDOUT_ROWS)
    assert (train, heldout) == real_split(TRAIN_ROWS, HELDOUT_ROWS)
    assert len(train) == TRAIN_ROWS and len(heldout) == HELDOUT_ROWS and not set(train) & set(heldout)
    for line in train[:50]:
        assert decode(encode(line, 80)[1:]) == line


@pytest.mark.slow
def test_replace_collapses_and_accumulate_holds():
    """Seed 0, both arms, generations 0-3 (7 trainings, generation 0 shared).

    Over seeds 0-5 at generation 3 (collapse.py's docstring): replace +0.61 to +0.72 nats above generation 0,
    accumulate at most x1.030 of it and 0.55-0.68 below replace. Bounds: +0.3, 0.3 below, x1.08.
    """
    generations = 4
    train, heldout = real_split(TRAIN_ROWS, HELDOUT_ROWS)
    arms = run_arms(train, heldout, generations=generations, seed=0)
    replace = [r["heldout_loss"] for r in arms["replace"]]
    accumulate = [r["heldout_loss"] for r in arms["accumulate"]]
    assert replace[0] == accumulate[0]  # generation 0 is shared: real data only
    assert [r["train_rows"] for r in arms["replace"]] == [TRAIN_ROWS] * generations
    assert [r["train_rows"] for r in arms["accumulate"]] == [TRAIN_ROWS * (g + 1) for g in range(generations)]
    assert replace[-1] > replace[0] + 0.3, f"replace did not degrade: {replace}"
    assert accumulate[-1] < replace[-1] - 0.3, f"accumulate not clearly below replace: {accumulate} vs {replace}"
    assert accumulate[-1] < 1.08 * accumulate[0], f"accumulate drifted from generation 0: {accumulate}"
