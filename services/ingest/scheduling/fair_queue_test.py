"""The dispatch policy on its own: fairness across tenants, weights, tiers, aging."""

from __future__ import annotations

import itertools

import pytest

from services.common import topology
from services.common.holding import HeldJob
from services.ingest.scheduling.fair_queue import FairQueue, parse_weights

_seq = itertools.count(1)


def job(tenant: str, held_at: float = 0.0, express: bool = False) -> HeldJob:
    seq = next(_seq)
    tier = "express" if express else "standard"
    return HeldJob(f"studio.pending.TRAIN.{tier}.{tenant}.subj.order{seq}", seq, held_at, topology.TRAIN_QUEUE,
                   express, tenant, "subj", f"order{seq}")


def tenants_of(queue: FairQueue, count: int, now: float = 0.0) -> str:
    return "".join(queue.pick(now).tenant_id for _ in range(count))


def test_a_single_order_goes_out_at_the_next_slot_behind_a_flood() -> None:
    queue = FairQueue()
    for _ in range(500):
        queue.add(job("a"))
    assert tenants_of(queue, 3) == "aaa"
    queue.add(job("b"))
    assert queue.pick(0).tenant_id == "b"
    assert len(queue) == 497


def test_two_backlogged_tenants_alternate_and_weights_share_slots() -> None:
    queue = FairQueue()
    for _ in range(4):
        queue.add(job("a"))
        queue.add(job("b"))
    assert tenants_of(queue, 8) == "abababab"

    weighted = FairQueue(weights={"a": 3})
    for _ in range(9):
        weighted.add(job("a"))
        weighted.add(job("b"))
    picked = tenants_of(weighted, 8)
    assert picked.count("a") == 6 and picked.count("b") == 2


def test_express_goes_first_but_an_aged_standard_job_does_not_starve() -> None:
    queue = FairQueue(standard_max_wait_s=60)
    old_standard = job("a", held_at=0)
    queue.add(old_standard)
    for _ in range(5):
        queue.add(job("b", held_at=10, express=True))
    assert queue.pick(now=20).tenant_id == "b"  # express ahead of a standard job that waited 20 s
    assert queue.pick(now=61) is old_standard  # waited past the bound: competes as express, and is older
    assert tenants_of(queue, 4, now=61) == "bbbb"


def test_dispatch_order_rehearses_without_changing_the_queue() -> None:
    queue = FairQueue(standard_max_wait_s=30)
    standard = job("a", held_at=0)
    queue.add(standard)
    express = [job("b", held_at=0, express=True) for _ in range(4)]
    for held in express:
        queue.add(held)
    # One job every 10 s: the standard job reaches its bound at the fourth dispatch and goes then.
    assert queue.dispatch_order(now=0, seconds_per_dispatch=10) == express[:3] + [standard] + express[3:]
    assert len(queue) == 5 and queue.pick(now=0) is express[0]


def test_discard_and_duplicates() -> None:
    queue = FairQueue()
    held = job("a")
    queue.add(held)
    queue.add(held)
    assert len(queue) == 1 and queue.subjects() == {held.subject}
    assert queue.discard(held.subject) is held and queue.discard(held.subject) is None
    assert queue.pick(0) is None and len(queue) == 0


def test_parse_weights() -> None:
    assert parse_weights(" a=3, b=0.5 ,") == {"a": 3.0, "b": 0.5}
    assert parse_weights("") == {}
    for bad in ("a", "a=0", "a=x", "=2"):
        with pytest.raises(ValueError, match="TENANT=POSITIVE_NUMBER"):
            parse_weights(bad)
