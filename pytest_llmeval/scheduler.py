"""Generates the completions of all collected items ahead of the tests.

Items are submitted in item order. In-process models get batches (grouped by
prompt length within a window, so padding stays small, while early items still
come first); servers get up to ``max_concurrency`` requests in flight. Each
item's ``completion`` fixture waits only for its own future, so the first
items report while later ones are still generating. Cache look-ups happen at
submission, retries around every call, and a budget stops submission.

Every output is scrubbed of secrets and cut to the output bound
(:mod:`.bounds`) the moment it arrives, before the cache, the records or any
output sees it. A failed call keeps its retry count and the cause of every
attempt (:class:`ModelCallError`); only completions are cached.
"""

from __future__ import annotations

import dataclasses
import random
import threading
import time
from collections.abc import Callable
from concurrent.futures import CancelledError, Future
from dataclasses import dataclass, field
from typing import Any

from .backends.base import Backend, Completion, Request
from .bounds import cut
from .cache import ResponseCache, describe_identity_change
from .errors import LLMEvalError, ModelCallError, PreflightFailed
from .lanes import _describe, _earlier, _Lane, cache_info


@dataclass
class Job:
    """One item's request for one model."""

    key: str  # item node id
    model: str
    request: Request
    future: Future[Completion] = field(default_factory=Future)
    length: int = 0
    index: int = 0
    cache_note: str | None = None  # why a cache miss was not a hit, when the cache can tell


@dataclass
class RetryPolicy:
    """Exponential backoff that honours Retry-After, capped."""

    base: float = 0.5
    cap: float = 30.0

    def delay(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(retry_after, self.cap)
        return min(self.cap, self.base * (2**attempt)) * (0.5 + random.random() / 2)


class Stats:
    """Counters the progress line and summary read."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.submitted = 0
        self.done = 0
        self.cached = 0
        self.failed = 0
        self.retries = 0
        self.spent = 0.0
        self.started = time.monotonic()
        self.first_done: float | None = None
        # Misses whose request is cached under another model identity, and the first one's reason.
        self.near_misses = 0
        self.near_miss_note: str | None = None

    def finish(self, ok: bool, cached: bool = False, cost: float = 0.0) -> None:
        with self.lock:
            self.done += 1
            if self.first_done is None:
                self.first_done = time.monotonic()
            if cached:
                self.cached += 1
            if not ok:
                self.failed += 1
            if not cached:
                self.spent += cost


class Scheduler:
    """Feeds requests to backends and hands each item its completion future."""

    def __init__(
        self,
        get_backend: Callable[[str], Backend],
        cache: ResponseCache | None = None,
        *,
        enabled: bool = True,
        max_cost: float | None = None,
        retry: RetryPolicy | None = None,
        output_limit: int | None = None,
        preflight: Callable[[str], str | None] | None = None,
    ) -> None:
        self._get_backend = get_backend
        self.cache = cache
        self.enabled = enabled
        self.max_cost = max_cost
        self.output_limit = output_limit  # bytes of output kept per completion (None: whole)
        # Called on the submitting thread before a model's first request (not for cache hits):
        # returns why the model cannot be used, which fails its lane at once (PreflightFailed).
        self.preflight = preflight
        self._preflown: set[str] = set()
        self.retry = retry or RetryPolicy()
        self.jobs: dict[str, Job] = {}
        self.stats = Stats()
        self.cancelled = threading.Event()
        self._lanes: dict[str, _Lane] = {}
        self._lock = threading.Lock()
        self._count = 0

    # -- submission -------------------------------------------------------
    def submit_many(self, jobs: list[tuple[str, str, Request]]) -> None:
        """Queue several requests at once, so the first batch is formed from all of them."""
        by_lane: dict[str, list[Job]] = {}
        for key, model, request in jobs:
            job = self._prepare(key, model, request)
            if job is not None:
                by_lane.setdefault(model, []).append(job)
        for model, lane_jobs in by_lane.items():
            lane = self._lane(model)
            if self.cache is not None:  # one look-up for the lane's jobs, not one per job
                keys = [j.request.key(lane.identity) for j in lane_jobs]
                try:
                    hits = self.cache.get_many(keys)
                except Exception:  # never let the cache break a run
                    hits = {}
                rest = []
                for job, k in zip(lane_jobs, keys, strict=True):
                    hit = hits.get(k)
                    if hit is not None and self._replayable(hit):
                        self._resolve_cached(job, hit, k, lane)
                    else:
                        rest.append(job)
                lane_jobs = rest
                self._note_near_misses(lane, lane_jobs)
            if lane_jobs and not self._preflight_ok(model, lane, lane_jobs):
                continue
            if lane_jobs:
                lane.put_many(lane_jobs)

    def _preflight_ok(self, model: str, lane: _Lane, jobs: list[Job]) -> bool:
        """Check a model once, before its first request; on a problem fail the lane's jobs at once."""
        if self.preflight is None or model in self._preflown or lane.error is not None:
            return True
        self._preflown.add(model)
        problem = self.preflight(model)
        if problem is None:
            return True
        lane.error = PreflightFailed(problem)
        for job in jobs:
            job.future.set_exception(lane.error)
            self.stats.finish(False)
        return False

    def _replayable(self, hit: Completion) -> bool:
        """False for an output cached cut at a smaller bound than this run's: generate it again."""
        cut_at = hit.extra.get("output_limit")
        return cut_at is None or (self.output_limit is not None and self.output_limit <= cut_at)

    def _note_near_misses(self, lane: _Lane, missed: list[Job]) -> None:
        """Misses whose request is cached for another model identity say so (one query per lane)."""
        if not missed or self.cache is None or self.cache.mode not in ("rw", "ro") or lane.error is not None:
            return
        hashes = [j.request.request_hash() for j in missed]
        try:
            others = self.cache.identities(list(dict.fromkeys(hashes)), lane.identity)
        except Exception:
            return
        for job, h in zip(missed, hashes, strict=True):
            if h in others:
                job.cache_note = describe_identity_change(others[h][0], lane.identity)
                with self.stats.lock:
                    self.stats.near_misses += 1
                    if self.stats.near_miss_note is None:
                        self.stats.near_miss_note = f"{job.model}: {job.cache_note}"

    def _resolve_cached(self, job: Job, hit: Completion, key: str, lane: _Lane) -> None:
        extra = {**hit.extra, "cache": cache_info(job, key, lane.identity, "hit")}
        if not getattr(lane.backend, "latency_is_per_request", True) and "batch_size" not in extra:
            extra["batch_size"] = None  # cached by an older version: the item's own timing is unknown
        # A copy: identical requests share a key.
        hit = dataclasses.replace(hit, model=job.model, extra=extra)
        hit.text, original = cut(hit.text, self.output_limit)
        if original is not None:  # cached whole (or cut at a larger bound): cut to this run's
            hit.extra.setdefault("output_bytes", original)
            hit.extra["output_limit"] = self.output_limit
        job.future.set_result(hit)
        self.stats.finish(True, cached=True)

    def submit(self, key: str, model: str, request: Request) -> Future[Completion]:
        """Queue ``request`` for item ``key`` (idempotent per key)."""
        self.submit_many([(key, model, request)])
        return self.jobs[key].future

    def _prepare(self, key: str, model: str, request: Request) -> Job | None:
        """Register a job; resolve it at once on a lane error; else return it for the cache and a lane."""
        with self._lock:
            if key in self.jobs:
                return None
            job = Job(key, model, request, index=self._count)
            self._count += 1
            self.jobs[key] = job
            self.stats.submitted += 1
        if self.cancelled.is_set():
            job.future.cancel()
            return None
        lane = self._lane(model)
        if lane.error is not None:
            job.future.set_exception(lane.error)
            self.stats.finish(False)
            return None
        return job

    def job(self, key: str) -> Job | None:
        return self.jobs.get(key)

    def _lane(self, model: str) -> _Lane:
        with self._lock:
            lane = self._lanes.get(model)
            if lane is None:
                lane = _Lane(self, model)
                self._lanes[model] = lane
            return lane

    # -- execution --------------------------------------------------------
    def call_with_retries(
        self, backend: Backend, fn: Callable[[], Any], causes: list[str] | None = None
    ) -> tuple[Any, int]:
        """Run ``fn``; retry transient failures; return (result, retries).

        The cause of each failed attempt is appended to ``causes`` (when given). A call that
        fails for good raises :class:`ModelCallError` with the retry count and every cause,
        and its message names the earlier causes too.
        """
        causes = [] if causes is None else causes
        attempts = max(1, int(getattr(backend.spec, "max_retries", 0)) + 1)
        for attempt in range(attempts):
            if self.cancelled.is_set():
                raise ModelCallError("cancelled before completion", retries=attempt, causes=causes)
            try:
                return fn(), attempt
            except LLMEvalError as exc:
                if isinstance(exc, ModelCallError) and attempt:  # keep what the earlier attempts met
                    exc.retries, exc.causes = attempt, [*causes, *exc.causes]
                raise
            except Exception as exc:
                retryable, after = backend.is_retryable(exc)
                cause = _describe(exc)
                if not retryable or attempt == attempts - 1:
                    detail = f" after {attempt} retries{_earlier(causes)}" if attempt else ""
                    message, every = f"model {backend.name}: {cause}{detail}", [*causes, cause]
                    raise ModelCallError(message, retries=attempt, cause=cause, causes=every) from exc
                causes.append(cause)
                with self.stats.lock:
                    self.stats.retries += 1
                if self.cancelled.wait(self.retry.delay(attempt, after)):
                    raise ModelCallError(
                        "cancelled during retry back-off", retries=attempt + 1, causes=causes
                    ) from exc
        raise AssertionError("unreachable")

    def budget_left(self) -> bool:
        return self.max_cost is None or self.stats.spent < self.max_cost

    def shutdown(self, cancel: bool = True) -> None:
        """Stop all lanes; with ``cancel`` outstanding futures are cancelled at once."""
        if cancel:
            self.cancelled.set()
        for lane in list(self._lanes.values()):
            lane.stop(cancel)

    def wait(self, key: str, timeout: float | None = None) -> Completion:
        """Block until item ``key``'s completion is ready."""
        return self.jobs[key].future.result(timeout)


__all__ = ["CancelledError", "Job", "RetryPolicy", "Scheduler"]
