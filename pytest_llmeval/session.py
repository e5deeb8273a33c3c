"""The plugin's session object: model selection, parametrization, scheduling, records, summary.

Registered by ``plugin.pytest_configure`` under the name ``llmeval-session``;
its methods named ``pytest_*`` are hook implementations. State lives here and
in ``item.stash``, never on ``config._something``.
"""

from __future__ import annotations

import contextlib
import os
import re
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from .backends.base import Backend, Completion, Request
from .dataset import Case, DatasetError, file_hash, load_cases
from .errors import BudgetExceeded, ConfigError, LLMEvalError, ModelCallError, TemplateError
from .gate import ModelComparison, compare_models
from .models import ModelSpec, builtin_backends, load_models
from .prompts import default_messages, load_template
from .redact import redact, safe_terminal
from .results import USER_PROPERTY, Aggregate, CaseResult, aggregate
from .scorers import _base as scoring

SESSION_KEY = pytest.StashKey["LLMEvalSession"]()
SCORES_KEY = pytest.StashKey[list]()
COMPLETION_KEY = pytest.StashKey[Completion]()
MESSAGES_KEY = pytest.StashKey[list]()
JUDGE_KEY = pytest.StashKey[list]()



def _split_models(values: list[str]) -> list[str]:
    out: list[str] = []
    for v in values:
        for name in re.split(r"[,\s]+", v):
            if name and name not in out:
                out.append(name)
    return out


class LLMEvalSession:
    """Owns everything one pytest run of evals needs."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.is_worker = hasattr(config, "workerinput")
        self._specs: dict[str, ModelSpec] | None = None
        self._backends: dict[str, Backend] = {}
        self.scheduler: Any = None
        self.results: dict[str, CaseResult] = {}
        # Records made in this process, by nodeid: logreport takes the object instead of parsing
        # the JSON it also carries (which xdist workers ship to the controller).
        self.local_records: dict[str, CaseResult] = {}
        self.aggregates: list[Aggregate] = []
        self.model_comparisons: list[ModelComparison] = []
        self.verdict: Any = None
        self.session: pytest.Session | None = None
        self.current_item: pytest.Item | None = None
        self._submitted = False
        self._gen_counter = 0
        self._last_progress = 0.0
        self._last_progress_done = -1
        raw = config.getini("llmeval_progress_every")
        try:
            self.progress_every = max(0.1, float(raw))
        except ValueError:
            raise pytest.UsageError(f"ini key llmeval_progress_every: expected seconds, got {raw!r}") from None
        self._registered_tags: set[str] = set()
        self.datasets: dict[str, str] = {}  # test name -> dataset sha256
        self.run_id = (
            config.workerinput.get("llmeval_run_id")
            if self.is_worker
            else time.strftime("%Y%m%d-%H%M%S") + "-" + uuid.uuid4().hex[:6]
        )
        self.run_dir: Path | None = None
        self.store: Any = None
        self.tracer: Any = None
        self.report_path: Path | None = None
        self.server_urls: dict[str, str] = {}
        self.server_errors: dict[str, str] = {}  # model -> why its server did not start
        self.started = time.time()
        self.saved_baseline: str | None = None
        self.estimate_lines: list[str] = []
        load_dotenv(config.rootpath / ".env")
        explicit = _split_models(config.getoption("model") or [])
        self.explicit_models = bool(explicit)
        ini = _split_models([config.getini("llmeval_model") or ""])
        self.selected: list[str] = explicit or ini
        if explicit and not config.getoption("list_models"):
            self._validate_selection(check_runnable=not self.is_worker)

    # -- configuration ----------------------------------------------------
    def models_file(self) -> Path:
        opt = self.config.getoption("models_file")
        path = Path(opt or self.config.getini("llmeval_models_file"))
        if not path.is_absolute():
            base = Path(self.config.invocation_params.dir) if opt else self.config.rootpath
            path = base / path
        return path

    def specs(self) -> dict[str, ModelSpec]:
        if self._specs is None:
            try:
                self._specs = load_models(self.models_file(), frozenset(self._factories()) - {"hf", "openai", "vllm_server"})
            except ConfigError as e:
                raise pytest.UsageError(str(e)) from None
        return self._specs

    def spec(self, name: str) -> ModelSpec:
        return self.specs()[name]

    def _validate_selection(self, check_runnable: bool = True) -> None:
        specs = self.specs()
        unknown = [m for m in self.selected if m not in specs]
        if unknown:
            raise pytest.UsageError(
                f"unknown model {', '.join(map(repr, unknown))} (models file {self.models_file()}); "
                f"available: {', '.join(specs)}"
            )
        if check_runnable:
            problems = []
            for name in self.selected:
                ok, why = specs[name].availability()
                if not ok:
                    problems.append(f"model {name!r} cannot run here: {why}")
            if problems:
                raise pytest.UsageError("\n".join(problems) + "\n(see `pytest --list-models`)")

    def _cfg(self, option: str, ini: str) -> Any:
        v = self.config.getoption(option)
        return v if v not in (None, "", []) else self.config.getini(ini)

    # -- backends ----------------------------------------------------------
    def backend(self, name: str) -> Backend:
        if name not in self._backends:
            spec = self.spec(name)
            factories = self._factories()
            if spec.type not in factories:
                raise ConfigError(f"model {name}: no backend registered for type {spec.type!r}")
            backend = factories[spec.type](spec)
            if name in self.server_urls:
                backend.base_url = self.server_urls[name]
            if name in self.server_errors:
                backend.start_error = self.server_errors[name]  # type: ignore[attr-defined]
            self._backends[name] = backend
        return self._backends[name]

    def _factories(self) -> dict[str, Any]:
        factories = builtin_backends()
        for extra in self.config.hook.pytest_llmeval_register_backends():
            factories.update(extra or {})
        return factories

    def _scheduler(self) -> Any:
        if self.scheduler is None:
            from .cache import ResponseCache
            from .scheduler import Scheduler

            mode = self._cfg("llmeval_cache", "llmeval_cache")
            cache = None
            if mode != "off":
                path = Path(self._cfg("llmeval_cache_path", "llmeval_cache_path"))
                if not path.is_absolute():
                    path = self.config.rootpath / path
                cache = ResponseCache(path, mode)
            self.scheduler = Scheduler(
                self.backend,
                cache,
                enabled=not self.config.getoption("no_scheduler"),
                max_cost=self.config.getoption("max_cost"),
            )
        return self.scheduler

    # -- collection ---------------------------------------------------------
    def pytest_generate_tests(self, metafunc: pytest.Metafunc) -> None:
        mark = metafunc.definition.get_closest_marker("llmeval_dataset")
        needs_model = "model" in metafunc.fixturenames
        if mark is None and not needs_model:
            return
        if needs_model:
            if not self.selected:
                raise pytest.Collector.CollectError(
                    f"{metafunc.function.__name__} needs a model: pass --model NAME or set the "
                    "llmeval_model ini key"
                )
            try:
                if not self.explicit_models:
                    self._validate_selection(check_runnable=False)
            except pytest.UsageError as e:
                raise pytest.Collector.CollectError(str(e)) from None
            metafunc.parametrize("model", self.selected, indirect=True, ids=self.selected)
        if mark is not None:
            path = Path(metafunc.definition.path).parent / mark.kwargs["path"]
            try:
                cases = load_cases(path)
            except DatasetError as e:
                raise pytest.Collector.CollectError(str(e)) from None
            self.datasets[_test_name(metafunc.definition.nodeid)] = file_hash(path)
            params = []
            for c in cases:
                for t in c.tags:
                    if t not in self._registered_tags:
                        self._registered_tags.add(t)
                        self.config.addinivalue_line("markers", f"{t}: dataset tag")
                params.append(pytest.param(c, id=c.id, marks=[getattr(pytest.mark, t) for t in c.tags]))
            metafunc.parametrize("case", params, indirect=True)

    def pytest_collection_finish(self, session: pytest.Session) -> None:
        self.session = session
        if self.config.getoption("estimate_cost"):
            self._estimate(session.items)

    def pytest_sessionstart(self, session: pytest.Session) -> None:
        self.session = session
        if self.is_worker:
            self.server_urls = dict(self.config.workerinput.get("llmeval_server_urls", {}))
            self.server_errors = dict(self.config.workerinput.get("llmeval_server_errors", {}))
            return
        if self.config.getoption("collectonly"):
            return
        self._start_servers()
        self._open_outputs()

    @pytest.hookimpl(optionalhook=True)
    def pytest_configure_node(self, node: Any) -> None:
        """xdist: hand workers the run id and the URLs of servers the controller started."""
        node.workerinput["llmeval_run_id"] = self.run_id
        node.workerinput["llmeval_server_urls"] = self.server_urls
        node.workerinput["llmeval_server_errors"] = self.server_errors

    def _start_servers(self) -> None:
        specs = [self.spec(n) for n in self.selected if self._specs or self.explicit_models]
        wanted = [s for s in specs if s.type == "vllm_server" and not s.base_url]
        if not wanted:
            return
        from .backends.vllm_server import cpu_build, plan_servers, start_servers

        workers = getattr(self.config.option, "numprocesses", None)
        if workers and cpu_build() and any(len(p.spec_names) > 1 for p in plan_servers(wanted)):
            self._write_line(
                "llmeval: warning: with -n, xdist workers can mix base and adapter requests in one "
                "vLLM-CPU batch, which applies the adapter to base requests (serving/README.md); "
                "compare a base model and its adapters on vLLM-CPU without -n",
                yellow=True,
            )
        try:
            self.server_urls = start_servers(wanted)
        except ModelCallError as e:
            # Not an INTERNALERROR: the other models still run, and each item of these models
            # becomes an error that quotes the server's log.
            self.server_errors = {s.name: str(e) for s in wanted}
            self._write_line(f"llmeval: {safe_terminal(str(e).splitlines()[0], 300)}", red=True)

    def _write_line(self, line: str, **markup: bool) -> None:
        """A line on the terminal, also while an item runs (when pytest captures fd 1)."""
        tr = self.config.pluginmanager.get_plugin("terminalreporter")
        if tr is None:
            return
        # Without suspending capture, a line written during an item would land in the item's
        # captured output instead of on the terminal.
        capman = self.config.pluginmanager.get_plugin("capturemanager")
        with capman.global_and_fixture_disabled() if capman is not None else contextlib.nullcontext():
            tr.ensure_newline()
            tr.write_line(line, **markup)

    def _open_outputs(self) -> None:
        if os.environ.get("ENABLE_OTEL", "").lower() in ("1", "true", "yes") or self.config.getoption("otel"):
            from .tracing import Tracer

            self.tracer = Tracer.from_env()
        if self.config.getoption("no_metrics"):
            return
        from .store import open_run

        self.store, self.run_dir = open_run(self)

    # -- requests -----------------------------------------------------------
    def request_for(self, item: pytest.Item) -> tuple[str, Request]:
        """The (model, request) an item asks for: its case rendered with the test's template."""
        callspec = item.callspec  # type: ignore[attr-defined]
        case: Case = callspec.params["case"]
        model: str = callspec.params["model"]
        mark = item.get_closest_marker("llmeval_dataset")
        prompt = mark.kwargs.get("prompt") if mark else None
        if prompt:
            messages = load_template(Path(item.path).parent / prompt).render(case.data, case.id)
        else:
            messages = default_messages(case.data)
        params = {**self.spec(model).params, **((mark.kwargs.get("params") if mark else None) or {})}
        item.stash[MESSAGES_KEY] = messages
        return model, Request.make(messages, **params)

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
            items = list(self.session.items) if self.session else [current]
        return [i for i in items if "completion" in getattr(i, "fixturenames", ())]

    def _submit(self, items: list[pytest.Item]) -> None:
        sched = self._scheduler()
        batch = []
        for it in items:
            if sched.job(it.nodeid) is not None:
                continue
            try:
                model, req = self.request_for(it)
            except (TemplateError, LLMEvalError) as e:
                from concurrent.futures import Future

                from .scheduler import Job

                fut: Future[Completion] = Future()
                fut.set_exception(e)
                sched.jobs[it.nodeid] = Job(it.nodeid, "?", Request(()), future=fut)
                continue
            batch.append((it.nodeid, model, req))
        sched.submit_many(batch)

    def completion_for(self, item: pytest.Item) -> Completion:
        """Block until this item's completion is ready; errors become item errors with their cause."""
        sched = self._scheduler()
        if not sched.enabled:
            self._submit([item])
        elif self.is_worker or not self._submitted:
            self._submit(self._pending_items(item))
            self._submitted = True
        job = sched.job(item.nodeid)
        if job is None:
            self._submit([item])
            job = sched.job(item.nodeid)
        # Skips and failures are raised after the except blocks, so the report shows the
        # cause once, not again as "During handling of the above exception...".
        skip = fail = None
        while True:
            try:
                comp = job.future.result(timeout=self.progress_every)
                break
            except TimeoutError:
                self._progress()
            except BudgetExceeded as e:
                skip = str(e)
                break
            except LLMEvalError as e:
                fail = str(e)
                break
            except Exception as e:  # cancelled, or a backend bug: still an error with its cause
                if sched.cancelled.is_set():
                    skip = "cancelled: the session is stopping"
                else:
                    fail = f"model call failed: {type(e).__name__}: {e}"
                break
        if skip is not None:
            pytest.skip(skip)
        if fail is not None:
            pytest.fail(redact(fail), pytrace=False)
        item.stash[COMPLETION_KEY] = comp
        self._progress(quiet_unless_due=True)
        return comp

    def generate_now(self, model: str, messages: list[dict[str, str]] | str, **params: Any) -> Completion:
        """Generate one completion synchronously (judge calls, multi-turn tests)."""
        if isinstance(messages, str):
            messages = [{"role": "user", "content": messages}]
        if model not in self.specs():
            raise ConfigError(f"unknown model {model!r}; available: {', '.join(self.specs())}")
        params = {**self.spec(model).params, **params}
        self._gen_counter += 1
        key = f"__direct__/{os.getpid()}/{self._gen_counter}"
        fut = self._scheduler().submit(key, model, Request.make(messages, **params))
        try:
            return fut.result()
        except BudgetExceeded as e:
            pytest.skip(str(e))

    def _progress(self, quiet_unless_due: bool = False) -> None:
        if self.is_worker or self.config.get_verbosity() < 0 or self.scheduler is None:
            return
        now = time.monotonic()
        if now - self._last_progress < self.progress_every:
            return
        st = self.scheduler.stats
        if quiet_unless_due and st.done >= st.submitted:
            return
        if st.done == self._last_progress_done and now - self._last_progress < 60:
            return  # nothing new: a line a minute while a long batch runs, not one every few seconds
        self._last_progress, self._last_progress_done = now, st.done
        elapsed = max(now - st.started, 1e-6)
        fresh = st.done - st.cached
        rate = fresh / elapsed
        left = st.submitted - st.done
        eta = f", ETA {left / rate:.0f}s" if rate > 0 and left else ""
        self._write_line(
            f"[llmeval] generated {st.done}/{st.submitted} ({st.cached} cached, {rate:.1f} req/s{eta})", cyan=True
        )

    # -- running -------------------------------------------------------------
    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_setup(self, item: pytest.Item) -> None:
        self.current_item = item  # what the model, case and completion fixtures read

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_call(self, item: pytest.Item) -> Any:
        store: list[dict[str, Any]] = []
        item.stash[SCORES_KEY] = store
        scoring.begin_item(store)
        try:
            return (yield)
        finally:
            scoring.end_item()

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_makereport(self, item: pytest.Item, call: pytest.CallInfo[Any]) -> Any:
        report = yield
        if not _is_eval_item(item):
            return report
        if report.when == "call" or (report.when == "setup" and report.outcome != "passed"):
            rec = self._record(item, report, call)
            prop = (USER_PROPERTY, rec.to_json())
            report.user_properties.append(prop)
            if not self.is_worker:  # spares re-parsing the JSON in this process (xdist ships the JSON)
                self.local_records[item.nodeid] = rec
            # The teardown report copies item.user_properties; JUnit XML reads it from there.
            item.user_properties.append(prop)
        return report

    def _record(self, item: pytest.Item, report: pytest.TestReport, call: pytest.CallInfo[Any]) -> CaseResult:
        params = item.callspec.params  # type: ignore[attr-defined]
        case: Case = params["case"]
        comp = item.stash.get(COMPLETION_KEY, None)
        mark = item.get_closest_marker("llmeval_dataset")
        if report.when == "setup":
            outcome = "skipped" if report.skipped else "error"
        elif report.passed:
            outcome = "passed"
        elif report.skipped:
            outcome = "skipped"
        elif call.excinfo is not None and isinstance(call.excinfo.value, AssertionError):
            outcome = "failed"
        else:
            outcome = "error"
        error = None
        if outcome in ("error", "skipped") or (outcome == "failed" and report.longrepr is not None):
            error = _short_error(report)
        rec = CaseResult(
            nodeid=item.nodeid,
            test=_test_name(item.nodeid),
            model=str(params.get("model", "")),
            case_id=case.id,
            tags=list(case.tags),
            outcome=outcome,
            passed=outcome == "passed",
            scores=list(item.stash.get(SCORES_KEY, [])),
            main_score=mark.kwargs.get("main_score") if mark else None,
            error=redact(error) if error else None,
            messages=item.stash.get(MESSAGES_KEY, None),
            expected=case.data.get("expected", case.data.get("reference")),
            dataset=str(mark.kwargs.get("path")) if mark else None,
        )
        if comp is not None:
            rec.output = comp.text
            rec.latency_s = comp.latency_s
            rec.prompt_tokens = comp.prompt_tokens
            rec.completion_tokens = comp.completion_tokens
            rec.cost = comp.cost
            rec.cached = comp.cached
            rec.retries = comp.retries
            rec.finish_reason = comp.finish_reason
        return rec

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if self.is_worker:
            return
        for key, value in report.user_properties:
            if key != USER_PROPERTY:
                continue
            if report.when == "teardown" and report.nodeid in self.results:
                continue  # the same record again, carried by the teardown report
            rec = self.local_records.get(report.nodeid) or CaseResult.from_json(value)
            self.results[rec.nodeid] = rec
            if self.store is not None:
                self.store.add_result(rec)
            if self.tracer is not None:
                self.tracer.item(rec)
        session = self.session
        if session is not None and (session.shouldfail or session.shouldstop) and self.scheduler is not None:
            # -x / --maxfail: stop generating what will never be tested.
            self.scheduler.shutdown(cancel=True)

    def pytest_keyboard_interrupt(self, excinfo: Any) -> None:
        if self.scheduler is not None:
            self.scheduler.shutdown(cancel=True)

    # -- the end ------------------------------------------------------------
    @pytest.hookimpl(tryfirst=True)
    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        if self.scheduler is not None:
            self.scheduler.shutdown(cancel=True)
            if self.scheduler.cache is not None:
                self.scheduler.cache.close()
        for b in self._backends.values():
            try:
                b.close()
            except Exception:
                pass
        if self.is_worker:
            return
        self._stop_servers()
        if self.results:
            self.aggregates = aggregate(list(self.results.values()))
            self.model_comparisons = compare_models(self.aggregates, self.selected)
            self._run_gate(session)
            if getattr(self, "judge_agreement", None) is None and any(
                "judge" in a.scores for a in self.aggregates
            ):
                from .judge import session_agreement_note  # xdist: the judge ran in the workers

                self.judge_agreement = session_agreement_note(self)
        if self.store is not None:
            self.store.finish(self, complete=session.exitstatus in (0, 1) and not session.shouldstop)
        if self.tracer is not None:
            self.tracer.shutdown(self)

    def _stop_servers(self) -> None:
        if self.server_urls:
            from .backends.vllm_server import stop_servers

            stop_servers()

    def _run_gate(self, session: pytest.Session) -> None:
        from . import gate

        tr = self.config.pluginmanager.get_plugin("terminalreporter")
        baseline_path = self._cfg("baseline", "llmeval_baseline")
        save = self.config.getoption("save_baseline")
        explicit_baseline = bool(self.config.getoption("baseline"))
        if baseline_path:
            baseline_path = self._resolve(baseline_path)
        if baseline_path and not explicit_baseline and not Path(baseline_path).is_file():
            # An ini default that does not exist yet is not an error: nothing to compare with.
            self.baseline_note = f"no baseline at {baseline_path}; not gated"
            baseline_path = None
        if baseline_path and save is not None and not Path(baseline_path).is_file():
            baseline_path = None
        if baseline_path:
            try:
                self.verdict = gate.evaluate(self, baseline_path)
            except ConfigError as e:
                self.verdict = gate.Verdict.error(str(e))
        elif self.config.getoption("fail_under") or self.config.getini("llmeval_fail_under"):
            self.verdict = gate.evaluate(self, None)
        if self.verdict is not None:
            if not self.verdict.passed:
                session.exitstatus = pytest.ExitCode.TESTS_FAILED
                if tr is not None:
                    tr.stats.setdefault("gate failed", []).append(self.verdict)
            elif session.exitstatus == pytest.ExitCode.TESTS_FAILED:
                # Case-level misses are visible as failed items, but the gate decides.
                session.exitstatus = pytest.ExitCode.OK
                if tr is not None:
                    tr.stats.setdefault("gate passed", []).append(self.verdict)
        if save is not None:
            target = self._resolve(save or self._cfg("baseline", "llmeval_baseline") or "evals/baseline.json")
            try:
                self.saved_baseline = gate.save_from_session(
                    self, target, force=self.config.getoption("force_save_baseline")
                )
            except ConfigError as e:
                self.saved_baseline = None
                self.save_error = str(e)
                session.exitstatus = pytest.ExitCode.TESTS_FAILED

    def _resolve(self, p: str) -> str:
        path = Path(p)
        return str(path if path.is_absolute() else Path(self.config.invocation_params.dir) / path)

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if self.is_worker:
            return
        tw = terminalreporter
        for line in self.estimate_lines:
            tw.write_line(line)
        if not self.aggregates:
            return
        tw.write_sep("=", "llmeval summary")
        for a in self.aggregates:
            tw.write_line(_summary_line(a), bold=True)
            for k, v in a.scores.items():
                rate = f"  (rate {a.rates[k]:.1%})" if k in a.rates else ""
                tw.write_line(f"    {k:<22} mean {v:.3f}{rate}")
            lat = (
                f"p50 {a.latency_p50:.2f}s p95 {a.latency_p95:.2f}s" if a.latency_p50 is not None else "n/a"
            )
            tw.write_line(
                f"    latency {lat} | tokens {a.prompt_tokens} in / {a.completion_tokens} out | "
                f"cost ${a.cost_spent:.4f} spent, ${a.cost_replayed:.4f} replayed from cache "
                f"({a.cached}/{a.n} cached) | retries {a.retries}"
            )
            judge_note = getattr(self, "judge_agreement", None)
            if judge_note and any(k.startswith("judge") for k in a.scores):
                tw.write_line(f"    judge agreement with people: {judge_note}")
        if self.model_comparisons:
            tw.write_sep("-", "models compared on the same cases (paired)")
            for mc in self.model_comparisons:
                tw.write_line(mc.line())
        if self.scheduler is not None and self.scheduler.stats.done:
            st = self.scheduler.stats
            elapsed = (st.first_done or time.monotonic()) - st.started
            tw.write_line(
                f"generation: {st.done} completions ({st.cached} from cache), {st.retries} retries, "
                f"first result after {elapsed:.1f}s"
            )
        if self.verdict is not None:
            self.verdict.render(tw)
        elif getattr(self, "baseline_note", None):
            tw.write_line(f"note: {self.baseline_note}")
        if self.saved_baseline:
            tw.write_line(f"baseline saved: {self.saved_baseline}", green=True)
        elif getattr(self, "save_error", None):
            tw.write_line(f"baseline NOT saved: {self.save_error}", red=True)
        if self.run_dir is not None:
            tw.write_line(f"run folder: {self.run_dir}")
        if self.report_path is not None:
            tw.write_line(f"HTML report: {self.report_path}")

    def _estimate(self, items: list[pytest.Item]) -> None:
        per: dict[str, list[int]] = {}
        for it in items:
            if not _is_eval_item(it):
                continue
            try:
                model, req = self.request_for(it)
            except LLMEvalError:
                continue
            chars = sum(len(c) for _, c in req.messages)
            max_t = int(req.param_dict.get("max_tokens", 256))
            row = per.setdefault(model, [0, 0, 0])
            row[0] += 1
            row[1] += chars // 4 + 8
            row[2] += max_t
        self.estimate_lines.append("llmeval cost estimate (prompt tokens ~ chars/4; completion = max_tokens bound):")
        for model, (n, pt, ct) in per.items():
            cost = self.spec(model).cost(pt, ct)
            self.estimate_lines.append(
                f"  {model}: {n} items, ~{pt} prompt tokens, <= {ct} completion tokens, <= ${cost:.4f}"
            )


def load_dotenv(path: Path) -> list[str]:
    """Set variables from a ``.env`` file that the environment does not already set.

    ``KEY=value`` lines, ``#`` comments, optional ``export`` and quotes. Values
    are registered as secrets so that they are scrubbed from every output.
    Returns the names it set.
    """
    from .redact import register_secret

    if not path.is_file():
        return []
    set_names = []
    for raw in path.read_text(encoding="utf-8-sig").splitlines():
        line = raw.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.removeprefix("export ").partition("=")
        key, value = key.strip(), value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        if not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", key) or not value:
            continue
        register_secret(value)
        if key not in os.environ:
            os.environ[key] = value
            set_names.append(key)
    return set_names


def _is_eval_item(item: pytest.Item) -> bool:
    cs = getattr(item, "callspec", None)
    return cs is not None and "case" in cs.params and "model" in cs.params


def _test_name(nodeid: str) -> str:
    return nodeid.split("[", 1)[0]


def _short_error(report: pytest.TestReport) -> str:
    lr = report.longrepr
    if lr is None:
        return ""
    if isinstance(lr, tuple):  # skipped: (path, line, reason)
        return str(lr[2])
    crash = getattr(lr, "reprcrash", None)
    if crash is not None:
        return str(crash.message)
    return str(lr)[-2000:]


def _summary_line(a: Aggregate) -> str:
    extra = f", {a.errors} errors" if a.errors else ""
    extra += f", {a.skipped} skipped" if a.skipped else ""
    return (
        f"{safe_terminal(a.test)} [{safe_terminal(a.model)}]: n={a.n} pass rate {a.pass_rate:.1%} "
        f"({a.passed} passed, {a.failed} failed{extra})"
    )


def list_models_main(config: pytest.Config, session: pytest.Session) -> int:
    """``pytest --list-models``: every configured model, its type and whether it can run here."""
    llm: LLMEvalSession = config.stash[SESSION_KEY]
    tr = config.pluginmanager.get_plugin("terminalreporter")
    write = tr.write_line if tr is not None else (lambda s, **k: print(s))
    try:
        specs = llm.specs()
    except pytest.UsageError as e:
        write(f"ERROR: {e}", red=True)
        return pytest.ExitCode.USAGE_ERROR
    write(f"models in {llm.models_file()}:")
    width = max(len(n) for n in specs)
    for name, spec in specs.items():
        ok, why = spec.availability()
        status = "ready" if ok else why
        write(f"  {name:<{width}}  {spec.type:<12} {status}", green=ok, yellow=not ok)
    return 0


