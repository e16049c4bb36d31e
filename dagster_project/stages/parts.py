"""Batches as bounded parts: how the stages that see every record (raw, clean, pii, dedup) stay flat in memory
and use every core.

Why: a client's daily drop can hold millions of records. Holding a stage's whole output as one DataFrame costs
about 3 KiB per record and one core, so 5M records would need ~14 GiB and minutes. Instead each of these stages
writes its output as numbered Parquet parts of at most :data:`PART_ROWS` rows
(``datasets/<dataset>/<stage>/batch=<id>/data-00000.parquet`` ...), and the next stage works part by part:
the process that talks to lakeFS reads part *i*, a worker process transforms it, and the output part *i* is
uploaded while later parts are still being worked on. At most a few parts are in flight, so memory does not
grow with the batch.

Results are identical whatever the number of workers: a part's output depends only on that part (and on
read-only inputs such as the record schema), results are taken back in part order, and part names come from
the input's part numbers. With one worker, or a batch of one part, the work runs in the calling process
(the common small drop pays no process start-up).

:class:`concurrent.futures.ProcessPoolExecutor` with the ``spawn`` start method does the fan-out: the calling
process may be a Dagster step with threads of its own, where ``fork`` is unsafe. The pool is started once per
process and kept for the next pass and the next stage (a Dagster run executes its steps in one process): spawning
workers and importing the stages in them costs about a second a pass, five passes a batch.
"""

from __future__ import annotations

import ctypes
import io
import multiprocessing
import os
import re
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from typing import Any, TypeVar

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

PART_ROWS = 25_000
"""Rows per part: large enough that per-part overhead (an upload, a commit entry) is negligible, small enough
that a few parts in flight per worker stay well under a GiB."""

_PART = re.compile(r"data-(\d{5,})\.parquet$")

Task = TypeVar("Task")
Result = TypeVar("Result")


def part_name(index: int) -> str:
    return f"data-{index:05d}.parquet"


def part_index(path: str) -> int | None:
    """The part number of a ``.../data-00007.parquet`` path (None for any other file)."""
    found = _PART.search(path)
    return int(found.group(1)) if found else None


def worker_count(configured: int = 0) -> int:
    """``configured`` workers, or one per core when it is 0."""
    return configured if configured > 0 else (os.cpu_count() or 1)


def frame_bytes(frame: pd.DataFrame) -> bytes:
    """A frame as Parquet bytes, written the way :meth:`~dagster_project.lakefs.port.ObjectFormats.put_frame`
    writes it (so a part and a whole-frame file read back identically)."""
    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=False)
    return buffer.getvalue()


def read_frame(data: bytes, columns: list[str] | None = None) -> pd.DataFrame:
    return pd.read_parquet(io.BytesIO(data), columns=columns)


def read_table(data: bytes, columns: list[str] | None = None) -> pa.Table:
    return pq.read_table(pa.BufferReader(data), columns=columns)


def parquet_rows(data: bytes) -> int:
    """Rows of a Parquet file, from its footer."""
    return pq.ParquetFile(pa.BufferReader(data)).metadata.num_rows


PARALLEL_FROM_ROWS = 20_000
"""Rows worked in this process before a pool is started: a small drop never pays for starting worker processes
(about a second each), a large one starts them after its first part."""


def map_in_order(work: Callable[[Task], Result], tasks: Iterable[Task], workers: int = 1,
                 in_flight: int | None = None, parallel_from: int | None = None) -> Iterator[Result]:
    """``work(task)`` for every task, yielded in task order, on up to ``workers`` processes.

    ``work`` must be a module-level function (it is sent to the workers by name); a task's ``rows`` says how much
    work it is. Tasks run in this process until ``parallel_from`` rows have been worked; then a pool takes the
    rest, the next task still running here while the pool starts. At most ``in_flight`` tasks (default: two per
    worker) are submitted ahead of the one being yielded, so a long batch never piles up in memory. When the pass
    ends, this process hands the memory it freed back (as each worker does after each task: :func:`_worked`).
    """
    try:
        yield from _map_in_order(work, tasks, workers, in_flight, parallel_from)
    finally:
        release_memory()


def _map_in_order(work: Callable[[Task], Result], tasks: Iterable[Task], workers: int,
                  in_flight: int | None, parallel_from: int | None) -> Iterator[Result]:
    iterator = iter(tasks)
    worked, parallel_from = 0, PARALLEL_FROM_ROWS if parallel_from is None else parallel_from
    if workers > 1:
        for task in iterator:
            yield work(task)
            worked += getattr(task, "rows", 1)
            if worked >= parallel_from:
                break
    here = next(iterator, None)
    if here is None:
        return
    ahead = next(iterator, None)
    if workers <= 1 or ahead is None:
        yield work(here)
        if ahead is not None:
            yield work(ahead)
            yield from map(work, iterator)
        return
    pool = _pool(workers)
    limit = in_flight or 2 * workers
    pending: deque[Future[Result]] = deque()
    try:
        pending.append(pool.submit(_worked, work, ahead))
        for task in iterator:
            pending.append(pool.submit(_worked, work, task))
            if len(pending) >= limit:
                break
        yield work(here)  # the pool's processes start meanwhile
        while pending:
            result = pending.popleft().result()
            for task in iterator:
                pending.append(pool.submit(_worked, work, task))
                if len(pending) >= limit:
                    break
            yield result
    except BrokenProcessPool:  # a worker died (killed, out of memory): the next pass starts a new pool
        _discard_pool()
        raise
    finally:  # a failed task (or a caller that stops early) does not wait for the rest
        for future in pending:
            future.cancel()


def _worked(work: Callable[[Task], Result], task: Task) -> Result:
    """``work(task)`` in a worker, which then hands the memory the task freed back to the system: a kept worker
    would otherwise stay at its largest part's peak while the calling process works alone (dedup's decisions)."""
    result = work(task)
    release_memory()
    return result


def release_memory() -> None:
    """Return freed heap to the operating system: Arrow's allocator keeps freed blocks for reuse, and glibc's
    malloc keeps the top of its arenas unless asked (``malloc_trim``, through ctypes: Python has no wrapper)."""
    pa.default_memory_pool().release_unused()
    if _LIBC is not None:
        _LIBC.malloc_trim(0)


def _libc() -> Any:
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.malloc_trim  # noqa: B018 -- glibc only (not musl, not macOS)
        return libc
    except (OSError, AttributeError):
        return None


_LIBC = _libc()
_POOL: dict[str, Any] = {}
"""This process's pool: ``executor``, ``workers`` and ``pid`` (a forked child starts its own)."""


def _pool(workers: int) -> ProcessPoolExecutor:
    if _POOL and _POOL["pid"] != os.getpid():
        _POOL.clear()  # the parent's pool, copied by a fork: not this process's to shut down
    if _POOL and _POOL["workers"] != workers:
        _discard_pool()
    if not _POOL:
        executor = ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"))
        _POOL.update(executor=executor, workers=workers, pid=os.getpid())
    return _POOL["executor"]


def _discard_pool() -> None:
    executor = _POOL.pop("executor", None)
    _POOL.clear()
    if executor is not None:
        executor.shutdown(wait=False, cancel_futures=True)


@dataclass(frozen=True)
class PartTask:
    """One input part on its way to a worker, with the read-only options of the stage."""

    index: int
    data: bytes
    options: Any = None

    @property
    def rows(self) -> int:
        return parquet_rows(self.data)


@dataclass
class PartOutput:
    """What a worker made of one part: the output part, and what the stage gathers across parts."""

    index: int
    data: bytes
    quarantine: pd.DataFrame | None = None
    side: pd.DataFrame | None = None
    """A stage's per-part table besides the records (e.g. PII findings), concatenated in part order."""
    counts: dict[str, int] = field(default_factory=dict)
    arrays: Any = None
    """A stage's per-part numeric arrays (e.g. near-duplicate band keys)."""
