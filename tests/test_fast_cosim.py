"""The fast cosim engine on Verilator: harness stimulus, compact logs, bulk check."""

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT, SHARED_MNIST

from sbnn.cli import _default_model, _default_sample
from sbnn.cosim import equivalence_run
from sbnn.cosim.equivalence import parse_case, plan_config, random_config
from sbnn.cosim.equivalence_run import CASES_PER_JOB, EquivJob, plan_jobs, run_equivalence
from sbnn.cosim.fast import run_fast
from sbnn.cosim.runner import CosimJob
from sbnn.golden import hwpath
from sbnn.golden.qmodel import QuantizedModel


def _expected_transactions(model, pixels, budget, margin):
    sched = hwpath.schedule(model, budget)
    hw = hwpath.run_hw(model, pixels, budget, margin)
    return sum(len(sched.upto(int(e))) for e in hw.exit_pass)


@pytest.mark.cosim
def test_fast_engine_default_model_budgets_exit_and_random_controls(cosim_build_root,
                                                                   verilator):
    model = QuantizedModel.load(_default_model())
    k = model.config.num_supports
    job = CosimJob(model.config, _default_model(), _default_sample(), count=200,
                   budgets=(k, 0), exit_margin=30, random_seed=11)
    rep = run_fast(job, cosim_build_root, workers=2)
    assert rep.mismatches == 0, rep.first_mismatch
    assert rep.results_checked == 600 and rep.workers == 2
    with np.load(_default_sample()) as data:
        pixels = data["images"][:200].reshape(200, -1)
    budget_tx = sum(_expected_transactions(model, pixels, b, 30) for b in (k, 0))
    assert rep.transactions_checked > budget_tx  # plus the random-controls run
    full, base, rand = rep.runs
    assert (full.budget, base.budget, rand.run) == (k, 0, "random")
    assert full.agree == base.agree == rand.agree == 200
    assert 0 in full.exit_planes and k in full.exit_planes  # some exit early
    assert full.rtl_accuracy_pct >= 95.0


@pytest.mark.cosim
def test_fast_engine_catches_a_wrong_golden_threshold(cosim_build_root, tmp_path, verilator):
    model = QuantizedModel.load(_default_model())
    thresholds = [t.copy() for t in model.thresholds]
    thresholds[1][:, 4] -= 1  # one output logit off by one
    wrong = QuantizedModel(model.config, model.planes, tuple(thresholds), model.support_mask)
    job = CosimJob(model.config, _default_model(), _default_sample(), count=10, budgets=(1,),
                   golden_model=wrong.save(tmp_path / "w.npz"))
    rep = run_fast(job, cosim_build_root, workers=2)
    assert rep.mismatches == 10  # every image's logits differ
    assert rep.first_mismatch.startswith("image 0, result at cycle ")
    assert "field 'logits'" in rep.first_mismatch


@pytest.mark.cosim
def test_random_config_equivalence_subset_and_resume(tmp_path, verilator):
    """Two configs on a local Dask cluster of two workers (builds and cases as jobs)."""
    ledger = tmp_path / "ledger.jsonl"
    build = tmp_path.parent / "equiv_build"  # kept across tests in this session only
    res = run_equivalence(2, 150, 1000, build, ledger, workers=2, log=lambda m: None)
    assert res["ok"] and res["total_cases"] == 300
    lines = [json.loads(line) for line in ledger.read_text().splitlines()]
    assert [e["config_seed"] for e in lines] == [1000, 1001]
    assert all(e["cases"] == 150 and e["transactions"] > 0 for e in lines)
    again = run_equivalence(2, 150, 1000, build, ledger, workers=2, log=lambda m: None)
    assert again["ok"] and again["total_cases"] == 300
    assert len(ledger.read_text().splitlines()) == 2  # nothing rerun


def test_equivalence_jobs_builds_ahead_and_fixed_chunks(tmp_path):
    jobs = plan_jobs([5, 9], 2 * CASES_PER_JOB + 8, tmp_path)
    assert [(j.config_seed, j.kind, j.first, j.count) for j in jobs] == [
        (5, "build", 0, 0), (9, "build", 0, 0),  # the next build before this one's cases
        (5, "cases", 0, CASES_PER_JOB), (5, "cases", CASES_PER_JOB, CASES_PER_JOB),
        (5, "cases", 2 * CASES_PER_JOB, 8),
        (9, "cases", 0, CASES_PER_JOB), (9, "cases", CASES_PER_JOB, CASES_PER_JOB),
        (9, "cases", 2 * CASES_PER_JOB, 8)]
    assert all(Path(j.build_root).is_absolute() for j in jobs)
    assert plan_jobs([], 10, tmp_path) == []


def _fake_job(job: EquivJob) -> dict:
    """What run_job returns, without Verilator: config 12 mismatches in case 12:503."""
    if job.kind == "build":
        return {"build_s": 1.0, "build_cpu_s": 1.5}
    bad = job.config_seed == 12 and job.first <= 503 < job.first + job.count
    return {"cases": job.count, "mismatches": int(bad), "transactions": 3 * job.count,
            "sim_cycles": 10 * job.count, "wall_s": 0.5, "cpu_s": 0.25,
            "first_mismatch": "image 3, field 'logits'" if bad else None,
            "failing_case": "12:503" if bad else None}


def test_equivalence_ledger_one_line_per_config_stops_at_a_mismatch(tmp_path, monkeypatch):
    monkeypatch.setattr(equivalence_run, "run_job", _fake_job)
    ledger, cases = tmp_path / "ledger.jsonl", CASES_PER_JOB + 100
    res = run_equivalence(4, cases, 10, tmp_path / "b", ledger, workers=1,
                          log=lambda m: None)
    entries = [json.loads(line) for line in ledger.read_text().splitlines()]
    assert [e["config_seed"] for e in entries] == [10, 11, 12]  # stopped at 12, 13 not run
    assert entries[0] == {"config_seed": 10, "cases": cases, "mismatches": 0,
                          "transactions": 3 * cases, "sim_cycles": 10 * cases,
                          "wall_s": 1.0, "cpu_s": 0.5, "build_s": 1.0, "build_cpu_s": 1.5,
                          "first_mismatch": None, "failing_case": None}
    assert entries[2]["mismatches"] == 1 and entries[2]["failing_case"] == "12:503"
    assert not res["ok"] and res["total_cases"] == 2 * cases
    # resumed: 10 and 11 are skipped, 12 is run again (it failed)
    ran = []
    monkeypatch.setattr(equivalence_run, "run_job", lambda j: ran.append(j) or _fake_job(j))
    assert not run_equivalence(4, cases, 10, tmp_path / "b", ledger, workers=1,
                               log=lambda m: None)["ok"]
    assert {j.config_seed for j in ran} == {12, 13}  # 13: its build runs ahead
    assert {j.config_seed for j in ran if j.kind == "cases"} == {12}


@pytest.mark.slow
@pytest.mark.cosim
def test_waves_for_one_image(cosim_build_root, verilator):
    model = QuantizedModel.load(_default_model())
    job = CosimJob(model.config, _default_model(), _default_sample(), count=20, budgets=(1,))
    rep = run_fast(job, cosim_build_root, waves=True, only_image=7)
    assert rep.mismatches == 0 and rep.images == 1
    assert rep.per_image[0].image == 7
    dump = Path(rep.waves[0])  # FST where Verilator has lz4, else VCD
    assert dump.is_file() and dump.stat().st_size > 1000


def test_random_configs_are_valid_varied_and_reproducible():
    cfgs = [random_config(s) for s in range(40)]
    assert cfgs[3] == random_config(3)
    assert len({c.num_supports for c in cfgs}) >= 4  # K = 0..7 (the whole valid range)
    assert len({c.num_layers for c in cfgs}) == 3
    assert len({c.active_rows for c in cfgs}) >= 5
    assert any(c.total_col_blocks == 1 for c in cfgs)  # the one-entry-memory corner
    assert all(c.total_tiles * c.active_rows <= c.macro_rows for c in cfgs)


def test_a_case_is_the_same_whether_run_alone_or_in_its_batch(tmp_path):
    cfg, plan, images = plan_config(7, 0, 12, tmp_path / "all")
    _, alone, images1 = plan_config(7, 9, 1, tmp_path / "one")
    with np.load(images) as a, np.load(images1) as b:
        assert np.array_equal(a["images"][9], b["images"][0])
    whole, single = plan.blocks[9], alone.blocks[0]
    assert (whole.budget, whole.margin, whole.model_seed) == \
        (single.budget, single.margin, single.model_seed)
    assert single.prog[-2:] == whole.prog[-2:]  # same exit margin and budget ops
    assert len(single.prog) > len(whole.prog)  # run alone, it programs its model first


def test_parse_case():
    assert parse_case("12:345") == (12, 345)
    for bad in ("12", "a:1", "1:b", ""):
        with pytest.raises(ValueError, match="CONFIG_SEED:INDEX"):
            parse_case(bad)


BEST = Path(__file__).resolve().parents[1] / "models" / "case_i_s0.npz"


@pytest.mark.slow
@pytest.mark.cosim
@pytest.mark.skipif(not SHARED_MNIST.is_dir(), reason="needs the MNIST folder")
def test_best_case_i_model_1000_mnist_images(tmp_path, verilator):
    """What `nox -s cosim_best` runs (issue 3): 1,000 test images of the results table's
    case-(i) model (seed 0) through the generated RTL, 100 % agreement with the golden
    trace."""
    from sbnn.cli import main

    report = tmp_path / "r.json"
    status = main(["sim", "--model", str(BEST), "--mnist-test", "1000", "--data-dir",
                   str(SHARED_MNIST), "--budgets", "1", "--build", str(ROOT / "out" /
                                                                     "cosim_best"),
                   "--report", str(report)])
    rep = json.loads(report.read_text())  # the JSON report sbnn sim writes
    assert status == 0 and rep["mismatches"] == 0, rep["first_mismatch"]
    assert rep["results_checked"] == 1000


def test_random_controls_one_draw_sequence_for_every_engine():
    from sbnn.cosim.controls import random_controls
    from sbnn.cosim.fast import plan_job
    from sbnn.rtl.interfaces import ProgOp

    model = QuantizedModel.load(_default_model())
    ctls = list(random_controls(model, 9, seed=5))
    assert [bool(c.prog) for c in ctls] == [True, False, False, False, True, False, False,
                                            False, True]
    for c in ctls:
        assert 0 <= c.budget <= model.config.num_supports and 0 <= c.margin < 40
        if c.prog:  # the new column-enable words, then the margin
            assert c.prog[-1] == (ProgOp.EXIT_MARGIN, 0, c.margin)
            assert {op for op, _, _ in c.prog[:-1]} == {ProgOp.COL_MASK}
    assert ctls[1].model is ctls[0].model and ctls[4].model is not ctls[0].model
    again = list(random_controls(model, 9, seed=5))
    assert [(c.budget, c.margin) for c in again] == [(c.budget, c.margin) for c in ctls]
    # The fast engine's plan replays exactly these controls.
    job = CosimJob(model.config, _default_model(), _default_sample(), count=9, budgets=(),
                   random_seed=5)
    plan = plan_job(job, model, 9)
    assert [(b.images[0], b.budget, b.margin) for b in plan.blocks] == \
        [(c.image, c.budget, c.margin) for c in ctls]
    mask0 = tuple(plan.masks[f"m4_{layer}"] for layer in range(model.config.num_layers))
    assert all(np.array_equal(a, b) for a, b in zip(mask0, ctls[4].model.support_mask))
