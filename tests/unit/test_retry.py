"""Backoff grows exponentially, is jittered, never collapses to zero, and is capped."""

from __future__ import annotations

from cloudops.handlers.base import RetryPolicy
from cloudops.worker.retry import backoff_delay


def test_backoff_doubles_with_equal_jitter() -> None:
    policy = RetryPolicy()
    for attempt, ceiling in [(1, 1.0), (2, 2.0), (3, 4.0)]:
        delays = {backoff_delay(policy, 1.0, attempt) for _ in range(200)}
        assert all(ceiling / 2 <= d <= ceiling for d in delays)
        assert len(delays) > 1, "no jitter"


def test_backoff_is_capped() -> None:
    policy = RetryPolicy(max_delay=10.0)
    assert all(backoff_delay(policy, 1.0, 30) <= 10.0 for _ in range(50))
