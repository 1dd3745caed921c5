"""
The one backoff of every retry the provider makes (HTTP requests, lock conflicts, table creation): exponential,
with full jitter, so that colliding callers spread out instead of retrying in step."""

from __future__ import annotations

import math
import random


def full_jitter(attempt: int, base: float, cap: float = math.inf) -> float:
    """
    Return the seconds to wait before retry ``attempt``: a random time in ``[0, min(cap, base * 2**attempt)]``.

    :param attempt: how many tries came before, as the caller counts them.
    :param base: seconds; the window doubles with each attempt from there.
    :param cap: the longest window.
    """
    return random.uniform(0, min(cap, base * 2**attempt))
