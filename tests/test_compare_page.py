"""``llmeval compare``'s review page, from two real runs against a loopback OpenAI-wire server.

The second run answers some cases with markup that would run if it were not
escaped; the page is opened in headless Chromium (the DevTools helper of
``test_report.py``), its flipped cases and filters are checked, and the payloads'
global flag must stay unset.
"""

from __future__ import annotations

import html.parser
import json
import sqlite3
from pathlib import Path

import pytest
from _fake_openai import FakeOpenAIServer, answer, write_suite
from _runs import record_runs

from pytest_llmeval.cli import main

XSS_SCRIPT = "<script>window.__pwned = 1</script>"
XSS_IMG = '<img src=x onerror="window.__pwned = 2">'
# (case id, prompt word): the expected answer is the word; what each run answers is below.
CASES = [("a", "a"), ("b", "b"), ("c", "c"), ("d", "d"), ("e", "e"), ("f", "f")]
BASELINE_ANSWERS = {"d": "nope", "e": "nope", "f": "nope"}  # a, b, c pass
CURRENT_ANSWERS = {"b": XSS_SCRIPT, "c": XSS_IMG, "e": "boom", "f": "nope"}  # a, d pass; e errors
FLIPS = {"b": "pass-fail", "c": "pass-fail", "d": "fail-pass", "e": "other"}

EVAL_TEST = """\
from pytest_llmeval import dataset, scorers


@dataset("cases.jsonl", max_tokens=16)
def test_answer(case, completion):
    if completion.text == "boom":
        raise RuntimeError("the test broke on " + completion.text)
    scorers.record(scorers.Score("echo_note", 1.0, explanation="the model said: " + completion.text))
    scorers.exact_match(completion.text, case["expected"])
"""


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Two real runs of one suite in one metrics database: the baseline, then the current run."""
    root = tmp_path_factory.mktemp("compare")
    with FakeOpenAIServer() as srv:
        write_suite(root, srv.base_url, CASES)
        (root / "test_evals.py").write_text(EVAL_TEST)
        return record_runs(
            root,
            srv,
            [answer(lambda w, answers=a: answers.get(w, w)) for a in (BASELINE_ANSWERS, CURRENT_ANSWERS)],
        )


def _compare(runs: dict, *extra: str) -> int:
    return main(["--db", runs["db"], "compare", "--baseline", runs["base"], "--current", runs["cur"], *extra])


class _Elements(html.parser.HTMLParser):
    """Every start tag of a document with its attributes."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))


def test_page_beside_the_current_run(runs: dict, capsys: pytest.CaptureFixture[str]) -> None:
    assert _compare(runs) == 0
    out, err = capsys.readouterr()
    page = runs["root"] / "data" / "runs" / runs["cur"] / f"compare-{runs['base']}.html"
    assert err.strip() == f"review page: {page}"
    assert "changed cases (4):" in out and "    b: passed -> failed" in out  # the terminal table stays

    text = page.read_text(encoding="utf-8")
    parser = _Elements()
    parser.feed(text)
    tags = parser.tags
    assert [t for t, _ in tags if t == "script"] == ["script"]  # ours alone
    assert not [t for t, _ in tags if t in ("img", "link", "iframe")]
    assert not [a for _, a in tags if any(k.startswith("on") for k in a)]
    (csp,) = [
        a["content"] for t, a in tags if t == "meta" and a.get("http-equiv") == "Content-Security-Policy"
    ]
    assert "default-src 'none'" in csp and "script-src 'sha256-" in csp
    rows = {
        a["data-case"]: a["data-change"]
        for t, a in tags
        if t == "tr" and "cmp-case" in (a.get("class") or "")
    }
    assert rows == FLIPS
    assert html.escape(XSS_SCRIPT) in text and html.escape(XSS_IMG) in text
    assert "the model said: " + html.escape(XSS_IMG) in text  # a scorer explanation, escaped
    assert "RuntimeError: the test broke on boom" in text  # the error of the case that now errors

    # --html puts it elsewhere; --no-html writes none; --json keeps stdout pure JSON.
    other = runs["root"] / "pages" / "review.html"
    assert _compare(runs, "--html", str(other), "--json") == 0
    out, err = capsys.readouterr()
    assert json.loads(out)["pairs"][0]["changed"][0]["change"] == "pass-fail"
    assert other.is_file() and err.strip() == f"review page: {other}"
    before = sorted(runs["root"].rglob("*.html"))
    assert _compare(runs, "--no-html") == 0
    assert sorted(runs["root"].rglob("*.html")) == before and capsys.readouterr().err == ""


def test_page_when_the_run_folder_is_gone(
    runs: dict, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "copy" / "metrics.db"
    db.parent.mkdir()
    src = sqlite3.connect(runs["db"])
    src.backup(dst := sqlite3.connect(db))
    dst.execute("UPDATE runs SET run_dir = ?", (str(tmp_path / "elsewhere"),))
    dst.commit()
    src.close()
    dst.close()
    assert main(["--db", str(db), "compare"]) == 0
    page = db.parent / f"compare-{runs['cur']}-vs-{runs['base']}.html"
    assert capsys.readouterr().err.strip() == f"review page: {page}"
    assert page.is_file() and not (tmp_path / "elsewhere").exists()


@pytest.mark.slow
def test_page_in_headless_chromium(runs: dict, tmp_path: Path) -> None:
    from test_report import CHROMIUM, _Browser

    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is missing (install it with: apt-get install -y chromium)")
    page_path = tmp_path / "compare.html"
    assert _compare(runs, "--html", str(page_path)) == 0
    with _Browser(tmp_path) as browser:
        page = browser.open(page_path.as_uri())
        facts = page.eval(_PAGE_FACTS)
        (tmp_path / "compare.png").write_bytes(page.screenshot(1400, 1600))
        assert facts["pwned"] is None and browser.dialogs == []
        assert facts["scripts"] == 1 and facts["injected"] == 0
        assert facts["title"] == f"Run comparison: {runs['cur']} vs {runs['base']}"
        assert facts["rows"] == FLIPS
        assert XSS_SCRIPT in facts["text"] and XSS_IMG in facts["text"]  # shown as text
        assert facts["sides"] == 8  # each changed case: the baseline's and the current run's half
        b = facts["cells"]["b"]
        assert b[0].startswith("passed") and "Output\nb" in b[0] and XSS_SCRIPT in b[1]
        assert "expected 'b'" in b[1] and "the model said: " + XSS_SCRIPT in b[1]  # explanations
        assert facts["count"] == "4 of 4 changed cases shown"
        assert facts["metrics"][0][:4] == ["pass_rate", "0.500", "0.333", "-0.167"]

        filtered = page.eval(_FILTERS)
        assert filtered["pass-fail"] == {"rows": ["b", "c"], "count": "2 of 4 changed cases shown"}
        assert filtered["fail-pass"] == {"rows": ["d"], "count": "1 of 4 changed cases shown"}
        assert filtered["other"] == {"rows": ["e"], "count": "1 of 4 changed cases shown"}
        assert filtered["all"]["rows"] == sorted(FLIPS)
        assert filtered["reset"]["rows"] == sorted(FLIPS)
        page.eval(_CHOOSE_PASS_FAIL)
        (tmp_path / "compare-pass-fail.png").write_bytes(page.screenshot(1400, 1200))
        assert page.eval("window.__pwned === undefined") is True and browser.dialogs == []
    for name in ("compare.png", "compare-pass-fail.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


_PAGE_FACTS = """
(() => {
  const q = (s) => [...document.querySelectorAll(s)];
  const cells = {};
  for (const tr of q('tr.cmp-case')) {
    cells[tr.getAttribute('data-case')] = [...tr.querySelectorAll('.cmp-side')].map((d) => d.innerText);
  }
  return {
    title: document.title,
    pwned: window.__pwned === undefined ? null : window.__pwned,
    scripts: document.scripts.length,
    injected: q('img, iframe, [onerror], [onload]').length,
    text: document.body.innerText,
    rows: Object.fromEntries(q('tr.cmp-case').map((tr) => [tr.getAttribute('data-case'), tr.getAttribute('data-change')])),
    sides: q('tr.cmp-case .cmp-side').length,
    cells,
    count: document.getElementById('cmp-count').textContent,
    metrics: q('table.cmp-metrics tr').slice(1).map((tr) => [...tr.cells].map((td) => td.textContent)),
  };
})()
"""

_FILTERS = """
(async () => {
  const tick = () => new Promise((r) => setTimeout(r, 30));
  const state = () => ({
    rows: [...document.querySelectorAll('tr.cmp-case')]
      .filter((tr) => getComputedStyle(tr).display !== 'none')
      .map((tr) => tr.getAttribute('data-case')).sort(),
    count: document.getElementById('cmp-count').textContent,
  });
  const choose = async (value) => {
    const sel = document.getElementById('cmp-filter-change');
    sel.value = value;
    sel.dispatchEvent(new Event('change'));
    await tick();
  };
  const out = {};
  for (const v of ['pass-fail', 'fail-pass', 'other']) {
    await choose(v);
    out[v] = state();
  }
  await choose('');
  out.all = state();
  await choose('pass-fail');
  document.getElementById('cmp-filter-reset').click();
  await tick();
  out.reset = state();
  return out;
})()
"""

_CHOOSE_PASS_FAIL = """
(() => {
  const sel = document.getElementById('cmp-filter-change');
  sel.value = 'pass-fail';
  sel.dispatchEvent(new Event('change'));
  return true;
})()
"""
