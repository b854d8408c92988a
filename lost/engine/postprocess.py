"""Post-processing in worker processes, overlapped with the backbone.

:func:`map_in_workers` applies a picklable per-image function (a CRF, CutLER's post-processing,
a refinement) to a stream of items while the caller's generator keeps producing them: each item
is handed to a pool of worker processes as soon as it exists, so the backbone and the method run
in the main process while the workers refine the images before. Results come back in the order
of the items, each as soon as it and every earlier one are done; at most ``max_pending`` items
are in flight, so memory stays flat over a run.

Workers are started with ``spawn`` (a fork of a process whose OpenMP threads are running can
hang) and run with one intra-op thread each: one process per core is the parallelism.
"""

from __future__ import annotations

import multiprocessing
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from typing import TypeVar

import torch

Item = TypeVar("Item")
Output = TypeVar("Output")


def single_threaded_worker() -> None:
    """Initializer of every worker process: one intra-op thread."""
    torch.set_num_threads(1)


def map_in_workers(
    function: Callable[[Item], Output], items: Iterable[Item], processes: int, max_pending: int | None = None
) -> Iterator[Output]:
    """``function(item)`` for every item, in item order, in ``processes`` worker processes.

    function: a top-level (picklable) function; items: any iterable, consumed lazily (a
    generator that runs the backbone keeps running while the workers work); processes: 0 runs
    everything in this process, one item after the other; max_pending: items in flight at most
    (default ``4 * processes``). An exception raised by ``function`` is raised here, at its item.
    """
    if processes < 0:
        raise ValueError(f"processes must be 0 or more (got {processes})")
    if processes == 0:
        yield from map(function, items)
        return
    limit = max_pending or 4 * processes
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(processes, mp_context=context, initializer=single_threaded_worker) as pool:
        pending: deque[Future] = deque()
        for item in items:
            pending.append(pool.submit(function, item))
            while pending and (pending[0].done() or len(pending) >= limit):
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
