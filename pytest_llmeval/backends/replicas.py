"""Several endpoints of one deployment (``replicas:`` in models.yaml), used as one model.

A request goes to the replica with the fewest requests in flight (ties: the one
sent fewer so far); each replica has its own limit (the model's
``max_concurrency``), so a model with N replicas has N times that in flight.

A replica that refuses connections is taken out at once for a cool-down
(:data:`COOLDOWN_S`); one that keeps failing (:data:`FAIL_AFTER` failures in a
row: 5xx, timeouts, dropped connections, truncated bodies) likewise. A request
that fails on one replica is sent to another at once, so a replica that dies
loses no item; these fail-overs are not the scheduler's retries. When every
replica has been tried for a request, its last error goes to the scheduler, which
retries it with back-off as usual. When every replica is cooling down, requests
fail at once with :class:`AllReplicasDown`: the run fails fast instead of waiting.

Which replica answered does not change the model's cache identity: that is the
deployment (:func:`deployment_key`).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from ..errors import ModelCallError

COOLDOWN_S = 30.0  # how long a replica that refused or kept failing stays out
FAIL_AFTER = 3  # failures in a row that take a replica out

# What a failed call says about the replica that made it (see openai_error_classifier).
DOWN = "down"  # unreachable: out for the cool-down now, try another replica
FAILING = "failing"  # a failure of the replica: counts towards FAIL_AFTER, try another replica
BUSY = "busy"  # rate-limited: try another replica, no mark against this one
REQUEST = "request"  # the request's own fault (a 4xx): every replica would say the same

T = TypeVar("T")


class AllReplicasDown(ModelCallError):
    """Every replica of a model is cooling down after refusing connections or failing."""


@dataclass
class Replica:
    """One endpoint and what the router knows about it."""

    url: str
    client: Any
    limit: int
    in_flight: int = 0
    sent: int = 0
    answered: int = 0
    failures: int = 0  # in a row
    down_until: float = 0.0
    last_error: str = ""


def normalise_url(url: str) -> str:
    """A replica URL without trailing slashes (``http://h:8000/v1/`` and ``http://h:8000/v1`` are one)."""
    return url.strip().rstrip("/")


def deployment_key(deployment: str | None, replicas: list[str]) -> str:
    """What identifies a replicated deployment: its ``deployment:`` name, else its sorted replica URLs.

    The same whichever replica answers and in whatever order the list is written.
    """
    if deployment:
        return f"deployment:{deployment}"
    return "replicas:" + ",".join(sorted({normalise_url(u) for u in replicas}))


class ReplicaSet:
    """Routes calls over the replicas of one model; thread-safe."""

    def __init__(
        self,
        model: str,
        urls: list[str],
        limit: int,
        make_client: Callable[[str], Any],
        *,
        cooldown_s: float = COOLDOWN_S,
        fail_after: int = FAIL_AFTER,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.model = model
        self.replicas = [Replica(url, make_client(url), max(1, limit)) for url in urls]
        self.cooldown_s = cooldown_s
        self.fail_after = fail_after
        self.failovers = 0  # calls sent to another replica after a failure
        self._clock = clock
        self._cv = threading.Condition()

    # -- choosing ---------------------------------------------------------------------------
    def _acquire(self, tried: set[str]) -> Replica | None:
        """A replica for the next attempt (its slot taken); None when every up replica was tried."""
        with self._cv:
            while True:
                now = self._clock()
                up = [r for r in self.replicas if r.down_until <= now]
                if not up:
                    raise AllReplicasDown(self._all_down_message())
                fresh = [r for r in up if r.url not in tried]
                if not fresh:
                    return None
                free = [r for r in fresh if r.in_flight < r.limit]
                if free:
                    best = min(free, key=lambda r: (r.in_flight, r.sent))
                    best.in_flight += 1
                    best.sent += 1
                    return best
                # Every candidate is at its limit: wait for a slot, or for a cool-down to end.
                wake = [r.down_until - now for r in self.replicas if r.down_until > now]
                self._cv.wait(timeout=min([1.0, *wake]))

    def _release(self, replica: Replica, kind: str | None, error: str = "") -> None:
        with self._cv:
            replica.in_flight -= 1
            if kind is None or kind == REQUEST:  # the replica answered
                replica.failures = 0
                replica.answered += 1
            elif kind in (DOWN, FAILING):
                replica.failures += 1
                replica.last_error = error
                if kind == DOWN or replica.failures >= self.fail_after:
                    replica.down_until = self._clock() + self.cooldown_s
                    replica.failures = 0
            self._cv.notify_all()

    def _all_down_message(self) -> str:
        why = "; ".join(f"{r.url} ({r.last_error or 'failing'})" for r in self.replicas)
        return (
            f"model {self.model}: all {len(self.replicas)} replicas are down: {why}. Start them, or fix "
            "'replicas:' in the models file"
        )

    # -- calling ------------------------------------------------------------------------------
    def call(self, fn: Callable[[Any], T], classify: Callable[[BaseException], str]) -> T:
        """``fn(client)`` on the best replica; on a replica's failure, again on another one.

        Raises the last error once every replica that is up has failed this call, and
        :class:`AllReplicasDown` when none is up.
        """
        tried: set[str] = set()
        last: BaseException | None = None
        while True:
            replica = self._acquire(tried)
            if replica is None:
                assert last is not None
                raise last
            try:
                result = fn(replica.client)
            except Exception as e:
                kind = classify(e)
                self._release(replica, kind, _short(e))
                if kind == REQUEST:
                    raise
                tried.add(replica.url)
                last = e
                with self._cv:
                    self.failovers += 1
                continue
            self._release(replica, None)
            return result

    def close(self) -> None:
        for r in self.replicas:
            close = getattr(r.client, "close", None)
            if close is not None:
                try:
                    close()
                except Exception:
                    pass


def _short(exc: BaseException) -> str:
    cause = exc.__cause__ or exc
    text = str(cause).splitlines()[0] if str(cause) else ""
    return f"{type(cause).__name__}: {text[:200]}" if text else type(cause).__name__


def openai_error_classifier() -> Callable[[BaseException], str]:
    """What an ``openai`` SDK error says about the replica that raised it (imports done once, here,
    not in the request threads)."""
    import openai

    def classify(exc: BaseException) -> str:
        if isinstance(exc, openai.APITimeoutError):
            return FAILING
        if isinstance(exc, openai.APIConnectionError):
            # Refused or unreachable: nothing listens there. A reset or a dropped answer may be a blip.
            # (By name: httpx's ConnectError / ConnectTimeout, or httpcore's beneath them.)
            names = {c.__name__ for c in type(exc.__cause__).__mro__}
            return DOWN if names & {"ConnectError", "ConnectTimeout"} else FAILING
        if isinstance(exc, openai.APIStatusError):
            if exc.status_code == 429:
                return BUSY
            return FAILING if exc.status_code >= 500 else REQUEST
        if isinstance(exc, (ValueError, openai.APIResponseValidationError)):
            return FAILING  # a body the SDK could not decode
        return REQUEST

    return classify


class _Completions:
    def __init__(self, replicas: ReplicaSet) -> None:
        self._replicas = replicas
        self._classify = openai_error_classifier()

    def create(self, **kwargs: Any) -> Any:
        return self._replicas.call(lambda client: client.chat.completions.create(**kwargs), self._classify)


class _Chat:
    def __init__(self, replicas: ReplicaSet) -> None:
        self.completions = _Completions(replicas)


class ReplicaClient:
    """What the OpenAI backend calls as its client (``client.chat.completions.create``), over replicas."""

    def __init__(self, replicas: ReplicaSet) -> None:
        self.replicas = replicas
        self.chat = _Chat(replicas)

    def close(self) -> None:
        self.replicas.close()
