"""The execution engine of the long jobs (``sbnn variability``, ``sbnn equiv``): Dask.

:func:`map_jobs` runs a function over a list of picklable jobs and returns the results in
job order, whatever order they finish in and however many workers run them:

- ``workers=1`` (and no scheduler), or a single job left to run: the jobs run in this
  process, one after the other, with no cluster at all. Startup stays free for tiny jobs
  and tests.
- ``workers=N`` (default: the cores this process may use): a Dask ``LocalCluster`` of N
  worker processes with one thread each (and, Dask's default, one BLAS/OpenMP thread), on
  127.0.0.1 only (random free ports, the scheduler's dashboard port included), closed
  when the jobs are done.
- ``scheduler=ADDRESS``: an existing Dask cluster (``dask scheduler`` + ``dask worker``,
  or dask-jobqueue on Slurm/LSF, docs/cluster.md); its workers need sbnn installed and the
  job's files on a shared file system. The cluster stays up afterwards.

Every job is seeded on its own: before a job runs, Python's ``random`` and NumPy's legacy
global generator are seeded from the job itself (a hash of its ``repr``), so a job gives
the same result on any worker, in any order, next to any other jobs. (The jobs of this
project carry their own seeds as well; this only keeps a stray global draw deterministic.)

Resumable jobs stay resumable: ``finished(job)`` is asked first, in this process, and a
job it answers for is returned as is, never sent to a worker. ``on_result`` sees every
result in job order as soon as all jobs before it are done (a ledger written from it is
the same for any number of workers); it may return True to stop: the jobs not yet done
are cancelled and the results so far are returned. A job that raises does so here when
its turn comes, after every job before it was delivered; the jobs after it are cancelled.

Progress: one tqdm bar on stderr (:func:`sbnn.progress.bar`; ``SBNN_PROGRESS=0`` silences
it), counting jobs as they finish; the jobs' own progress messages are silenced.
"""

from __future__ import annotations

import hashlib
import logging
import os
import random
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from sbnn.progress import bar, note

__all__ = ["EngineError", "CONNECT_TIMEOUT", "default_workers", "job_seed", "map_jobs"]

#: The switch of sbnn/progress.py, set to 0 while a job runs.
PROGRESS_ENV = "SBNN_PROGRESS"
#: How long to wait for an existing scheduler (``scheduler=``) before giving up.
CONNECT_TIMEOUT = "10s"


class EngineError(RuntimeError):
    """The cluster could not be started or reached (the message says which and why)."""


def default_workers() -> int:
    """The cores this process may run on (its CPU affinity where the OS has one)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return os.cpu_count() or 1


def job_seed(job: Any) -> int:
    """The 32-bit seed of one job: a hash of its ``repr`` (stable across processes for
    the dataclasses and tuples jobs are made of), independent of its place in the list."""
    return int.from_bytes(hashlib.sha256(repr(job).encode()).digest()[:4], "little")


def _seeded_call(function: Callable[[Any], Any], job: Any) -> Any:
    """Run one job after seeding the global generators from the job (on any worker), with
    its own progress messages silenced (the engine's bar counts the jobs)."""
    seed = job_seed(job)
    random.seed(seed)
    np.random.seed(seed)
    saved = os.environ.get(PROGRESS_ENV)
    os.environ[PROGRESS_ENV] = "0"
    try:
        return function(job)
    finally:
        if saved is None:
            os.environ.pop(PROGRESS_ENV, None)
        else:
            os.environ[PROGRESS_ENV] = saved


class _InOrder:
    """Hands results to ``on_result`` in job order and raises a job's error when its turn
    comes (so what ``on_result`` saw before an error is the same for any number of
    workers); remembers whether ``on_result`` asked to stop."""

    def __init__(self, count: int, on_result: Callable[[int, Any], bool | None] | None):
        self.results: list = [None] * count
        self.errors: list[BaseException | None] = [None] * count
        self.ready = [False] * count
        self.on_result = on_result
        self.next_index = 0
        self.stopped = False

    def add(self, index: int, result: Any, error: BaseException | None = None) -> bool:
        """Record one job's result (or error); deliver every result now in order; True once
        told to stop. Raises the error of the next job in order, if it failed."""
        self.results[index] = result
        self.errors[index] = error
        self.ready[index] = True
        while not self.stopped and self.next_index < len(self.ready) \
                and self.ready[self.next_index]:
            i = self.next_index
            if self.errors[i] is not None:
                raise self.errors[i]
            self.next_index += 1
            if self.on_result is not None and self.on_result(i, self.results[i]):
                self.stopped = True
        return self.stopped

    def delivered(self) -> list:
        return self.results[:self.next_index]


def map_jobs(function: Callable[[Any], Any], jobs: Sequence[Any], *,
             workers: int | None = None, scheduler: str | None = None,
             finished: Callable[[Any], Any | None] | None = None,
             on_result: Callable[[int, Any], bool | None] | None = None,
             desc: str = "jobs") -> list:
    """``[function(job) for job in jobs]`` on the engine (module docstring); results in
    job order (fewer when ``on_result`` stopped the run). A job's exception is raised here
    once every job before it has been delivered; the jobs after it are cancelled.

    ``function`` and the jobs are pickled for the workers: ``function`` must be importable
    there (a module-level function of an installed package)."""
    if workers is not None and workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    order = _InOrder(len(jobs), on_result)
    todo = []
    for index, job in enumerate(jobs):
        done = finished(job) if finished is not None else None
        if done is None:
            todo.append(index)
        elif order.add(index, done):
            return order.delivered()
    if not todo:
        return order.delivered()
    size = workers if workers is not None else default_workers()
    here = scheduler is None and (size == 1 or len(todo) <= 1)
    # connected before the bar starts: an unreachable cluster is one line, no bar
    client, cluster = (None, None) if here else _connect(scheduler, min(size, len(todo)))
    try:
        with bar(len(jobs), desc, unit="job") as progress:
            progress.update(len(jobs) - len(todo))
            if here:
                _run_here(function, jobs, todo, order, progress)
            else:
                _run_on_cluster(client, function, jobs, todo, order, progress)
    finally:
        if client is not None:
            client.close()
        if cluster is not None:
            cluster.close()
    return order.delivered()


def _run_here(function, jobs, todo, order: _InOrder, progress) -> None:
    for index in todo:
        stop = order.add(index, _seeded_call(function, jobs[index]))
        progress.update(1)
        if stop:
            return


def _connect(scheduler: str | None, workers: int):
    """(client, local cluster or None): a new local cluster, or the one at ``scheduler``."""
    from distributed import Client, LocalCluster

    if scheduler is not None:
        try:
            client = Client(scheduler, timeout=CONNECT_TIMEOUT)
        except Exception as exc:  # OSError (timeout), ValueError (address), others
            reason = " ".join(str(exc).split()) or type(exc).__name__
            raise EngineError(
                f"cannot reach the Dask scheduler at {scheduler!r} (--scheduler): {reason}; "
                f"start one with `dask scheduler` and `dask worker ADDRESS` "
                f"(docs/cluster.md), or leave --scheduler out to run on this machine") \
                from None
        if not client.nthreads():
            note(f"the Dask scheduler at {scheduler} has no workers yet; the jobs wait for "
                 f"them")
        return client, None
    try:
        cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                               host="127.0.0.1", scheduler_port=0,
                               dashboard_address="127.0.0.1:0",  # not 8787: it may be taken
                               silence_logs=logging.ERROR)
    except Exception as exc:
        reason = " ".join(str(exc).split()) or type(exc).__name__
        raise EngineError(f"cannot start a local Dask cluster of {workers} workers: "
                          f"{reason}; --workers 1 runs the jobs in this process") from None
    return Client(cluster), cluster


def _run_on_cluster(client, function, jobs, todo, order: _InOrder, progress) -> None:
    from distributed import as_completed

    futures = client.map(_seeded_call, [function] * len(todo), [jobs[i] for i in todo],
                         pure=False)
    index_of = {future.key: i for future, i in zip(futures, todo)}
    failed_at = len(jobs)  # the first job in order known to have failed
    try:
        for future in as_completed(futures):
            index = index_of[future.key]
            if index > failed_at or future.cancelled():
                continue
            try:
                result, error = future.result(), None
            except Exception as exc:  # raised by order.add once its turn comes
                result, error = None, exc
                failed_at = index
                client.cancel([f for f, i in zip(futures, todo) if i > index])
            progress.update(1)
            if order.add(index, result, error):
                break
    finally:
        client.cancel(futures)
