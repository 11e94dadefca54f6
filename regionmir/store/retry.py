"""Retry policy for Qdrant server calls: exponential backoff on transient errors, none on user errors."""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import httpx
from qdrant_client.http.exceptions import ResponseHandlingException, UnexpectedResponse

log = logging.getLogger("regionmir")
T = TypeVar("T")

TRANSIENT_STATUS = frozenset({429, 500, 502, 503, 504})


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how long to retry a transient failure."""

    attempts: int = 5  # tries in all, the first one included
    base_delay: float = 0.5  # seconds before the first retry; doubles each time
    max_delay: float = 10.0  # cap on one wait
    jitter: float = 0.1  # +- fraction of random spread, so workers do not retry in step

    def delay(self, retry: int, retry_after: float | None = None) -> float:
        """Seconds to wait before retry number ``retry`` (0 = first retry).

        A server's ``Retry-After`` (for 429/503) is honoured when it asks for longer.
        """
        d = min(self.max_delay, self.base_delay * 2**retry)
        d *= 1.0 + self.jitter * (2.0 * random.random() - 1.0)
        return max(d, retry_after or 0.0)


def status_of(exc: BaseException) -> int | None:
    """HTTP status of a qdrant-client error, ``None`` for errors without one."""
    return exc.status_code if isinstance(exc, UnexpectedResponse) else None


def is_transient(exc: BaseException) -> bool:
    """True for failures worth retrying: no connection, timeouts, HTTP 5xx and 429.

    HTTP 4xx (bad request, wrong API key, missing collection, conflict) are the caller's
    mistake and are never retried.
    """
    status = status_of(exc)
    if status is not None:
        return status in TRANSIENT_STATUS or status >= 500
    if isinstance(exc, ResponseHandlingException):
        exc = exc.source
    return isinstance(exc, (httpx.TransportError, ConnectionError, TimeoutError))


def _retry_after(exc: BaseException) -> float | None:
    if isinstance(exc, UnexpectedResponse) and exc.headers is not None:
        try:
            return float(exc.headers.get("retry-after", ""))
        except ValueError:
            return None
    return None


def call_with_retries(
    fn: Callable[[], T],
    policy: RetryPolicy,
    what: str = "Qdrant request",
    sleep: Callable[[float], None] | None = None,
) -> T:
    """Call ``fn``, retrying transient errors per ``policy``; other errors propagate at once.

    Raises:
        The last exception, when it is not transient or the attempts are used up.
    """
    for attempt in range(policy.attempts):
        try:
            return fn()
        except Exception as exc:
            if not is_transient(exc) or attempt == policy.attempts - 1:
                raise
            wait = policy.delay(attempt, _retry_after(exc))
            log.warning("%s failed (%s); retry %d/%d in %.1f s", what, _short(exc), attempt + 1,
                        policy.attempts - 1, wait)
            (sleep or time.sleep)(wait)
    raise AssertionError("unreachable")  # the loop returns or raises


def _short(exc: BaseException) -> str:
    status = status_of(exc)
    if status is not None:
        return f"HTTP {status}"
    src = exc.source if isinstance(exc, ResponseHandlingException) else exc
    return f"{type(src).__name__}: {src}"
