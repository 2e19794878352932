"""A seeded discrete-event simulation of the studio's GPU work queues.

Orders arrive as a Poisson stream. An order without a LoRA for the base model first waits for a TRAIN
GPU, then (like every order) for a RENDER GPU; each queue is first come, first served with its own
pool of GPUs, one job per GPU (services/common/topology.py: TRAIN_QUEUE, RENDER_QUEUE). The event loop is
a heap of (time, sequence, event); nothing here depends on wall-clock time.
"""

from __future__ import annotations

import heapq
import math
import random
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

DISTRIBUTIONS = ("exponential", "lognormal", "fixed")
PERCENTILES = (50, 90, 95, 99)


@dataclass(frozen=True)
class ServiceTime:
    """GPU seconds one job holds its GPU: mean, and spread as a coefficient of variation."""

    mean_s: float
    cv: float = 0.1
    distribution: str = "lognormal"

    def __post_init__(self) -> None:
        if self.mean_s <= 0:
            raise ValueError(f"mean service time must be positive, got {self.mean_s}")
        if self.distribution not in DISTRIBUTIONS:
            raise ValueError(f"distribution must be one of {DISTRIBUTIONS}, got {self.distribution!r}")
        if self.cv < 0:
            raise ValueError(f"coefficient of variation must be >= 0, got {self.cv}")

    def sampler(self, rng: random.Random) -> Callable[[], float]:
        if self.distribution == "exponential":
            rate = 1.0 / self.mean_s
            return lambda: rng.expovariate(rate)
        if self.distribution == "fixed" or self.cv == 0:
            return lambda: self.mean_s
        sigma = math.sqrt(math.log(1.0 + self.cv**2))
        mu = math.log(self.mean_s) - sigma**2 / 2  # so that the mean is mean_s
        return lambda: rng.lognormvariate(mu, sigma)


@dataclass(frozen=True)
class Stage:
    name: str
    gpus: int
    service: ServiceTime
    share: float = 1.0  # fraction of orders that pass through this stage

    def __post_init__(self) -> None:
        if self.gpus < 1:
            raise ValueError(f"{self.name}: needs at least one GPU, got {self.gpus}")
        if not 0 <= self.share <= 1:
            raise ValueError(f"{self.name}: share must be within 0..1, got {self.share}")


@dataclass
class StageResult:
    name: str
    gpus: int
    waits_s: np.ndarray
    utilisation: float

    @property
    def jobs(self) -> int:
        return int(self.waits_s.size)


@dataclass
class SimResult:
    stages: dict[str, StageResult]
    order_waits_s: np.ndarray  # time an order spent queued, all stages together
    turnaround_s: np.ndarray  # arrival to last GPU done
    orders: int


@dataclass
class _StageState:
    stage: Stage
    sample: Callable[[], float]
    free: int
    queue: deque = field(default_factory=deque)
    waits: dict[int, float] = field(default_factory=dict)
    busy_s: float = 0.0


class _Simulation:
    def __init__(self, stages: Sequence[Stage], rng: random.Random) -> None:
        self.rng = rng
        self.states = [_StageState(s, s.service.sampler(rng), s.gpus) for s in stages]
        self.events: list[tuple[float, int, int, int]] = []  # (time, seq, stage index, order)
        self.sequence = 0
        self.arrived_at: dict[int, float] = {}
        self.routes: dict[int, list[int]] = {}
        self.finished_at: dict[int, float] = {}
        self.busy_until = math.inf  # utilisation is measured while orders still arrive

    def arrive(self, order: int, now: float) -> None:
        self.arrived_at[order] = now
        self.routes[order] = [i for i, s in enumerate(self.states) if self.rng.random() < s.stage.share]
        self._next_stage(order, now)

    def _next_stage(self, order: int, now: float) -> None:
        route = self.routes[order]
        if not route:
            self.finished_at[order] = now
            return
        state = self.states[route[0]]
        if state.free:
            state.free -= 1
            self._start(route[0], order, now, now)
        else:
            state.queue.append((order, now))

    def _start(self, index: int, order: int, queued_at: float, now: float) -> None:
        state = self.states[index]
        duration = state.sample()
        state.waits[order] = now - queued_at
        state.busy_s += max(0.0, min(now + duration, self.busy_until) - min(now, self.busy_until))
        self.sequence += 1
        heapq.heappush(self.events, (now + duration, self.sequence, index, order))

    def depart(self, index: int, order: int, now: float) -> None:
        state = self.states[index]
        if state.queue:
            waiting, queued_at = state.queue.popleft()
            self._start(index, waiting, queued_at, now)
        else:
            state.free += 1
        self.routes[order].pop(0)
        self._next_stage(order, now)


def simulate(
    arrivals_per_hour: float,
    stages: Sequence[Stage],
    *,
    orders: int = 20_000,
    seed: int = 0,
    backlog: int = 0,
    warmup_fraction: float = 0.1,
) -> SimResult:
    """Run `orders` Poisson arrivals (after `backlog` orders already queued at time zero) to completion.

    Without a backlog the first `warmup_fraction` of orders only fill the system and are not counted;
    with one, every order counts (the backlog is the transient being measured).
    """
    if arrivals_per_hour <= 0:
        raise ValueError(f"arrivals per hour must be positive, got {arrivals_per_hour}")
    if orders < 1 or backlog < 0:
        raise ValueError("orders must be >= 1 and backlog >= 0")
    rng = random.Random(seed)
    sim = _Simulation(stages, rng)
    arrival_times = _arrival_times(rng, arrivals_per_hour / 3600.0, orders, backlog)
    sim.busy_until = arrival_times[-1]
    next_arrival = 0
    while next_arrival < len(arrival_times) or sim.events:
        if next_arrival < len(arrival_times) and (not sim.events or arrival_times[next_arrival] <= sim.events[0][0]):
            sim.arrive(next_arrival, arrival_times[next_arrival])
            next_arrival += 1
        else:
            now, _, index, order = heapq.heappop(sim.events)
            sim.depart(index, order, now)
    first_counted = 0 if backlog else int(orders * warmup_fraction)
    return _collect(sim, stages, first_counted, len(arrival_times), sim.busy_until)


def _arrival_times(rng: random.Random, rate_per_s: float, orders: int, backlog: int) -> list[float]:
    times, now = [0.0] * backlog, 0.0
    for _ in range(orders):
        now += rng.expovariate(rate_per_s)
        times.append(now)
    return times


def _collect(sim: _Simulation, stages: Sequence[Stage], first: int, total: int, span_s: float) -> SimResult:
    counted = range(first, total)
    results = {}
    for state in sim.states:
        waits = np.array([state.waits[o] for o in counted if o in state.waits], dtype=float)
        utilisation = state.busy_s / (state.stage.gpus * span_s) if span_s > 0 else 0.0
        results[state.stage.name] = StageResult(state.stage.name, state.stage.gpus, waits, utilisation)
    order_waits = np.array([sum(s.waits.get(o, 0.0) for s in sim.states) for o in counted], dtype=float)
    turnaround = np.array([sim.finished_at[o] - sim.arrived_at[o] for o in counted], dtype=float)
    return SimResult(results, order_waits, turnaround, len(counted))


def percentiles_s(values: np.ndarray) -> dict[str, float]:
    if values.size == 0:
        return {f"p{p}": 0.0 for p in PERCENTILES} | {"mean": 0.0, "max": 0.0}
    points = np.percentile(values, PERCENTILES)
    return {f"p{p}": float(v) for p, v in zip(PERCENTILES, points, strict=True)} | {
        "mean": float(values.mean()), "max": float(values.max()),
    }


def erlang_c(servers: int, offered_load: float) -> float:
    """P(an arrival waits) in M/M/c with `offered_load` = λ/μ erlangs (needs offered_load < servers)."""
    if offered_load >= servers:
        return 1.0
    term, total = 1.0, 1.0  # running a^k/k! and its sum for k < servers
    for k in range(1, servers):
        term *= offered_load / k
        total += term
    last = term * offered_load / servers * servers / (servers - offered_load)
    return last / (total + last)


def mmc_mean_wait_s(servers: int, arrivals_per_s: float, mean_service_s: float) -> float:
    """Closed-form mean queueing delay of M/M/c."""
    load = arrivals_per_s * mean_service_s
    return erlang_c(servers, load) * mean_service_s / (servers - load)


def mmc_wait_quantile_s(servers: int, arrivals_per_s: float, mean_service_s: float, quantile: float) -> float:
    """Closed-form queueing delay quantile of M/M/c: P(W > t) = C · exp(-(cμ - λ) t)."""
    load = arrivals_per_s * mean_service_s
    waiting = erlang_c(servers, load)
    if waiting <= 1 - quantile:
        return 0.0
    decay = servers / mean_service_s - arrivals_per_s
    return math.log(waiting / (1 - quantile)) / decay
