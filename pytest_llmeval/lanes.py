"""One model's lane: its queue, its worker thread (and pool, for servers), and what a finished call does.

A lane takes jobs from :class:`~pytest_llmeval.scheduler.Scheduler`, loads its backend on the first
job, runs batches (in-process models, grouped by prompt length) or single calls (servers, up to
``max_concurrency`` in flight), and resolves each job's future. Every output is scrubbed and cut to
the output bound here, once, before the cache or anything downstream sees it.
"""

from __future__ import annotations

import threading
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from .backends.base import Backend, Completion
from .bounds import cut
from .errors import BudgetExceeded, LLMEvalError, ModelCallError
from .redact import redact

if TYPE_CHECKING:
    from .scheduler import Job, Scheduler

WINDOW_BATCHES = 4  # batches looked ahead when grouping prompts by length


class _Lane:
    """The queue and worker(s) of one model."""

    def __init__(self, sched: Scheduler, model: str) -> None:
        self.sched = sched
        self.model = model
        self.error: BaseException | None = None
        self.queue: deque[Job] = deque()
        self.cv = threading.Condition()
        self.closed = False
        try:
            self.backend = sched._get_backend(model)
            self.identity = self.backend.identity()
        except BaseException as e:  # e.g. the model cannot be configured; every item errors
            self.error = e if isinstance(e, Exception) else ModelCallError(str(e))
            self.identity = model
            return
        self.pool: ThreadPoolExecutor | None = None
        if self.backend.mode == "concurrent" and sched.enabled:
            self.pool = ThreadPoolExecutor(
                self.backend.max_concurrency, thread_name_prefix=f"llmeval-{model}"
            )
        self.thread = threading.Thread(target=self._run, name=f"llmeval-lane-{model}", daemon=True)
        self.thread.start()

    def put_many(self, jobs: list[Job]) -> None:
        with self.cv:
            self.queue.extend(jobs)
            self.cv.notify()

    def stop(self, cancel: bool) -> None:
        with self.cv:
            self.closed = True
            if cancel:
                while self.queue:
                    job = self.queue.popleft()
                    job.future.cancel()
            self.cv.notify_all()
        if getattr(self, "pool", None) is not None:
            # Jobs queued in the pool but not started are cancelled there; _submit_to_pool's
            # callback resolves their futures, or their items would wait forever.
            self.pool.shutdown(wait=False, cancel_futures=cancel)

    def _take(self, n: int) -> list[Job]:
        with self.cv:
            while not self.queue and not self.closed:
                self.cv.wait(0.5)
            out = []
            while self.queue and len(out) < n:
                job = self.queue.popleft()
                if job.future.set_running_or_notify_cancel():
                    out.append(job)
            return out

    def _load(self) -> bool:
        try:
            self.backend.load()
            return True
        except BaseException as e:
            err = (
                e
                if isinstance(e, LLMEvalError)
                else ModelCallError(f"model {self.model} failed to load: {_describe(e)}")
            )
            self.error = err
            return False

    def _fail_all(self, jobs: list[Job]) -> None:
        for job in jobs:
            if not job.future.done():
                job.future.set_exception(self.error or ModelCallError("model unavailable"))
                self.sched.stats.finish(False)
        with self.cv:
            rest = list(self.queue)
            self.queue.clear()
        for job in rest:
            if job.future.set_running_or_notify_cancel():
                job.future.set_exception(self.error or ModelCallError("model unavailable"))
                self.sched.stats.finish(False)

    def _over_budget(self, jobs: list[Job]) -> bool:
        """Checked right before each dispatch, so spending stops as soon as the budget is reached."""
        if self.sched.budget_left():
            return False
        err = BudgetExceeded(
            f"budget of ${self.sched.max_cost:.4f} reached (spent ${self.sched.stats.spent:.4f})"
        )
        for job in jobs:
            job.future.set_exception(err)
            self.sched.stats.finish(False)
        return True

    def _run(self) -> None:
        batch_mode = self.backend.mode == "batch" and self.sched.enabled
        size = self.backend.batch_size if batch_mode else 1
        window = size * WINDOW_BATCHES
        loaded = False
        while True:
            jobs = self._take(window if batch_mode else 1)
            if not jobs:
                if self.closed:
                    return
                continue
            if not loaded:
                loaded = self._load()
                if not loaded:
                    self._fail_all(jobs)
                    continue
            if self.pool is not None:
                for job in jobs:
                    self._submit_to_pool(job)
                continue
            for group in _batches(jobs, size, self.backend) if batch_mode else [[j] for j in jobs]:
                self._batch(group)

    def _submit_to_pool(self, job: Job) -> None:
        # Every job's future must end resolved: a pool that was shut down (the session is
        # stopping) refuses new work, and cancels work it had not started.
        assert self.pool is not None
        try:
            pool_future = self.pool.submit(self._one, job)
        except RuntimeError:
            _cancel(job)
            return
        pool_future.add_done_callback(lambda f: _cancel(job) if f.cancelled() else None)

    def _one(self, job: Job) -> None:
        if self.sched.cancelled.is_set():
            _cancel(job)
            return
        if self._over_budget([job]):
            return
        causes: list[str] = []
        try:
            comp, retries = self.sched.call_with_retries(
                self.backend, lambda: self.backend.generate(job.request), causes
            )
            comp.retries = retries
            comp.model = self.model
            self._done(job, comp, causes)
        except BaseException as e:
            job.future.set_exception(e if isinstance(e, Exception) else ModelCallError(str(e)))
            self.sched.stats.finish(False)

    def _batch(self, group: list[Job]) -> None:
        if self.sched.cancelled.is_set():
            for job in group:
                _cancel(job)
            return
        if self._over_budget(group):
            return
        causes: list[str] = []
        try:
            comps, retries = self.sched.call_with_retries(
                self.backend,
                lambda: self.backend.generate_batch([j.request for j in group], self.sched.cancelled),
                causes,
            )
        except BaseException as e:
            err = e if isinstance(e, Exception) else ModelCallError(str(e))
            for job in group:
                job.future.set_exception(err)
                self.sched.stats.finish(False)
            return
        for job, comp in zip(group, comps, strict=True):
            comp.retries = retries
            comp.model = self.model
            self._done(job, comp, causes)

    def _done(self, job: Job, comp: Completion, causes: list[str] | None = None) -> None:
        # Model output is untrusted: a secret it echoes must not reach the cache,
        # the records, the report or a trace, so it is scrubbed here, once; and it is
        # cut to the output bound here, so nothing downstream holds more.
        comp.text, original = cut(redact(comp.text), self.sched.output_limit)
        extra = dict(comp.extra)
        if original is not None:
            extra.update(output_bytes=original, output_limit=self.sched.output_limit)
        if causes:
            extra["retry_causes"] = list(causes)
        comp.extra = extra
        if self.sched.cache is not None:
            key = job.request.key(self.identity)
            try:
                self.sched.cache.put(key, comp, job.request.request_hash(), self.identity)
            except Exception:
                pass
            comp.extra["cache"] = cache_info(job, key, self.identity, self.sched.cache.mode)
        self.sched.stats.finish(True, cost=comp.cost)
        job.future.set_result(comp)


def _cancel(job: Job) -> None:
    """Resolve a job that will never run (its future may already be running)."""
    if not job.future.done():
        try:
            job.future.set_exception(ModelCallError("cancelled"))
        except Exception:  # resolved meanwhile by another thread
            pass


def _batches(jobs: list[Job], size: int, backend: Backend) -> list[list[Job]]:
    """Group a window of jobs into batches of similar prompt length and equal parameters.

    Batches are ordered by their earliest item, so the first submitted items
    still finish first.
    """
    by_params: dict[Any, list[Job]] = {}
    for j in jobs:
        by_params.setdefault(j.request.params, []).append(j)
    batches: list[list[Job]] = []
    for group in by_params.values():
        measure = getattr(backend, "prompt_length", None)
        for j in group:
            j.length = measure(j.request) if measure else sum(len(c) for _, c in j.request.messages)
        group.sort(key=lambda j: (j.length, j.index))
        batches.extend(group[i : i + size] for i in range(0, len(group), size))
    batches.sort(key=lambda b: min(j.index for j in b))
    return batches


def cache_info(job: Job, key: str, identity: str, status: str) -> dict[str, Any]:
    """What an item's record keeps about its cache key (read by ``llmeval cache explain``, which
    recomputes the request hash from the recorded messages and these parameters)."""
    info: dict[str, Any] = {
        "status": "hit" if status == "hit" else ("miss" if status in ("rw", "ro") else status),
        "key": key,
        "identity": identity,
        "params": job.request.param_dict,
    }
    if job.cache_note:
        info["note"] = job.cache_note
    return info


def _earlier(causes: list[str]) -> str:
    """``; earlier: 2x RateLimitError: ..., 1x APIConnectionError: ...`` (distinct causes, counted)."""
    if not causes:
        return ""
    counts: dict[str, int] = {}
    for c in causes:
        short = c if len(c) <= 120 else c[:117] + "..."
        counts[short] = counts.get(short, 0) + 1
    return "; earlier: " + ", ".join(f"{n}x {c}" for c, n in counts.items())


def _describe(exc: BaseException) -> str:
    """A one-line cause: the exception type and message, without secrets or huge bodies."""
    msg = redact(str(exc).splitlines()[0]) if str(exc) else ""
    if len(msg) > 300:
        msg = msg[:300] + "..."
    return f"{type(exc).__name__}: {msg}" if msg else type(exc).__name__
