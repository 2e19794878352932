"""The client's progress count across retries (studio_client/retry.py CountedOnce): work an attempt does again is
counted once, so an upload bar stops at 100% (tests/test_idempotency.py cuts a real upload to show it end to end)."""

from __future__ import annotations

from studio_client.retry import CountedOnce


def test_a_retried_attempt_counts_only_beyond_the_furthest_earlier_one() -> None:
    passed_on: list[int] = []
    counted = CountedOnce(passed_on.append)
    first = counted.attempt()
    first(100)
    first(50)  # cut here: 150 of 300 sent
    again = counted.attempt()
    for _ in range(3):
        again(100)
    assert passed_on == [100, 50, 50, 100] and sum(passed_on) == 300


def test_a_shorter_retry_passes_nothing_on_and_never_goes_back() -> None:
    passed_on: list[int] = []
    counted = CountedOnce(passed_on.append)
    counted.attempt()(200)
    counted.attempt()(120)
    assert passed_on == [200]
