"""The capacity planner: its simulator against M/M/c closed forms, its search, and `studio capacity`."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from services.cli.capacity_plan import (
    BASE_MODELS,
    RENDER,
    TRAIN,
    SimSettings,
    Workload,
    evaluate_fleet,
    p95,
    plan_capacity,
    stable_minimum,
)
from services.cli.queue_sim import (
    ServiceTime,
    Stage,
    erlang_c,
    mmc_mean_wait_s,
    mmc_wait_quantile_s,
    simulate,
)

MMC_CASES = [  # (servers, arrivals per hour, mean service seconds): Poisson in, exponential service
    (7, 10.0, 1800.0),  # 71% busy
    (2, 60.0, 90.0),  # 75% busy
    (10, 60.0, 480.0),  # 80% busy
]


@pytest.mark.parametrize(("servers", "per_hour", "mean_s"), MMC_CASES)
def test_simulator_matches_erlang_c_on_mmc(servers, per_hour, mean_s):
    stage = Stage("Q", servers, ServiceTime(mean_s, distribution="exponential"))
    result = simulate(per_hour, [stage], orders=100_000, seed=7).stages["Q"]
    per_s = per_hour / 3600.0
    assert result.waits_s.mean() == pytest.approx(mmc_mean_wait_s(servers, per_s, mean_s), rel=0.10)
    assert p95(result.waits_s) == pytest.approx(mmc_wait_quantile_s(servers, per_s, mean_s, 0.95), rel=0.10)
    assert (result.waits_s > 0).mean() == pytest.approx(erlang_c(servers, per_s * mean_s), rel=0.10)
    assert result.utilisation == pytest.approx(per_s * mean_s / servers, rel=0.03)


def test_erlang_c_closed_forms():
    assert erlang_c(1, 0.6) == pytest.approx(0.6)  # M/M/1: an arrival waits with probability rho
    assert erlang_c(2, 1.0) == pytest.approx(1 / 3)
    assert erlang_c(3, 3.0) == 1.0  # overloaded
    assert mmc_mean_wait_s(1, 0.5, 1.0) == pytest.approx(1.0)  # rho / (mu - lambda)
    assert mmc_wait_quantile_s(4, 0.1, 1.0, 0.95) == 0.0  # almost nobody waits


def test_simulation_is_deterministic_for_a_seed():
    stages = [Stage("A", 3, ServiceTime(100.0)), Stage("B", 1, ServiceTime(20.0))]
    first, again = (simulate(90.0, stages, orders=3_000, seed=5) for _ in range(2))
    other = simulate(90.0, stages, orders=3_000, seed=6)
    assert np.array_equal(first.order_waits_s, again.order_waits_s)
    assert not np.array_equal(first.order_waits_s, other.order_waits_s)


def test_tandem_orders_skip_training_by_share_and_wait_for_both_queues():
    stages = [Stage(TRAIN, 4, ServiceTime(300.0), share=0.5), Stage(RENDER, 1, ServiceTime(30.0))]
    result = simulate(40.0, stages, orders=10_000, seed=1)
    assert result.stages[TRAIN].jobs == pytest.approx(result.orders * 0.5, rel=0.05)
    assert result.stages[RENDER].jobs == result.orders
    per_order = np.sort(result.order_waits_s)
    assert per_order.sum() == pytest.approx(result.stages[TRAIN].waits_s.sum() + result.stages[RENDER].waits_s.sum())
    assert (result.turnaround_s >= result.order_waits_s + 30.0 * 0.5).all()


def test_a_backlog_is_counted_and_waits():
    stage = Stage("Q", 10, ServiceTime(600.0, distribution="fixed"))
    result = simulate(1.0, [stage], orders=10, seed=0, backlog=100)
    assert result.orders == 110
    # 100 jobs at time zero on 10 GPUs of 10 minutes each: the last of them starts after 90 minutes.
    assert result.stages["Q"].waits_s.max() == pytest.approx(90 * 60.0)


@pytest.mark.parametrize("bad", [
    lambda: ServiceTime(0.0), lambda: ServiceTime(10.0, distribution="pareto"), lambda: ServiceTime(10.0, cv=-1),
    lambda: Stage("Q", 0, ServiceTime(1.0)), lambda: Stage("Q", 1, ServiceTime(1.0), share=1.5),
    lambda: simulate(0.0, [Stage("Q", 1, ServiceTime(1.0))]),
])
def test_invalid_model_inputs_are_refused(bad):
    with pytest.raises(ValueError):
        bad()


def test_plan_is_the_fewest_gpus_meeting_the_target():
    workload = Workload(300.0, BASE_MODELS["sdxl"])
    settings = SimSettings(orders=8_000, seed=3)
    target_s = 5 * 60.0
    plan = plan_capacity(workload, target_s, settings)
    assert p95(plan.result.order_waits_s) <= target_s
    floor = stable_minimum(workload)
    for queue, gpus in plan.gpus.items():
        assert gpus >= floor[queue]
        if gpus > floor[queue]:
            fewer = evaluate_fleet(workload, {**plan.gpus, queue: gpus - 1}, target_s, settings)
            assert not fewer.met_target, f"{queue} could do with {gpus - 1} GPUs"


def test_an_undersized_fleet_misses_the_target():
    workload = Workload(600.0, BASE_MODELS["sdxl"])
    plan = evaluate_fleet(workload, {TRAIN: 80, RENDER: 5}, 15 * 60.0, SimSettings(orders=4_000))
    assert not plan.met_target
    assert plan.result.stages[TRAIN].utilisation > 0.97


def _studio(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "services.cli.main", "capacity", *args],
                          capture_output=True, text=True, timeout=120)


def test_studio_capacity_json_and_h100_needs_more_gpus():
    reports = {}
    for gpu in ("h200", "h100"):
        done = _studio("--arrivals", "300", "--gpu", gpu, "--target-p95-wait", "10", "--orders", "6000", "--json")
        assert done.returncode == 0, done.stderr
        reports[gpu] = json.loads(done.stdout)
    h200 = reports["h200"]
    assert h200["met_target"] and h200["order_wait_minutes"]["p95"] <= 10
    assert h200["gpus_total"] == sum(h200["gpus"].values()) == sum(q["gpus"] for q in h200["queues"].values())
    assert h200["costs"]["train_step_seconds"] == BASE_MODELS["sdxl"].train_step_s
    assert sum(row["share"] for row in h200["wait_histogram"]) == pytest.approx(1.0, abs=1e-3)
    assert 0 < h200["queues"][TRAIN]["utilisation"] < 1
    saturation = min(300 * q["gpus"] / q["offered_load_gpus"] for q in h200["queues"].values())
    assert h200["saturation_arrivals_per_hour"] == pytest.approx(saturation, rel=0.01)
    assert h200["saturation_arrivals_per_hour"] > 300
    assert reports["h100"]["gpus_total"] > h200["gpus_total"]


def test_studio_capacity_text_report_and_overrides():
    done = _studio("--arrivals", "120", "--train-steps", "200", "--images-per-second", "4",
                   "--returning-share", "1", "--orders", "3000")
    assert done.returncode == 0, done.stderr
    assert "GPUs needed:" in done.stdout and "Order wait distribution:" in done.stdout
    assert "TRAIN" not in done.stdout.split("GPUs needed:")[1].splitlines()[0]  # everyone has a LoRA already
    assert "at 4/s" in done.stdout


@pytest.mark.parametrize(("args", "reason"), [
    (["--arrivals", "0"], "--arrivals must be positive"),
    (["--arrivals", "100", "--gpu", "a100"], "invalid choice"),
    (["--arrivals", "100", "--train-gpus", "3"], "both --train-gpus and --render-gpus"),
    (["--arrivals", "100", "--train-step-seconds", "-1"], "must be positive"),
    (["--arrivals", "100", "--returning-share", "2"], "within 0..1"),
    (["--arrivals", "100000", "--max-gpus", "50", "--orders", "500"], "more than --max-gpus 50"),
])
def test_studio_capacity_refuses_bad_input(args, reason):
    done = _studio(*args)
    assert done.returncode != 0
    assert reason in done.stderr
