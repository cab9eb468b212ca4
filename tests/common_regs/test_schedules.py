"""Schedules are pure functions of the step with closed-form values, and round-trip through their config."""

from __future__ import annotations

import math

import pytest

from common_regs.schedules import Constant, Cosine, Linear, QuadraticWarmup, Step, as_schedule, schedule_from_config


@pytest.mark.parametrize(
    ("schedule", "expected"),
    [
        (Constant(0.3), {0: 0.3, 10**6: 0.3}),
        (Linear(1.0, 0.0, 10), {-5: 1.0, 0: 1.0, 5: 0.5, 10: 0.0, 20: 0.0}),
        (QuadraticWarmup(2.0, 4), {0: 0.0, 1: 2.0 / 16, 2: 0.5, 4: 2.0, 100: 2.0}),
        (Cosine(1.0, 0.1, 8), {0: 1.0, 4: 0.55, 8: 0.1, 9: 0.1, 2: 0.1 + 0.9 * (1 + math.cos(math.pi / 4)) / 2}),
        (Step(1.0, 0.5, 3), {0: 1.0, 2: 1.0, 3: 0.5, 7: 0.25}),
    ],
)
def test_closed_form_values(schedule, expected):
    for step, value in expected.items():
        assert schedule(step) == pytest.approx(value)


@pytest.mark.parametrize(
    "schedule", [Constant(1.5), Linear(0, 1, 5), QuadraticWarmup(3, 7), Cosine(1, 0, 9), Step(1, 0.1, 2)]
)
def test_config_round_trip(schedule):
    restored = schedule_from_config(schedule.get_config_dict())
    assert restored == schedule
    assert [restored(s) for s in range(12)] == [schedule(s) for s in range(12)]


def test_validation_and_coercion():
    with pytest.raises(ValueError, match="`total_steps` must be a positive integer, got 0"):
        Linear(0, 1, 0)
    with pytest.raises(ValueError, match="schedule `name` must be one of"):
        schedule_from_config({"name": "exponential"})
    assert as_schedule(2) == Constant(2.0)
    assert as_schedule({"name": "linear", "start": 0, "end": 1, "total_steps": 2})(1) == 0.5
    with pytest.raises(TypeError, match="expected a number"):
        as_schedule("fast")
