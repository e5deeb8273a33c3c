"""The HTML report: escaping, columns, details, summary, charts, filters, and the default report path.

The acceptance test runs a real pytest (subprocess) against a loopback OpenAI-compatible
server that answers with markup and a secret, then opens the report in headless
Chromium over the DevTools protocol and checks that nothing from a model ran.
"""

from __future__ import annotations

import base64
import contextlib
import html as html_lib
import json
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from fakes import FakeOpenAIServer

from pytest_llmeval import gate
from pytest_llmeval.outcome import RunOutcome
from pytest_llmeval.report import (
    FOLD_CHARS,
    bar_chart,
    esc,
    fold,
    render_details,
    render_summary,
    row_cells,
    side_by_side,
)
from pytest_llmeval.results import CaseResult, aggregate

CHROMIUM = Path("/usr/bin/chromium")
REPO = Path(__file__).resolve().parents[1]

XSS_SCRIPT = "<script>document.title='pwned';alert(1)</script>"
XSS_IMG = "<img src=x onerror=\"document.title='pwned'\">"
SECRET = "sk-abcdefghijklmnop1234567890"


def _hostile_record(model: str = "m<marquee>", **kw: Any) -> CaseResult:
    base = dict(
        nodeid=f"t.py::test_x[{model}-c1]",
        test="t.py::test_x",
        model=model,
        case_id="c1<blink>",
        tags=["easy", "<svg onload=alert(1)>"],
        outcome="failed",
        scores=[
            {"name": "exact_match", "value": 0.0, "threshold": 1.0, "passed": False, "explanation": XSS_IMG},
            {
                "name": "judge",
                "value": 1.0,
                "threshold": None,
                "passed": True,
                "explanation": "because " + XSS_SCRIPT,
            },
        ],
        latency_s=0.25,
        prompt_tokens=7,
        completion_tokens=3,
        error=f"AssertionError: {XSS_SCRIPT} key {SECRET}",
        output=XSS_SCRIPT + " " + SECRET,
        messages=[{"role": "user", "content": XSS_IMG}],
        expected={"answer": XSS_IMG},
    )
    base.update(kw)
    return CaseResult(**base)


def _assert_inert(html: str) -> None:
    low = html.lower()
    for raw in ("<script", "<img", "<svg onload", "<marquee", "<blink"):
        assert raw not in low, raw
    assert SECRET not in html


# -- pieces, without a browser ---------------------------------------------------------
def test_esc_escapes_markup_and_quotes_and_redacts():
    assert esc("<a href='x'>\"&") == "&lt;a href=&#x27;x&#x27;&gt;&quot;&amp;"
    assert SECRET not in esc(f"key={SECRET}")
    assert esc(None) == ""


def test_details_show_everything_escaped():
    html = render_details(_hostile_record())
    _assert_inert(html)
    assert "&lt;script&gt;document.title=&#x27;pwned&#x27;;alert(1)&lt;/script&gt;" in html
    assert "Judge reasoning (judge)" in html
    assert "<h4>Error</h4>" in html and "<h4>Expected</h4>" in html and "Prompt (1 message)" in html
    assert "[REDACTED]" in html


def test_row_cells_escape_and_carry_filter_attributes():
    cells = row_cells(_hostile_record())
    html = "".join(cells)
    _assert_inert(html)
    assert len(cells) == 9
    assert 'data-llm-model="m&lt;marquee&gt;"' in cells[0]
    assert 'data-llm-outcome="failed"' in cells[0]
    tags = json.loads(html_lib.unescape(cells[0].split('data-llm-tags="')[1].split('"')[0]))
    assert tags == ["easy", "<svg onload=alert(1)>"]


def test_long_text_folds():
    assert fold("short").startswith("<pre")
    long = "x" * (FOLD_CHARS + 1)
    out = fold(long)
    assert out.startswith('<details class="llm-fold">') and f"({len(long)} chars, 1 lines)" in out
    assert fold("a\n" * 20).startswith("<details")


def test_bar_chart_is_inline_svg_with_one_bar_per_value():
    svg = bar_chart("c", "t<x>", [("m<1>", [("pass rate", 0.5, "50%"), ("mean main score", None, "–")])], 1.0)
    assert svg.startswith("<svg") and svg.count('class="llm-bar"') == 2
    assert "m&lt;1&gt;" in svg and "<x>" not in svg
    assert 'width="190.0"' in svg  # half of the 380 px bar area
    assert svg.count("<rect") == 4 and "<script" not in svg  # 2 bars + 2 legend keys


def test_side_by_side_needs_two_models():
    a = _hostile_record("a", nodeid="t.py::test_x[a-c1]")
    b = _hostile_record("b", nodeid="t.py::test_x[b-c1]", outcome="passed", output="fine")
    assert side_by_side({a.nodeid: a}) == ""
    html = side_by_side({a.nodeid: a, b.nodeid: b})
    _assert_inert(html)
    assert html.count('class="llm-sbs-row') == 1 and "<th>a</th><th>b</th>" in html


def test_summary_shows_aggregates_gate_judge_agreement_charts_filters():
    recs = [_hostile_record(m, nodeid=f"t.py::test_x[{m}-c1]") for m in ("a", "b<script>")]
    results = {r.nodeid: r for r in recs}
    aggs = aggregate(recs)
    entries = {"t.py::test_x": {"a": {"pass_rate": 1.0, "cases": {"c1<blink>": {"passed": True}}}}}
    verdict = gate.compare(
        entries, aggs, tolerances=[gate.parse_tolerance("pass_rate:-0.1")], floors=[], mode="strict"
    )
    outcome = RunOutcome(
        run_id="r",
        started=0.0,
        ended=1.0,
        models=("a", "b<script>"),
        model_specs={},
        datasets={},
        records=tuple(results.values()),
        aggregates=tuple(aggs),
        verdict=verdict,
        judge_agreement="kappa 0.8 <marquee>",
    )
    html = render_summary(outcome)
    body = html.split("</style>", 1)[1].rsplit("<script>", 1)[0]  # our own style and script are static
    _assert_inert(body)
    assert 'id="llm-aggregates"' in body and 'id="llm-gate"' in body and "gate FAILED" in body
    assert "kappa 0.8 &lt;marquee&gt;" in body
    assert body.count('class="llm-bar"') == 8  # 2 models x (pass rate, main score, p50, p95)
    assert 'id="llm-filter-model"' in body and '<option value="b&lt;script&gt;">' in body
    assert "Side by side" in body


# -- the default report and its switches (in-process runs) ---------------------------------
CASES = [
    {"id": "easy-001", "tags": ["easy"], "prompt": "hello", "expected": "hello"},
    {"id": "hard-001", "tags": ["hard"], "prompt": "wrong", "expected": "right"},
]


def _blob(report: Path) -> dict[str, Any]:
    """The JSON that pytest-html renders its results table from."""
    text = report.read_text(encoding="utf-8")
    return json.loads(html_lib.unescape(text.split('data-jsonblob="', 1)[1].split('"', 1)[0]))


def _reports(root: Path) -> list[Path]:
    return sorted(root.rglob("*.html"))


def test_default_report_in_run_folder_and_switches(eval_project):
    p = eval_project(CASES)
    result = p.runpytest("--model", "fake")
    [report] = _reports(p.path / "runs")
    assert report.name == "report.html"
    result.stdout.fnmatch_lines([f"HTML report: {report}"])
    text = report.read_text(encoding="utf-8")
    assert 'id="llmeval-summary"' in text and 'data-column-type="model"' in text
    assert "<style" in text and 'rel="stylesheet"' not in text  # self-contained
    assert not (report.parent / "assets").exists()

    for switch in ("--no-llmeval-report", "--no-metrics"):
        before = _reports(p.path)
        result = p.runpytest("--model", "fake", switch)
        assert _reports(p.path) == before, switch
        assert "HTML report:" not in result.stdout.str()

    result = p.runpytest("--model", "fake", "--html", "mine/r.html")
    assert _reports(p.path) == sorted([report, p.path / "mine" / "r.html"])
    result.stdout.fnmatch_lines([f"HTML report: {p.path / 'mine' / 'r.html'}"])
    assert 'data-column-type="model"' in (p.path / "mine" / "r.html").read_text(encoding="utf-8")


def test_no_report_without_eval_items(eval_project):
    p = eval_project(CASES, test_body="def test_plain():\n    pass\n")
    result = p.runpytest("--model", "fake")
    result.assert_outcomes(passed=1)
    assert _reports(p.path) == []
    assert "HTML report:" not in result.stdout.str()


def test_plain_html_report_keeps_its_columns_and_gets_escaped_test_ids(pytester: pytest.Pytester):
    pytester.makepyfile(
        "import pytest\n\n"
        "@pytest.mark.parametrize('v', ['<img src=x onerror=alert(1)>'])\n"
        "def test_p(v):\n    pass\n"
    )
    pytester.runpytest("--html", "r.html").assert_outcomes(passed=1)
    text = (pytester.path / "r.html").read_text(encoding="utf-8")
    assert 'data-column-type="model"' not in text  # no model selected: no eval columns
    [row] = [t for runs in _blob(pytester.path / "r.html")["tests"].values() for t in runs]
    cells = "".join(row["resultsTableRow"])
    assert "<img" not in cells and "test_p[&lt;img src=x onerror=alert(1)&gt;]" in cells


@pytest.mark.slow
def test_report_with_xdist(eval_project):
    p = eval_project(CASES)
    p.runpytest("--model", "fake", "-n", "2")
    [report] = _reports(p.path / "runs")
    tests = _blob(report)["tests"]
    rows = [t for runs in tests.values() for t in runs]
    assert sum('data-llm-model="fake"' in "".join(t["resultsTableRow"]) for t in rows) == 2
    assert sum('class="llm-detail"' in e["content"] for t in rows for e in t["extras"]) == 2


# -- acceptance: a real run with hostile outputs, opened in headless Chromium ------------------
ANSWERS = {
    "say hi": {"fake-a": "hi", "fake-b": "hello"},
    "xss script": {"*": XSS_SCRIPT},
    "xss img": {"*": XSS_IMG},
    "leak": {"*": f"my key is {SECRET}"},
    "long": {"*": "\n".join(f"line {i} <b>not bold</b>" for i in range(40))},
    "boom": {"*": "<img src=x onerror=alert(2)>"},
}

HOSTILE_CASES = [
    {"id": "x1", "tags": ["easy"], "prompt": "say hi", "expected": "hi"},
    {"id": "x2", "tags": ["hostile"], "prompt": "xss script", "expected": "<b>bold</b>" + XSS_SCRIPT},
    {"id": "x3", "tags": ["hostile", "easy"], "prompt": "xss img", "expected": XSS_IMG},
    {"id": "x4", "tags": ["hard"], "prompt": "leak", "expected": "nothing"},
    {"id": "x5", "tags": ["hard"], "prompt": "long", "expected": "short"},
    {"id": "x6", "tags": ["hard"], "prompt": "boom", "expected": "anything"},
]

HOSTILE_TEST = """
from pytest_llmeval import dataset, scorers

@dataset("cases.jsonl", max_tokens=16)
def test_x(case, completion):
    scorers.record(scorers.Score("judge", 1.0, explanation="judge reasoning: " + completion.text))
    if case["id"] == "x6":
        raise ValueError("broken: " + completion.text)
    scorers.exact_match(completion.text, case["expected"])

def test_plain():
    pass
"""

# A judge calibration file with markup in it: the agreement line quotes what the file says.
HOSTILE_CALIBRATION = {
    "agreement": {
        "exact": 0.5,
        "within_one": 0.9,
        "kappa_quadratic": 0.81,
        "n": "40 <img src=x onerror=alert(3)>",
    },
    "date": "2026-12-02",
}


def _respond(messages: list[dict[str, Any]], body: dict[str, Any]) -> str:
    answers = ANSWERS.get(str(messages[-1]["content"]), {})
    return answers.get(body["model"], answers.get("*", "?"))


def _baseline() -> dict[str, Any]:
    cases = {c["id"]: {"passed": True, "score": 1.0, "latency": 0.001} for c in HOSTILE_CASES}
    entry = {
        "n": 6,
        "pass_rate": 1.0,
        "scores": {"exact_match": 1.0},
        "latency_p50": 0.001,
        "latency_p95": 0.001,
        "cost": 0.0,
        "errors": 0,
        "cases": cases,
    }
    return {
        "format": gate.FORMAT,
        "version": gate.VERSION,
        "metadata": {},
        "entries": {"test_evals.py::test_x": {"a": entry, "b": entry}},
    }


@pytest.mark.slow
def test_hostile_outputs_render_inert_in_headless_chromium(pytester: pytest.Pytester, tmp_path: Path):
    with FakeOpenAIServer(_respond) as srv:
        pytester.makefile(
            ".yaml",
            models=(
                "models:\n"
                f"  a: {{type: openai, model: fake-a, base_url: {srv.base_url}}}\n"
                f"  b: {{type: openai, model: fake-b, base_url: {srv.base_url}}}\n"
            ),
        )
        pytester.path.joinpath("cases.jsonl").write_text(
            "\n".join(json.dumps(c) for c in HOSTILE_CASES) + "\n"
        )
        pytester.path.joinpath("baseline.json").write_text(json.dumps(_baseline()))
        pytester.makepyfile(test_evals=HOSTILE_TEST)
        (pytester.path / "data").mkdir()
        (pytester.path / "data" / "judge_calibration-smollm2.json").write_text(
            json.dumps(HOSTILE_CALIBRATION)
        )
        out = pytester.path / "out"
        result = pytester.runpytest_subprocess(
            "--model",
            "a",
            "--model",
            "b",
            "--models-file",
            "models.yaml",
            "--cache",
            "off",
            "--output",
            str(out),
            "--baseline",
            "baseline.json",
            "-p",
            "no:randomly",
        )
    report = out / "report.html"
    result.stdout.fnmatch_lines([f"HTML report: {report}"])
    html = report.read_text(encoding="utf-8")
    assert SECRET not in html
    for raw in ("<script>document", "<img src=x", "<b>bold</b>", "<b>not bold</b>"):
        assert raw not in html, raw

    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is missing (install it with: apt-get install -y chromium)")
    with _Browser(tmp_path) as browser:
        page = browser.open(report.as_uri())
        r = page.eval(_PAGE_FACTS)
        assert r["title"] != "pwned" and r["title"].startswith("LLM eval report")
        assert browser.dialogs == [], browser.dialogs
        assert r["injectedImgs"] == 0 and r["pwnedScripts"] == 0
        assert XSS_SCRIPT in r["text"] and XSS_IMG in r["text"]  # shown as text
        assert "kappa 0.81" in r["text"] and "(n=40 <img src=x onerror=alert(3)>, " in r["text"]
        assert SECRET not in r["html"] and "my key is [REDACTED]" in r["text"]
        assert r["aggregateRows"] == 2 and r["gateRows"] >= 2
        assert r["qualityBars"] == 4 and r["latencyBars"] == 4 and r["wideBars"] >= 2
        assert r["sideBySideRows"] == 6 and r["sideBySideModels"] == ["a", "b"]
        assert r["rows"] == 13 and r["modelCells"] == 12  # 12 eval items and test_plain
        assert r["foldedOutputs"] >= 2  # the 40-line output, folded
        assert r["environmentHidden"] is True  # pytest-html's environment table starts collapsed
        assert "orange left border" in r["legend"]
        assert (
            "Judge reasoning (judge)" in r["detailsText"]
            and "broken: <img src=x onerror=alert(2)>" in r["detailsText"]
        )

        f = page.eval(_FILTER_CHECKS)
        assert f["modelA"] == {"visible": 6, "models": ["a"]}
        assert f["afterSort"] == {"visible": 6, "models": ["a"]}  # survives pytest-html's re-render
        assert f["tagHostile"] == {"visible": 2, "models": ["a"]}
        assert f["outcomeError"] == {"visible": 2, "models": ["a", "b"]}
        assert f["sideBySideTagged"] == 2
        assert f["reset"]["visible"] == 13
        assert page.eval("document.title") != "pwned" and browser.dialogs == []

        png = page.screenshot(1400, 2000)
        assert png[:8] == b"\x89PNG\r\n\x1a\n"
        try:  # for the human note; data/ is git-ignored
            (REPO / "data").mkdir(exist_ok=True)
            (REPO / "data" / "report_screenshot.png").write_bytes(png)
        except OSError:
            pass


_PAGE_FACTS = """
(() => {
  const q = (s) => document.querySelectorAll(s);
  const bars = [...q('#llm-chart-quality rect.llm-bar')];
  return {
    title: document.title,
    text: document.body.innerText,
    html: document.documentElement.outerHTML,
    injectedImgs: q('img[src="x"], img[onerror], [onerror]').length,
    pwnedScripts: [...document.scripts].filter((s) => s.textContent.includes('pwned')).length,
    aggregateRows: q('#llm-aggregates tr').length - 1,
    gateRows: q('#llm-gate tr').length - 1,
    qualityBars: bars.length,
    latencyBars: q('#llm-chart-latency rect.llm-bar').length,
    wideBars: bars.filter((b) => b.getBBox().width > 50).length,
    sideBySideRows: q('#llm-side-by-side tr.llm-sbs-row').length,
    sideBySideModels: [...q('#llm-side-by-side th')].slice(1).map((t) => t.textContent),
    rows: q('#results-table tbody.results-table-row').length,
    modelCells: q('#results-table td[data-llm-model]').length,
    foldedOutputs: q('details.llm-fold').length,
    detailsText: [...q('.llm-detail')].map((d) => d.textContent).join('\\n'),
    environmentHidden: document.getElementById('environment').classList.contains('hidden'),
    legend: document.querySelector('.llm-legend')?.textContent || '',
  };
})()
"""

_FILTER_CHECKS = """
(async () => {
  const tick = () => new Promise((r) => setTimeout(r, 50));
  const visible = () => {
    const rows = [...document.querySelectorAll('#results-table tbody.results-table-row')]
      .filter((tb) => getComputedStyle(tb).display !== 'none');
    const models = [...new Set(rows.map((tb) => tb.querySelector('td[data-llm-model]')?.textContent))].sort();
    return { visible: rows.length, models };
  };
  const choose = async (name, value) => {
    const sel = document.getElementById('llm-filter-' + name);
    sel.value = value;
    sel.dispatchEvent(new Event('change'));
    await tick();
  };
  const out = {};
  await choose('model', 'a');
  out.modelA = visible();
  document.querySelector('#results-table th[data-column-type="case"]').click();
  await tick();
  out.afterSort = visible();
  await choose('tag', 'hostile');
  out.tagHostile = visible();
  await choose('model', '');
  await choose('tag', '');
  await choose('outcome', 'error');
  out.outcomeError = visible();
  await choose('outcome', '');
  await choose('tag', 'hostile');
  out.sideBySideTagged = [...document.querySelectorAll('tr.llm-sbs-row')]
    .filter((tr) => getComputedStyle(tr).display !== 'none').length;
  document.getElementById('llm-filter-reset').click();
  await tick();
  out.reset = visible();
  return out;
})()
"""


class _Page:
    def __init__(self, browser: _Browser, session_id: str) -> None:
        self.browser = browser
        self.session_id = session_id

    def send(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        return self.browser.send(method, params, self.session_id)

    def eval(self, expression: str) -> Any:
        r = self.send(
            "Runtime.evaluate", {"expression": expression, "returnByValue": True, "awaitPromise": True}
        )
        if "exceptionDetails" in r:
            raise AssertionError(f"page script failed: {r['exceptionDetails']}")
        return r["result"].get("value")

    def screenshot(self, width: int, height: int) -> bytes:
        self.send(
            "Emulation.setDeviceMetricsOverride",
            {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False},
        )
        self.eval("window.scrollTo(0, 0)")
        return base64.b64decode(self.send("Page.captureScreenshot", {"format": "png"})["data"])


class _Browser:
    """Headless Chromium driven over the DevTools protocol (flat sessions on the browser socket)."""

    def __init__(self, tmp: Path) -> None:
        self.profile = tmp / "chromium-profile"
        self.proc: subprocess.Popen[bytes] | None = None
        self.ws: Any = None
        self.next_id = 0
        self.dialogs: list[str] = []
        self.events: list[dict[str, Any]] = []
        self._stack = contextlib.ExitStack()

    def __enter__(self) -> _Browser:
        from websockets.sync.client import connect

        self.profile.mkdir()
        self.proc = subprocess.Popen(
            [
                str(CHROMIUM),
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--no-first-run",
                "--disable-component-update",
                "--disable-sync",
                "--hide-scrollbars",
                f"--user-data-dir={self.profile}",
                "--remote-debugging-address=127.0.0.1",
                "--remote-debugging-port=0",
                "about:blank",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        port_file = self.profile / "DevToolsActivePort"
        deadline = time.monotonic() + 30
        while not (port_file.exists() and len(port_file.read_text().splitlines()) >= 2):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("headless chromium did not start")
            time.sleep(0.05)
        port, path = port_file.read_text().splitlines()[:2]
        self.ws = self._stack.enter_context(
            connect(f"ws://127.0.0.1:{port}{path}", max_size=None, open_timeout=10)
        )
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stack.close()
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def send(
        self, method: str, params: dict[str, Any] | None = None, session_id: str | None = None
    ) -> dict[str, Any]:
        self.next_id += 1
        msg_id = self.next_id
        msg: dict[str, Any] = {"id": msg_id, "method": method, "params": params or {}}
        if session_id:
            msg["sessionId"] = session_id
        self.ws.send(json.dumps(msg))
        deadline = time.monotonic() + 30
        while True:
            m = json.loads(self.ws.recv(timeout=max(0.1, deadline - time.monotonic())))
            if m.get("id") == msg_id:
                if "error" in m:
                    raise RuntimeError(f"{method}: {m['error']}")
                return m.get("result", {})
            self._event(m)

    def _event(self, m: dict[str, Any]) -> None:
        self.events.append(m)
        if m.get("method") == "Page.javascriptDialogOpening":
            # A dialog means a model's markup ran; record it and dismiss it so the page goes on.
            self.dialogs.append(str(m["params"].get("message")))
            self.next_id += 1
            self.ws.send(
                json.dumps(
                    {
                        "id": self.next_id,
                        "method": "Page.handleJavaScriptDialog",
                        "params": {"accept": True},
                        "sessionId": m.get("sessionId"),
                    }
                )
            )

    def open(self, url: str) -> _Page:
        target = self.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        session_id = self.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        page = _Page(self, session_id)
        page.send("Page.enable")
        page.send("Runtime.enable")
        seen = len(self.events)
        page.send("Page.navigate", {"url": url})
        deadline = time.monotonic() + 30
        while not any(e.get("method") == "Page.loadEventFired" for e in self.events[seen:]):
            if time.monotonic() > deadline:
                raise AssertionError("the report did not finish loading")
            self._event(json.loads(self.ws.recv(timeout=max(0.1, deadline - time.monotonic()))))
        page.eval("new Promise((r) => setTimeout(r, 100))")  # let DOMContentLoaded handlers settle
        return page
