"""Exponential backoff with jitter for failed attempts."""

from __future__ import annotations

import random

from cloudops.handlers.base import RetryPolicy


def backoff_delay(policy: RetryPolicy, base_delay: float, attempt: int) -> float:
    """Delay before attempt ``attempt + 1``: base * multiplier^(attempt-1), "equal jitter"
    (half fixed, half random) so that retries spread out but never collapse to zero."""
    ceiling = min(
        base_delay * policy.base_factor * policy.multiplier ** max(attempt - 1, 0),
        policy.max_delay,
    )
    return ceiling / 2 + random.uniform(0, ceiling / 2)
