"""The fan-out of the streamed stages: results in task order whatever the workers, one pool per process kept
across passes, a failing task raised to the caller, and a dead worker costing only the pass it killed."""

from __future__ import annotations

import os
import signal
from concurrent.futures.process import BrokenProcessPool

import pytest

from dagster_project.stages import parts
from dagster_project.stages.parts import map_in_order


def square_with_pid(task: int) -> tuple[int, int]:
    return task * task, os.getpid()


def fail_on_three(task: int) -> int:
    if task == 3:
        raise ValueError("task 3 is bad")
    return task


def die_on_three(task: int) -> int:
    if task == 3:
        os.kill(os.getpid(), signal.SIGKILL)
    return task


@pytest.fixture(autouse=True)
def fresh_pool():
    parts._discard_pool()
    yield
    parts._discard_pool()


def test_results_come_back_in_order_from_one_pool_kept_for_the_next_pass() -> None:
    first = list(map_in_order(square_with_pid, range(12), workers=2, parallel_from=2))
    executor = parts._POOL["executor"]
    second = list(map_in_order(square_with_pid, range(12), workers=2, parallel_from=2))
    assert [value for value, _ in first] == [value for value, _ in second] == [i * i for i in range(12)]
    assert parts._POOL["executor"] is executor
    assert {pid for _, pid in first[2:]} - {os.getpid()}  # the tail ran in worker processes
    assert list(map_in_order(square_with_pid, range(5), workers=1)) == [(i * i, os.getpid()) for i in range(5)]


def test_a_failing_task_is_raised_and_the_pool_still_serves_the_next_pass() -> None:
    with pytest.raises(ValueError, match="task 3 is bad"):
        list(map_in_order(fail_on_three, range(8), workers=2, parallel_from=1))
    assert list(map_in_order(fail_on_three, [0, 1, 2, 4, 5], workers=2, parallel_from=1)) == [0, 1, 2, 4, 5]


def test_a_killed_worker_fails_its_pass_and_the_next_pass_gets_a_new_pool() -> None:
    with pytest.raises(BrokenProcessPool):
        list(map_in_order(die_on_three, range(8), workers=2, parallel_from=1))
    assert not parts._POOL
    assert list(map_in_order(die_on_three, [0, 1, 2, 4, 5], workers=2, parallel_from=1)) == [0, 1, 2, 4, 5]
