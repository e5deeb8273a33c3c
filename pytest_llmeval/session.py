"""The plugin's session object: pytest's hooks, each handed to the stage that owns it.

    collection  (collection.py)  dataset -> parametrized items
    generation  (generation.py)  item -> request -> scheduler -> completion
    records     (records.py)     makereport -> CaseResult, collected in the controller
    outcome     (outcome.py)     aggregates, comparisons, gate -> RunOutcome (once, at sessionfinish)
    outputs     summary.py, report.py, store.py, tracing.py: each takes the RunOutcome

Registered by ``plugin.pytest_configure`` under the name ``llmeval-session``.
State lives here and in ``item.stash``, never on ``config._something``.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from .collection import Collection, is_eval_item
from .console import load_dotenv, write_line
from .generation import Generation
from .outcome import GateOptions, GenerationStats, RunOutcome, build_outcome, judge_agreement
from .records import Records
from .selection import ModelSelection

SESSION_KEY = pytest.StashKey["LLMEvalSession"]()


class LLMEvalSession:
    """One pytest run of evals: builds the stages, routes the hooks, builds the outcome once."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.is_worker = hasattr(config, "workerinput")
        self.run_id: str = (
            config.workerinput.get("llmeval_run_id")  # type: ignore[attr-defined]
            if self.is_worker
            else time.strftime("%Y%m%d-%H%M%S") + "-" + uuid.uuid4().hex[:6]
        )
        self.started = time.time()
        load_dotenv(config.rootpath / ".env")
        self.selection = ModelSelection(config, self.is_worker)
        self.collection = Collection(config, self.selection)
        self.generation = Generation(config, self.selection, self.is_worker)
        self.records = Records(self.is_worker)
        from .repeats import GreedyNote, repeat_policy

        self.records.repeat_policy = repeat_policy(config)
        if not self.is_worker:
            self.records.subscribe(GreedyNote(config))
        self.shard = config.getoption("llmeval_shard", None)  # shards.Shard, from --shard K/N
        self.shard_dropped = 0  # items this shard left to the others
        if self.shard is not None:
            from .shards import check_options

            check_options(config)
        self.current_item: pytest.Item | None = None  # what the model, case and completion fixtures read
        self.estimate_lines: list[str] = []
        self.store: Any = None  # the metrics store and run folder writer (controller only)
        self.tracer: Any = None
        self.html: Any = None  # report.HtmlReport, when pytest-html is installed
        self.outcome: RunOutcome | None = None
        self.pytest_session: pytest.Session | None = None
        self.worker_stats: list[dict[str, Any]] = []  # xdist: each worker's generation counters
        self.worker_judges: list[list[dict[str, Any]]] = []  # xdist: the judges each worker used
        if not config.getoption("list_models"):
            if self.selection.explicit:
                self.selection.validate(check_runnable=not self.is_worker)
            elif config.getoption("models_file"):
                self.selection.specs()  # a file named on the command line is checked at once

    @property
    def selected(self) -> list[str]:
        return self.selection.selected

    # -- collection ---------------------------------------------------------------------------
    def pytest_generate_tests(self, metafunc: pytest.Metafunc) -> None:
        self.collection.generate_tests(metafunc)

    @pytest.hookimpl(trylast=True)  # after -k / -m, so that an item is reported deselected once
    def pytest_collection_modifyitems(self, config: pytest.Config, items: list[pytest.Item]) -> None:
        if self.shard is not None:
            from .shards import select

            kept, dropped = select(items, self.shard)
            self.shard_dropped += len(dropped)
            if dropped:
                config.hook.pytest_deselected(items=dropped)
                items[:] = kept

    def pytest_collection_finish(self, session: pytest.Session) -> None:
        self.generation.items = session.items
        if self.config.getoption("estimate_cost"):
            self.estimate_lines = self.generation.estimate(session.items)
        if not self.is_worker and not self._xdist_controller() and not self.config.getoption("collectonly"):
            # Servers only for the models that eval items use: a run without evals starts nothing.
            used = {it.callspec.params["model"] for it in session.items if is_eval_item(it)}  # type: ignore[attr-defined]
            if used:
                self.generation.start_servers(used)
        if not self.is_worker and any("judge" in getattr(it, "fixturenames", ()) for it in session.items):
            self.generation.judge_stage.announce()  # which judge grades, and why, when the header did not say

    def _announce_judge_of(self, rec: Any) -> None:
        # Under xdist the controller collects nothing, so it learns that a test uses the judge
        # from the first judged record a worker sends; it names the judge then, once.
        if not self.generation.judge_stage.announced and any(s.get("name") == "judge" for s in rec.scores):
            self.generation.judge_stage.announce()

    def _xdist_controller(self) -> bool:
        return self.config.pluginmanager.hasplugin("dsession")

    @pytest.hookimpl(tryfirst=True)  # before the terminal's header, which asks pytest_report_header
    def pytest_sessionstart(self, session: pytest.Session) -> None:
        self.pytest_session = session
        if self.is_worker:
            winput = self.config.workerinput  # type: ignore[attr-defined]
            self.selection.server_urls = dict(winput.get("llmeval_server_urls", {}))
            self.selection.server_errors = dict(winput.get("llmeval_server_errors", {}))
            return
        if self.config.getoption("cacheclear", False):
            self.generation.clear_cache()
        if self.config.getoption("collectonly"):
            return
        if self._xdist_controller():
            self.generation.start_servers()  # before the workers start; they get the URLs
            self.records.subscribe(self._announce_judge_of)  # without xdist, collection names the judge
        self._open_outputs()

    def pytest_report_header(self, config: pytest.Config) -> list[str]:
        """The session header: where traces go, when tracing is on; which judge grades, and why."""
        lines = [f"llmeval: {self.tracer.describe()}"] if self.tracer is not None else []
        stage = self.generation.judge_stage
        if not self.is_worker and stage.configured():  # else said after collection, when a test uses it
            try:
                lines.append(stage.header_line())
                stage.announced = True
            except Exception:  # a bad judge is reported by the items that use it
                pass
        return lines

    @pytest.hookimpl(optionalhook=True)
    def pytest_configure_node(self, node: Any) -> None:
        """xdist: hand workers the run id and the URLs of servers the controller started."""
        node.workerinput["llmeval_run_id"] = self.run_id
        node.workerinput["llmeval_server_urls"] = self.selection.server_urls
        node.workerinput["llmeval_server_errors"] = self.selection.server_errors

    @pytest.hookimpl(optionalhook=True)
    def pytest_testnodedown(self, node: Any, error: Any) -> None:
        """xdist: the controller collects nothing; the workers send their dataset hashes and
        generation counters (``config.workeroutput``)."""
        output = getattr(node, "workeroutput", {})
        self.collection.datasets.update(output.get("llmeval_datasets", {}))
        if output.get("llmeval_stats"):
            self.worker_stats.append(output["llmeval_stats"])
        self.worker_judges.append(output.get("llmeval_judges", []))

    def _open_outputs(self) -> None:
        if os.environ.get("ENABLE_OTEL", "").lower() in ("1", "true", "yes") or self.config.getoption("otel"):
            from .console import output_limit
            from .tracing import Tracer

            self.tracer = Tracer.from_env()
            self.tracer.warn = lambda message: write_line(self.config, message, yellow=True)
            self.tracer.text_limit = output_limit(self.config)  # one output bound, in traces too
            self.records.subscribe(self.tracer.item)
        if self.config.getoption("no_metrics"):
            return
        from .store_open import open_run

        self.store = open_run(
            self.config,
            run_id=self.run_id,
            started=self.started,
            models=self.selected,
            model_specs=self._model_specs,
            datasets=self.collection.datasets,
            shard=self.shard,
        )
        self.records.subscribe(self.store.add_result)

    def _model_specs(self) -> dict[str, dict[str, Any]]:
        from .store import scrub

        out: dict[str, dict[str, Any]] = {}
        for spec in self.selection.loaded_specs():
            out[spec.name] = scrub(spec.summary())
        return out

    # -- running ---------------------------------------------------------------------------------
    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_setup(self, item: pytest.Item) -> None:
        self.current_item = item

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_call(self, item: pytest.Item) -> Iterator[None]:
        __tracebackhide__ = True  # a failure of a repeated item is raised here, not in the test body
        with self.records.scoring(item):
            return (yield)

    @pytest.hookimpl(tryfirst=True)
    def pytest_pyfunc_call(self, pyfuncitem: pytest.Function) -> bool | None:
        """With repeats, an eval item's body runs once per sample (repeats.py)."""
        __tracebackhide__ = True
        if not is_eval_item(pyfuncitem):
            return None
        from .repeats import call_samples

        return call_samples(pyfuncitem, self.generation, self.records.repeat_policy)

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_makereport(self, item: pytest.Item, call: pytest.CallInfo[Any]) -> Iterator[Any]:
        report = yield
        self.records.attach(item, report, call)
        if report.failed and is_eval_item(item):  # after attach: the record keeps the full message
            from .failures import compact_report
            from .generation import COMPLETION_KEY

            compact_report(item, report, call, item.stash.get(COMPLETION_KEY, None))
        return report

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if self.is_worker:
            return
        self.records.collect(report)
        session = self.pytest_session
        if session is not None and (session.shouldfail or session.shouldstop):
            self.generation.cancel()

    def pytest_keyboard_interrupt(self, excinfo: Any) -> None:
        self.generation.cancel()

    # -- the end -----------------------------------------------------------------------------------
    @pytest.hookimpl(tryfirst=True)
    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        judges: tuple[Any, ...] = ()
        if not self.is_worker and not session.shouldstop and exitstatus != pytest.ExitCode.INTERRUPTED:
            judges = self.generation.judge_stage.measures(self.worker_judges)  # before the scheduler stops
        self.generation.shutdown()
        if self.is_worker:
            judges_used = self.generation.judge_stage.worker_output()
            self.config.workeroutput["llmeval_judges"] = judges_used  # type: ignore[attr-defined]
            self.config.workeroutput["llmeval_datasets"] = dict(self.collection.datasets)  # type: ignore[attr-defined]
            stats = GenerationStats.of(self.generation.stats())
            if stats is not None:  # the controller sums what its workers generated
                self.config.workeroutput["llmeval_stats"] = stats.as_worker_output()  # type: ignore[attr-defined]
            return
        self.generation.stop_servers()
        config = self.config
        status = int(session.exitstatus)
        if self.shard_dropped and status == pytest.ExitCode.NO_TESTS_COLLECTED:
            status = pytest.ExitCode.OK  # every case of the suite fell to the other shards: not an error
        outcome = build_outcome(
            gate=GateOptions.from_config(config),
            status=status,
            stopped=bool(session.shouldstop),
            run_id=self.run_id,
            started=self.started,
            models=self.selected,
            model_specs=self._model_specs() if self.records.results or self.shard else {},
            datasets=self.collection.datasets,
            records=list(self.records.results.values()),
            judge_note=lambda aggs: judge_agreement(
                config, self.generation.judges_used, aggs, self.selection.specs
            ),
            stats=GenerationStats.total([GenerationStats.of(self.generation.stats()), *self.worker_stats]),
            report_path=self.html.report_path if self.html is not None else None,
            run_dir=self.store.run_dir if self.store is not None else None,
            estimate_lines=self.estimate_lines,
            judges=judges,
        )
        self.outcome = outcome
        self._count_gate(outcome, before=int(session.exitstatus))
        if outcome.exit_status != session.exitstatus:
            session.exitstatus = pytest.ExitCode(outcome.exit_status)
        if self.html is not None:
            self.html.set_outcome(outcome)
        if self.store is not None:
            self.store.finish(outcome)
        if self.tracer is not None:
            self.tracer.shutdown(outcome)
        from .ci_summary import write_ci_summary

        for problem in write_ci_summary(outcome, config.getoption("llmeval_summary", None)):
            write_line(config, problem, yellow=True)

    def _count_gate(self, outcome: RunOutcome, before: int) -> None:
        """The gate's verdict in pytest's final line ("1 gate passed" / "1 gate failed")."""
        tr = self.config.pluginmanager.get_plugin("terminalreporter")
        v = outcome.verdict
        if tr is None or v is None:
            return
        if not v.passed:
            tr.stats.setdefault("gate failed", []).append(v)
        elif before == pytest.ExitCode.TESTS_FAILED:  # failed items, yet the gate passes the run
            tr.stats.setdefault("gate passed", []).append(v)

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if self.is_worker or self.outcome is None:
            return
        from .summary import write_summary

        write_summary(terminalreporter, self.outcome)
