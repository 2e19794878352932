"""GPU seconds per job, and the search for the fewest GPUs that meet a P95 wait target.

Default GPU seconds come from the benchmark references (one H200, eager PyTorch, bf16):
- training (issue 5, bench/train.py): SDXL 1024px batch 2 = 0.445 s/step; SD1.5 512px batch 4 = 0.162 s/step.
  A job is `steps` steps (the same 2,000 images seen for both families) plus a fixed cost for loading
  the base model, caching latents and validation renders;
- rendering (issue 6, bench/render.py): SDXL 1024px = 1.9 images/s; SD1.5 512px = 8.2 images/s, 25 steps.
  A job renders the order's portraits times the candidate factor (candidates are ranked by identity),
  plus a fixed cost for loading the subject's adapter.
An H100 has the H200's compute with 30% less memory bandwidth; its times are the H200's times
multiplied by H100_FACTOR. Every number is a flag of `studio capacity`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np

from services.cli.queue_sim import ServiceTime, SimResult, Stage, simulate

TRAIN, RENDER = "TRAIN", "RENDER"  # the JetStream work queues (services/common/topology.py)
H100_FACTOR = 1.15
GPU_FACTORS = {"h200": 1.0, "h100": H100_FACTOR}
GROWTH = 1.25  # while over target, the slowest queue gets this many times its GPUs (at least one more)


@dataclass(frozen=True)
class JobCosts:
    """What one order costs in GPU seconds on an H200."""

    train_steps: int
    train_step_s: float
    train_overhead_s: float
    images_per_order: int
    images_per_s: float
    render_overhead_s: float

    @property
    def train_s(self) -> float:
        return self.train_steps * self.train_step_s + self.train_overhead_s

    @property
    def render_s(self) -> float:
        return self.images_per_order / self.images_per_s + self.render_overhead_s

    def on(self, gpu: str, h100_factor: float = H100_FACTOR) -> JobCosts:
        factor = {"h200": 1.0, "h100": h100_factor}[gpu]
        return replace(self, train_step_s=self.train_step_s * factor, train_overhead_s=self.train_overhead_s * factor,
                       images_per_s=self.images_per_s / factor, render_overhead_s=self.render_overhead_s * factor)


# 20 portraits per order (e.g. 4 styles x 5) with 2 candidates rendered for each.
DEFAULT_IMAGES_PER_ORDER = 40
BASE_MODELS = {
    "sdxl": JobCosts(train_steps=1000, train_step_s=0.445, train_overhead_s=60.0,
                     images_per_order=DEFAULT_IMAGES_PER_ORDER, images_per_s=1.9, render_overhead_s=5.0),
    "sd15": JobCosts(train_steps=500, train_step_s=0.162, train_overhead_s=30.0,
                     images_per_order=DEFAULT_IMAGES_PER_ORDER, images_per_s=8.2, render_overhead_s=2.0),
}


@dataclass(frozen=True)
class Workload:
    arrivals_per_hour: float
    costs: JobCosts  # already on the chosen GPU
    train_share: float = 1.0  # orders whose subject has no LoRA yet
    cv: float = 0.1
    distribution: str = "lognormal"

    def offered_load(self, queue: str) -> float:
        """Busy GPUs needed on average (erlangs); a queue with fewer GPUs grows without bound."""
        per_s = self.arrivals_per_hour / 3600.0
        return per_s * self.train_share * self.costs.train_s if queue == TRAIN else per_s * self.costs.render_s

    def queues(self) -> list[str]:
        return [TRAIN, RENDER] if self.train_share > 0 else [RENDER]

    def stages(self, gpus: dict[str, int]) -> list[Stage]:
        seconds = {TRAIN: self.costs.train_s, RENDER: self.costs.render_s}
        shares = {TRAIN: self.train_share, RENDER: 1.0}
        return [Stage(q, gpus[q], ServiceTime(seconds[q], self.cv, self.distribution), shares[q])
                for q in self.queues()]


@dataclass(frozen=True)
class SimSettings:
    orders: int = 20_000
    seed: int = 0
    backlog: int = 0
    max_gpus: int = 5_000


@dataclass
class Plan:
    gpus: dict[str, int]
    result: SimResult
    simulations: int
    met_target: bool


class PlanError(RuntimeError):
    pass


Progress = Callable[[dict[str, int], float], None]


class _Search:
    def __init__(self, workload: Workload, target_s: float, settings: SimSettings, progress: Progress) -> None:
        self.workload, self.target_s, self.settings, self.progress = workload, target_s, settings, progress
        self.runs: dict[tuple, SimResult] = {}

    def run(self, gpus: dict[str, int]) -> SimResult:
        key = tuple(sorted(gpus.items()))
        if key not in self.runs:
            s = self.settings
            self.runs[key] = simulate(self.workload.arrivals_per_hour, self.workload.stages(gpus),
                                      orders=s.orders, seed=s.seed, backlog=s.backlog)
            self.progress(gpus, p95(self.runs[key].order_waits_s))
        return self.runs[key]

    def meets(self, gpus: dict[str, int]) -> bool:
        return p95(self.run(gpus).order_waits_s) <= self.target_s

    def grow(self, gpus: dict[str, int]) -> dict[str, int]:
        """Add GPUs to the queue with the longest P95 wait until the orders' P95 wait meets the target."""
        while not self.meets(gpus):
            stages = self.run(gpus).stages
            slowest = max(gpus, key=lambda q: p95(stages[q].waits_s))
            gpus = {**gpus, slowest: max(gpus[slowest] + 1, math.ceil(gpus[slowest] * GROWTH))}
            if sum(gpus.values()) > self.settings.max_gpus:
                raise PlanError(f"more than {self.settings.max_gpus} GPUs would be needed; "
                                "raise --max-gpus or relax --target-p95-wait")
        return gpus

    def trim(self, gpus: dict[str, int], floor: dict[str, int]) -> dict[str, int]:
        """For each queue in turn, the fewest GPUs (bisection) that still meet the target."""
        for queue in sorted(gpus, key=lambda q: -gpus[q]):
            low, high = floor[queue], gpus[queue]  # high meets the target
            while low < high:
                middle = (low + high) // 2
                if self.meets({**gpus, queue: middle}):
                    high = middle
                else:
                    low = middle + 1
            gpus = {**gpus, queue: high}
        return gpus


def p95(values: np.ndarray) -> float:
    return float(np.percentile(values, 95)) if len(values) else 0.0


def stable_minimum(workload: Workload) -> dict[str, int]:
    """Fewest GPUs per queue that keep it from growing forever (utilisation below 100%)."""
    return {q: math.floor(workload.offered_load(q)) + 1 for q in workload.queues()}


def plan_capacity(
    workload: Workload, target_p95_wait_s: float, settings: SimSettings = SimSettings(),
    progress: Progress = lambda gpus, wait_s: None,
) -> Plan:
    """The fewest GPUs per queue whose simulated P95 order wait (all queues) is within the target."""
    if target_p95_wait_s < 0:
        raise ValueError("the target P95 wait must be >= 0")
    search = _Search(workload, target_p95_wait_s, settings, progress)
    floor = stable_minimum(workload)
    if sum(floor.values()) > settings.max_gpus:
        raise PlanError(f"{sum(floor.values())} GPUs are busy on average at this arrival rate, more than "
                        f"--max-gpus {settings.max_gpus}")
    gpus = search.trim(search.grow(dict(floor)), floor)
    return Plan(gpus, search.run(gpus), len(search.runs), True)


def evaluate_fleet(workload: Workload, gpus: dict[str, int], target_p95_wait_s: float,
                   settings: SimSettings = SimSettings()) -> Plan:
    """Simulate a given fleet (no search)."""
    result = simulate(workload.arrivals_per_hour, workload.stages(gpus), orders=settings.orders,
                      seed=settings.seed, backlog=settings.backlog)
    return Plan(gpus, result, 1, p95(result.order_waits_s) <= target_p95_wait_s)
