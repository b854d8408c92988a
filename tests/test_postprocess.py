"""Post-processing in worker processes while the caller keeps producing items."""

from __future__ import annotations

import math

import pytest

from lost.engine.postprocess import map_in_workers


@pytest.mark.parametrize("processes", [0, 1])
def test_results_come_back_in_item_order(processes):
    assert list(map_in_workers(math.factorial, iter(range(8)), processes, max_pending=3)) == [
        1, 1, 2, 6, 24, 120, 720, 5040,
    ]


def test_items_are_consumed_lazily_while_results_stream():
    produced = []

    def items():
        for value in range(4):
            produced.append(value)
            yield value

    stream = map_in_workers(math.factorial, items(), 0)
    assert next(stream) == 1 and produced == [0]


def test_an_error_in_a_worker_is_raised_at_its_item():
    stream = map_in_workers(math.sqrt, [4.0, -1.0], 1)
    assert next(stream) == 2.0
    with pytest.raises(ValueError, match="math domain error"):
        next(stream)
