"""`studio capacity`: how many GPUs a peak arrival rate needs for a target P95 wait.

    studio capacity --arrivals 600 --gpu h200 --target-p95-wait 15 [--json]

A discrete-event simulation (services/cli/queue_sim.py) of the TRAIN and RENDER queues, fed with GPU
seconds per job from the benchmarks (services/cli/capacity_plan.py; every number is a flag).
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np
from tqdm import tqdm

from services.cli.arguments import finite_number
from services.cli.capacity_plan import (
    BASE_MODELS,
    GPU_FACTORS,
    H100_FACTOR,
    RENDER,
    TRAIN,
    JobCosts,
    Plan,
    PlanError,
    SimSettings,
    Workload,
    evaluate_fleet,
    plan_capacity,
)
from services.cli.failures import fail
from services.cli.queue_sim import DISTRIBUTIONS, percentiles_s

# Upper bounds (seconds) of the wait histogram's buckets; the last bucket is open.
WAIT_BUCKETS = ((0.0, "no wait"), (60.0, "< 1 min"), (300.0, "1-5 min"), (900.0, "5-15 min"),
                (1800.0, "15-30 min"), (3600.0, "30-60 min"), (7200.0, "1-2 h"), (float("inf"), "> 2 h"))
BAR_WIDTH = 40


def add_capacity_command(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("capacity", help="GPUs needed for a peak arrival rate and a target P95 wait")
    parser.add_argument("--arrivals", type=finite_number, required=True, metavar="PER_HOUR",
                        help="orders per hour at peak")
    parser.add_argument("--gpu", choices=sorted(GPU_FACTORS), default="h200")
    parser.add_argument("--target-p95-wait", type=finite_number, default=15.0, metavar="MIN",
                        help="P95 of an order's time queued for GPUs, train and render together (default 15)")
    parser.add_argument("--base", choices=sorted(BASE_MODELS), default="sdxl", help="base model family")
    costs = parser.add_argument_group("GPU seconds per job (defaults: H200 benchmarks for --base)")
    costs.add_argument("--train-steps", type=int)
    costs.add_argument("--train-step-seconds", type=finite_number)
    costs.add_argument("--train-overhead-seconds", type=finite_number, help="load, latent cache, validation per job")
    costs.add_argument("--images-per-order", type=int, help="portraits ordered x candidate factor")
    costs.add_argument("--images-per-second", type=finite_number)
    costs.add_argument("--render-overhead-seconds", type=finite_number, help="adapter load per job")
    costs.add_argument("--h100-factor", type=finite_number, default=H100_FACTOR,
                       help=f"H100 time / H200 time (default {H100_FACTOR})")
    model = parser.add_argument_group("simulation")
    model.add_argument("--returning-share", type=finite_number, default=0.0,
                       help="share of orders whose subject already has a LoRA (they skip training)")
    model.add_argument("--service-cv", type=finite_number, default=0.1, help="spread of GPU time per job (std/mean)")
    model.add_argument("--service-distribution", choices=DISTRIBUTIONS, default="lognormal")
    model.add_argument("--backlog", type=int, default=0, help="orders already queued when the peak starts")
    model.add_argument("--orders", type=int, default=20_000, help="orders simulated per run")
    model.add_argument("--seed", type=int, default=0)
    model.add_argument("--max-gpus", type=int, default=5_000)
    model.add_argument("--train-gpus", type=int, help="evaluate this fleet instead of searching (with --render-gpus)")
    model.add_argument("--render-gpus", type=int)
    parser.add_argument("--json", action="store_true")
    parser.set_defaults(func=cmd_capacity)


# JobCosts field -> the flag that overrides it
COST_FLAGS = {
    "train_steps": "train_steps", "train_step_s": "train_step_seconds", "train_overhead_s": "train_overhead_seconds",
    "images_per_order": "images_per_order", "images_per_s": "images_per_second",
    "render_overhead_s": "render_overhead_seconds",
}
OVERHEADS = frozenset({"train_overhead_s", "render_overhead_s"})


def _costs(args) -> JobCosts:
    values = {field: getattr(args, flag) for field, flag in COST_FLAGS.items() if getattr(args, flag) is not None}
    bad = [f"--{COST_FLAGS[f].replace('_', '-')}" for f, v in values.items() if (v < 0 if f in OVERHEADS else v <= 0)]
    if bad:
        fail(f"{', '.join(bad)} must be positive (overheads: zero or more)", args.json)
    if args.h100_factor <= 0:
        fail("--h100-factor must be positive", args.json)
    return JobCosts(**{**vars(BASE_MODELS[args.base]), **values}).on(args.gpu, args.h100_factor)


def _workload(args) -> Workload:
    if args.arrivals <= 0:
        fail("--arrivals must be positive", args.json)
    if not 0 <= args.returning_share <= 1:
        fail("--returning-share must be within 0..1", args.json)
    return Workload(args.arrivals, _costs(args), train_share=1.0 - args.returning_share,
                    cv=args.service_cv, distribution=args.service_distribution)


def cmd_capacity(args) -> None:
    workload = _workload(args)
    settings = SimSettings(orders=args.orders, seed=args.seed, backlog=args.backlog, max_gpus=args.max_gpus)
    target_s = args.target_p95_wait * 60.0
    try:
        plan = _plan_or_evaluate(args, workload, settings, target_s)
    except (PlanError, ValueError) as error:
        fail(str(error), args.json)
    report = build_report(args, workload, plan)
    report["mode"] = "evaluate" if args.train_gpus is not None else "plan"
    print(json.dumps(report, indent=2) if args.json else render_text(report))


def _plan_or_evaluate(args, workload: Workload, settings: SimSettings, target_s: float) -> Plan:
    if (args.train_gpus is None) != (args.render_gpus is None):
        fail("give both --train-gpus and --render-gpus, or neither", args.json)
    if args.train_gpus is not None:
        gpus = {TRAIN: args.train_gpus, RENDER: args.render_gpus}
        return evaluate_fleet(workload, {q: gpus[q] for q in workload.queues()}, target_s, settings)
    with tqdm(desc="searching GPU counts", unit=" sim", file=sys.stderr, disable=None, leave=False) as bar:
        def progress(gpus: dict[str, int], wait_s: float) -> None:
            bar.set_postfix_str(" ".join(f"{q}={n}" for q, n in gpus.items()) + f" p95={wait_s / 60:.1f}min")
            bar.update()

        return plan_capacity(workload, target_s, settings, progress)


def build_report(args, workload: Workload, plan: Plan) -> dict:
    result = plan.result
    costs = workload.costs
    queues = {}
    for name, stage in result.stages.items():
        queues[name] = {
            "gpus": stage.gpus, "utilisation": round(stage.utilisation, 4), "jobs": stage.jobs,
            "offered_load_gpus": round(workload.offered_load(name), 2),
            "gpu_seconds_per_job": round(costs.train_s if name == TRAIN else costs.render_s, 1),
            "wait_minutes": _minutes(percentiles_s(stage.waits_s)),
        }
    return {
        "arrivals_per_hour": args.arrivals, "gpu": args.gpu, "base": args.base,
        "target_p95_wait_minutes": args.target_p95_wait, "met_target": plan.met_target,
        "gpus_total": sum(plan.gpus.values()), "gpus": plan.gpus, "queues": queues,
        "saturation_arrivals_per_hour": round(_saturation_per_hour(workload, plan.gpus), 1),
        "order_wait_minutes": _minutes(percentiles_s(result.order_waits_s)),
        "turnaround_minutes": _minutes(percentiles_s(result.turnaround_s)),
        "wait_histogram": _histogram(result.order_waits_s),
        "costs": {"train_steps": costs.train_steps, "train_step_seconds": round(costs.train_step_s, 4),
                  "train_overhead_seconds": round(costs.train_overhead_s, 1),
                  "images_per_order": costs.images_per_order, "images_per_second": round(costs.images_per_s, 3),
                  "render_overhead_seconds": round(costs.render_overhead_s, 1),
                  "returning_share": args.returning_share, "service_cv": args.service_cv,
                  "service_distribution": args.service_distribution},
        "simulation": {"orders_counted": result.orders, "backlog": args.backlog, "seed": args.seed,
                       "runs": plan.simulations},
    }


def _saturation_per_hour(workload: Workload, gpus: dict[str, int]) -> float:
    """The arrival rate at which some queue's GPUs are busy all the time: past it, waits grow forever."""
    return min(workload.arrivals_per_hour * gpus[q] / workload.offered_load(q) for q in gpus)


def _minutes(stats: dict[str, float]) -> dict[str, float]:
    return {name: round(value / 60.0, 2) for name, value in stats.items()}


def _histogram(waits_s: np.ndarray) -> list[dict]:
    rows, lower = [], -1.0
    for upper, label in WAIT_BUCKETS:
        count = int(((waits_s > lower) & (waits_s <= upper)).sum()) if waits_s.size else 0
        rows.append({"bucket": label, "share": round(count / max(waits_s.size, 1), 4)})
        lower = upper
    return rows


def render_text(report: dict) -> str:
    costs = report["costs"]
    lines = [
        f"Capacity for {report['arrivals_per_hour']:g} orders/hour on {report['gpu'].upper()} "
        f"({report['base']}), target P95 wait {report['target_p95_wait_minutes']:g} min",
        f"GPU time per order: training {costs['train_steps']} steps x {costs['train_step_seconds']:g} s "
        f"+ {costs['train_overhead_seconds']:g} s; rendering {costs['images_per_order']} images at "
        f"{costs['images_per_second']:g}/s + {costs['render_overhead_seconds']:g} s",
        "",
        f"{'queue':8}{'GPUs':>6}{'load':>8}{'util':>7}   wait min: {'p50':>7}{'p90':>7}{'p95':>7}{'p99':>7}{'max':>8}",
    ]
    for name, queue in report["queues"].items():
        lines.append(f"{name:8}{queue['gpus']:>6}{queue['offered_load_gpus']:>8.1f}{queue['utilisation']:>7.0%}"
                     f"{'':13}{_row(queue['wait_minutes'])}")
    lines.append(f"{'order':8}{report['gpus_total']:>6}{'':15}{'':13}{_row(report['order_wait_minutes'])}")
    verdict = "meets" if report["met_target"] else "MISSES"
    heading = "Fleet evaluated" if report.get("mode") == "evaluate" else "GPUs needed"
    lines += ["", f"{heading}: {report['gpus_total']} ("
              + ", ".join(f"{n} {q.lower()}" for q, n in report["gpus"].items()) + f"); {verdict} the target",
              f"This fleet saturates at {report['saturation_arrivals_per_hour']:.0f} orders/hour "
              f"({report['saturation_arrivals_per_hour'] / report['arrivals_per_hour'] - 1:+.0%}); past that, "
              "queues grow without bound",
              f"Order to portraits (turnaround): p50 {report['turnaround_minutes']['p50']:.1f} min, "
              f"p95 {report['turnaround_minutes']['p95']:.1f} min", "", "Order wait distribution:"]
    for row in report["wait_histogram"]:
        lines.append(f"  {row['bucket']:>10} {row['share']:>7.1%} {'#' * round(row['share'] * BAR_WIDTH)}")
    sim = report["simulation"]
    lines.append(f"\n{sim['orders_counted']} orders counted (backlog {sim['backlog']}, seed {sim['seed']}), "
                 f"{sim['runs']} simulation run(s)")
    return "\n".join(lines)


def _row(minutes: dict[str, float]) -> str:
    return "".join(f"{minutes[p]:>7.1f}" for p in ("p50", "p90", "p95", "p99")) + f"{minutes['max']:>8.1f}"
