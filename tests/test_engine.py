"""sbnn/engine.py: results in job order, each job seeded on its own (the same bytes for 1
and 2 workers), resume, stop, errors in job order, an existing scheduler, progress.

Dask clusters take seconds to start: one test starts a LocalCluster through
``workers=2``; the others share one small cluster through ``scheduler=``."""

import os
import socket
import time
from pathlib import Path

import numpy as np
import pytest

from sbnn import engine
from sbnn.engine import EngineError, map_jobs


def _square_and_draw(job: tuple[int, str]) -> dict:
    """A tiny job: its square, a draw from the global generator, and a file it writes."""
    value, folder = job
    time.sleep(0.05 * ((5 - value) % 3))  # later jobs can finish first on two workers
    draw = float(np.random.random())
    path = Path(folder) / f"job{value}.txt"
    path.write_text(f"{value} {value * value} {draw!r}\n")
    return {"value": value, "square": value * value, "draw": draw}


def _fail_on_three(value: int) -> int:
    if value == 3:
        time.sleep(0.2)  # the jobs after it are done first
        raise ValueError("job 3 is broken")
    return value


def _jobs(folder: Path, values) -> list[tuple[int, str]]:
    folder.mkdir(parents=True, exist_ok=True)
    return [(v, str(folder)) for v in values]


@pytest.fixture(scope="module")
def scheduler():
    """The address of a running two-worker cluster (not started by the engine)."""
    from distributed import LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address="127.0.0.1:0") as cluster:
        yield cluster.scheduler_address


def test_one_and_two_workers_give_the_same_results_and_bytes(tmp_path):
    jobs = _jobs(tmp_path, range(6))
    one = map_jobs(_square_and_draw, jobs, workers=1)
    files = {n: (tmp_path / f"job{n}.txt").read_bytes() for n in range(6)}
    for path in tmp_path.glob("job*.txt"):
        path.unlink()
    seen = []
    # port 8787 (Dask's usual dashboard) held: the local cluster must not need it
    with socket.socket() as held:
        try:
            held.bind(("127.0.0.1", 8787))
            held.listen()
        except OSError:
            pass  # taken by someone else already: the same situation
        two = map_jobs(_square_and_draw, jobs, workers=2, on_result=lambda i, r: seen.append(i))
    assert [r["square"] for r in one] == [0, 1, 4, 9, 16, 25]
    assert one == two
    assert seen == list(range(6))  # delivered in job order, whatever finished first
    assert len({r["draw"] for r in one}) == 6  # seeded per job, not one seed for all
    assert {n: (tmp_path / f"job{n}.txt").read_bytes() for n in range(6)} == files


def test_a_job_draws_the_same_wherever_it_stands_in_the_list(tmp_path):
    forward = map_jobs(_square_and_draw, _jobs(tmp_path, [0, 1, 2]), workers=1)
    backward = map_jobs(_square_and_draw, _jobs(tmp_path, [2, 1, 0, 5]), workers=1)
    assert [r["draw"] for r in forward] == [r["draw"] for r in backward[2::-1]]


def test_finished_jobs_are_not_rerun(tmp_path):
    jobs = _jobs(tmp_path, range(4))
    stored = {1: {"value": 1, "square": -1, "draw": 0.0}, 3: {"value": 3, "square": -3,
                                                               "draw": 0.0}}
    out = map_jobs(_square_and_draw, jobs, workers=1, finished=lambda j: stored.get(j[0]))
    assert [r["square"] for r in out] == [0, -1, 4, -3]
    assert sorted(p.name for p in tmp_path.glob("job*.txt")) == ["job0.txt", "job2.txt"]


def test_finished_jobs_are_not_sent_to_the_cluster(tmp_path, scheduler):
    jobs = _jobs(tmp_path, range(5))
    out = map_jobs(_square_and_draw, jobs, scheduler=scheduler,
                   finished=lambda j: {"value": j[0], "square": -1} if j[0] % 2 else None)
    assert [r["square"] for r in out] == [0, -1, 4, -1, 16]
    assert sorted(p.name for p in tmp_path.glob("job*.txt")) == \
        ["job0.txt", "job2.txt", "job4.txt"]


def test_one_worker_starts_no_cluster(tmp_path, monkeypatch):
    def no_cluster(*args):
        raise AssertionError("a cluster was started for workers=1")

    monkeypatch.setattr(engine, "_connect", no_cluster)
    assert [r["value"] for r in map_jobs(_square_and_draw, _jobs(tmp_path, range(3)),
                                         workers=1)] == [0, 1, 2]
    # one job left to run: no cluster either, whatever the worker count
    assert map_jobs(_square_and_draw, _jobs(tmp_path, [7]), workers=4)[0]["square"] == 49


@pytest.mark.parametrize("where", ["here", "cluster"])
def test_on_result_can_stop_the_run(tmp_path, where, scheduler):
    seen = []

    def stop_at_two(index, record):
        seen.append(index)
        return record["value"] == 2

    out = map_jobs(_square_and_draw, _jobs(tmp_path, range(8)), on_result=stop_at_two,
                   **({"workers": 1} if where == "here" else {"scheduler": scheduler}))
    assert [r["value"] for r in out] == [0, 1, 2]
    assert seen == [0, 1, 2]


@pytest.mark.parametrize("where", ["here", "cluster"])
def test_a_failing_job_raises_after_the_jobs_before_it(where, scheduler):
    seen = []
    with pytest.raises(ValueError, match="job 3 is broken"):
        map_jobs(_fail_on_three, list(range(6)), on_result=lambda i, r: seen.append(r),
                 **({"workers": 1} if where == "here" else {"scheduler": scheduler}))
    assert seen == [0, 1, 2]  # the same ledger for any number of workers


def test_existing_scheduler_runs_the_jobs_and_stays_up(tmp_path, scheduler):
    from distributed import Client

    out = map_jobs(_square_and_draw, _jobs(tmp_path, range(4)), scheduler=scheduler)
    assert [r["square"] for r in out] == [0, 1, 4, 9]
    assert out == map_jobs(_square_and_draw, _jobs(tmp_path, range(4)), workers=1)
    with Client(scheduler) as client:  # not closed by the engine
        assert client.submit(abs, -5).result() == 5


def test_unreachable_scheduler_is_an_engine_error(monkeypatch):
    monkeypatch.setattr(engine, "CONNECT_TIMEOUT", "1s")
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(EngineError) as info:
        map_jobs(abs, [1, 2], scheduler=f"tcp://127.0.0.1:{port}")
    message = str(info.value)
    assert f"127.0.0.1:{port}" in message and "--scheduler" in message
    assert "dask scheduler" in message and "\n" not in message


def test_malformed_scheduler_address_is_an_engine_error():
    with pytest.raises(EngineError, match="'nohost' \\(--scheduler\\): .*port"):
        map_jobs(abs, [1, 2], scheduler="nohost")


def test_progress_on_stderr_unless_silenced(capsys, monkeypatch, tmp_path):
    def noisy(job):
        from sbnn.progress import note

        note(f"inside job {job}")  # a job's own progress is silenced
        return job

    monkeypatch.setenv("SBNN_PROGRESS", "1")
    assert map_jobs(noisy, [1, 2], workers=1, desc="tiny jobs") == [1, 2]
    captured = capsys.readouterr()
    assert "sbnn: tiny jobs" in captured.err and "2/2" in captured.err
    assert "inside job" not in captured.err and captured.out == ""
    assert os.environ["SBNN_PROGRESS"] == "1"  # restored after the jobs
    monkeypatch.setenv("SBNN_PROGRESS", "0")
    map_jobs(_square_and_draw, _jobs(tmp_path, range(2)), workers=1, desc="tiny jobs")
    assert capsys.readouterr().err == ""


def test_bad_worker_count():
    with pytest.raises(ValueError, match="workers must be at least 1"):
        map_jobs(abs, [1], workers=0)


def test_job_seed_is_stable():
    assert engine.job_seed((3, "x")) == engine.job_seed((3, "x"))
    assert engine.job_seed((3, "x")) != engine.job_seed((4, "x"))
    assert 0 <= engine.job_seed(None) < 2**32
