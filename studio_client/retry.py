"""Retries with exponential backoff and full jitter, inside one overall deadline per call."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

import grpc

T = TypeVar("T")


@dataclass(frozen=True)
class RetryPolicy:
    """Which failures are retried and how long to wait between attempts. By default UNAVAILABLE (the
    server did not act, or acted idempotently: every mutating call the client makes carries an
    idempotency key or client photo ids) and ABORTED (a concurrent twin of the request gave up). Never
    RESOURCE_EXHAUSTED: a tenant quota, or the studio's event store full, which waiting seconds does not free."""

    max_attempts: int = 6
    initial_backoff_s: float = 0.2
    max_backoff_s: float = 5.0
    multiplier: float = 2.0
    retryable: frozenset[grpc.StatusCode] = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.ABORTED})

    def backoff(self, attempt: int) -> float:
        """Full jitter: uniform in [0, min(max, initial * multiplier^attempt)]."""
        return random.uniform(0, min(self.max_backoff_s, self.initial_backoff_s * self.multiplier**attempt))


NO_RETRIES = RetryPolicy(max_attempts=1)


async def with_retries(
    policy: RetryPolicy, timeout_s: float, attempt: Callable[[float], Awaitable[T]],
    on_retry: Callable[[grpc.aio.AioRpcError, int], None] = lambda error, attempt: None,
) -> T:
    """Run `attempt(remaining_seconds)` until it succeeds, fails for good, or the deadline passes."""
    deadline = time.monotonic() + timeout_s
    for number in range(policy.max_attempts):
        remaining = deadline - time.monotonic()
        try:
            return await attempt(max(remaining, 0.001))
        except grpc.aio.AioRpcError as error:
            pause = policy.backoff(number)
            last = number + 1 == policy.max_attempts
            if error.code() not in policy.retryable or last or time.monotonic() + pause >= deadline:
                raise
            on_retry(error, number + 1)
            await asyncio.sleep(pause)
    raise AssertionError("unreachable")


class CountedOnce:
    """A progress callback (`on_bytes`) for work a retry does again, such as a batch of photos sent anew: each
    attempt counts from zero, and only what goes beyond the furthest earlier attempt is passed on, so the count
    neither passes the work's size (a bar beyond 100%) nor goes back."""

    def __init__(self, on_count: Callable[[int], None]) -> None:
        self._on_count = on_count
        self._counted = 0  # passed on so far: the furthest any attempt got
        self._this_attempt = 0

    def attempt(self) -> Callable[[int], None]:
        """The callback for a new attempt, which starts from zero."""
        self._this_attempt = 0
        return self._count

    def _count(self, amount: int) -> None:
        self._this_attempt += amount
        if self._this_attempt > self._counted:
            self._on_count(self._this_attempt - self._counted)
            self._counted = self._this_attempt
