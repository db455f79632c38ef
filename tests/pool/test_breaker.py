"""The circuit breaker on a stepped clock: three failures open it, it stays out for ``open_s``, then one
probe decides."""

from __future__ import annotations

from homellm.pool.breaker import Breaker


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_three_failures_open_it_for_thirty_seconds_then_one_probe_decides() -> None:
    clock = Clock()
    b = Breaker(3, 30.0, clock)
    assert b.state == "closed" and b.allows()
    assert not b.failure() and not b.failure()
    assert b.allows()
    assert b.failure()  # the third in a row
    assert b.state == "open" and not b.allows() and b.reopens_in() == 30.0
    clock.now += 29.9
    assert not b.allows()
    clock.now += 0.1
    assert b.state == "half-open" and b.allows()
    assert b.begin()  # the probe
    assert not b.allows()  # one probe at a time
    assert b.failure()  # it failed: out again for 30 s
    assert b.state == "open" and b.reopens_in() == 30.0
    clock.now += 30
    assert b.begin()
    b.success()
    assert b.state == "closed" and b.allows() and b.consecutive == 0


def test_a_success_resets_the_count() -> None:
    b = Breaker(3, 30.0, Clock())
    b.failure()
    b.failure()
    b.success()
    assert not b.failure() and not b.failure()
    assert b.state == "closed"


def test_a_probe_without_a_verdict_lets_the_next_request_probe() -> None:
    clock = Clock()
    b = Breaker(1, 5.0, clock)
    b.failure()
    clock.now += 5
    assert b.begin() and not b.allows()
    b.abandon()  # the client left before the backend answered
    assert b.allows() and b.begin()


def test_requests_while_closed_are_not_probes() -> None:
    b = Breaker(3, 30.0, Clock())
    assert not b.begin()
    assert b.allows()
