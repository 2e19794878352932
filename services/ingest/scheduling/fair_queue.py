"""The dispatch policy for one work queue: weighted fair queuing across tenants, express ahead of
standard, and an aging bound so standard work never starves.

Start-time fair queuing: each tenant carries the virtual finish tag of its last dispatched job. A
tenant's next job starts at max(virtual time, its finish tag) and finishes 1/weight later; the
tenant whose next job starts earliest goes next. A tenant with 500 jobs queued has pushed its tag
far ahead, so another tenant's single job starts at the current virtual time and goes out at the
next free slot. Tiers are strict: while any express job (or a standard job that has waited
`standard_max_wait_s`, which then counts as express) is held, only those compete.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass, field

from services.common.holding import HeldJob


@dataclass
class _TenantBacklog:
    express: list[HeldJob] = field(default_factory=list)  # each sorted by stream sequence (arrival)
    standard: list[HeldJob] = field(default_factory=list)

    def head(self, now: float, standard_max_wait_s: float) -> tuple[HeldJob | None, bool]:
        """The tenant's next job and whether it is urgent (express, or standard aged past the bound)."""
        express = self.express[0] if self.express else None
        standard = self.standard[0] if self.standard else None
        if standard is not None and now - standard.held_at >= standard_max_wait_s:
            return (standard if express is None or standard.seq < express.seq else express), True
        if express is not None:
            return express, True
        return standard, False

    def remove(self, job: HeldJob) -> None:
        (self.express if job.express else self.standard).remove(job)

    def __bool__(self) -> bool:
        return bool(self.express or self.standard)


@dataclass
class FairQueue:
    weights: Mapping[str, float] = field(default_factory=dict)
    standard_max_wait_s: float = 900.0
    default_weight: float = 1.0
    _backlogs: dict[str, _TenantBacklog] = field(default_factory=dict)
    _jobs: dict[str, HeldJob] = field(default_factory=dict)
    _finish: dict[str, float] = field(default_factory=dict)
    _virtual_time: float = 0.0

    def add(self, job: HeldJob) -> None:
        if job.subject in self._jobs:
            return
        self._jobs[job.subject] = job
        backlog = self._backlogs.setdefault(job.tenant_id, _TenantBacklog())
        tier = backlog.express if job.express else backlog.standard
        tier.append(job)
        if len(tier) > 1 and tier[-2].seq > job.seq:
            tier.sort(key=lambda held: held.seq)

    def discard(self, subject: str) -> HeldJob | None:
        job = self._jobs.pop(subject, None)
        if job is not None:
            self._backlogs[job.tenant_id].remove(job)
            if not self._backlogs[job.tenant_id]:
                del self._backlogs[job.tenant_id]
        return job

    def subjects(self) -> set[str]:
        return set(self._jobs)

    def __len__(self) -> int:
        return len(self._jobs)

    def pick(self, now: float) -> HeldJob | None:
        """The next job to dispatch, removed from the queue and charged to its tenant."""
        choice = self._choose(now)
        if choice is None:
            return None
        job, start = choice
        self._virtual_time = start
        self._finish[job.tenant_id] = start + 1.0 / self._weight(job.tenant_id)
        self.discard(job.subject)
        return job

    def dispatch_order(self, now: float, seconds_per_dispatch: float = 0.0) -> list[HeldJob]:
        """Every held job in the order `pick` would release them if nothing new arrived; the clock
        advances `seconds_per_dispatch` per job so aging is foreseen too. Leaves the queue as it is."""
        rehearsal = copy.copy(self)
        rehearsal._backlogs = {tenant: _TenantBacklog(list(b.express), list(b.standard))
                               for tenant, b in self._backlogs.items()}
        rehearsal._jobs, rehearsal._finish = dict(self._jobs), dict(self._finish)
        order = []
        while (job := rehearsal.pick(now + len(order) * seconds_per_dispatch)) is not None:
            order.append(job)
        return order

    def _choose(self, now: float) -> tuple[HeldJob, float] | None:
        """Among tenants' next jobs (only urgent ones while any is urgent): the earliest virtual start,
        then the earliest arrival. One pass: this runs once per job in every rehearsal."""
        best: tuple[float, int, HeldJob] | None = None
        best_urgent = False
        for tenant, backlog in self._backlogs.items():
            job, urgent = backlog.head(now, self.standard_max_wait_s)
            if best_urgent and not urgent:
                continue
            candidate = (max(self._virtual_time, self._finish.get(tenant, 0.0)), job.seq, job)
            if best is None or (urgent and not best_urgent) or candidate[:2] < best[:2]:
                best, best_urgent = candidate, urgent
        return None if best is None else (best[2], best[0])

    def _weight(self, tenant_id: str) -> float:
        return max(self.weights.get(tenant_id, self.default_weight), 1e-6)


def parse_weights(spec: str) -> dict[str, float]:
    """'tenant_a=3,tenant_b=0.5' → {'tenant_a': 3.0, 'tenant_b': 0.5}; ValueError names a bad entry."""
    weights = {}
    for entry in filter(None, (part.strip() for part in spec.split(","))):
        tenant, _, value = entry.partition("=")
        try:
            weight = float(value)
        except ValueError:
            weight = 0.0
        if not tenant or weight <= 0:
            raise ValueError(f"bad tenant weight {entry!r}: expected TENANT=POSITIVE_NUMBER")
        weights[tenant.strip()] = weight
    return weights
