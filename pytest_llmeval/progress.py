"""Generation progress that cooperates with pytest's own output.

On a terminal, one status line is drawn in place after pytest's progress dots while an
item waits for its completion, and erased before pytest writes anything (cursor left,
then erase to the end of the line; pytest's line and its width count are untouched). In
a log (not a terminal), a line at most every ``llmeval_progress_every`` seconds (30 by
default). Neither makes pytest print the test file's name again: a line of the plugin's
keeps pytest's current file, and the dots go on under it.

What a model does before its first token (converting the embedded model, loading
weights) is announced with :func:`announce` from any thread; the status line and the
log line show it. Without a pytest session listening, an announcement goes to stderr.

``llmeval_progress`` (ini): ``auto`` (a terminal when pytest writes to one), ``terminal``,
``log`` or ``off``.
"""

from __future__ import annotations

import contextlib
import functools
import os
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

MODES = ("auto", "terminal", "log", "off")
TICK_S = 1.0  # how often a waiting item looks at the progress (a cheap check)

_lock = threading.Lock()
_activities: dict[str, tuple[str, float]] = {}  # topic -> (text, since): what models are doing now
_listeners: list[Progress] = []


def announce(topic: str, text: str | None, echo: bool = True) -> None:
    """Say what ``topic`` (e.g. ``load:smollm2``) is doing now; ``None`` when it is done.

    Shown by the running session's progress; with no session listening, printed to stderr
    when ``echo`` (the embedded model's conversion, as before there were sessions to show it).
    """
    with _lock:
        old = _activities.pop(topic, None)
        if text is not None:  # the latest one last; a bar's update keeps its phase's start
            _activities[topic] = (text, old[1] if old else time.monotonic())
        listening = bool(_listeners)
    if text is not None and echo and not listening:
        print(f"[llmeval] {text}", file=sys.stderr, flush=True)


class _StatusFile:
    """A file for tqdm: the latest state of its bar becomes ``topic``'s announced activity."""

    def __init__(self, topic: str, label: str) -> None:
        self.topic, self.label = topic, label

    def write(self, data: str) -> int:
        parts = [x.strip() for x in data.replace("\n", "\r").split("\r")]
        text = next((x for x in reversed(parts) if x), "")
        if text:
            announce(self.topic, f"{self.label}: {text}", echo=False)
        return len(data)

    def flush(self) -> None:
        pass


@contextlib.contextmanager
def bars_to_status(topic: str, label: str) -> Iterator[None]:
    """transformers' progress bars (loading, writing, the GGUF conversion) on the status line.

    Without this they go to stderr, which pytest captures into the first item's report, and
    nobody sees them without ``-s``. With no session listening, the bars are left alone.
    """
    with _lock:
        listening = bool(_listeners)
    try:
        import transformers.utils.logging as tlog
    except ImportError:
        listening = False
    if not listening or not hasattr(tlog, "set_tqdm_hook"):
        yield
        return
    fmt = {"bar_format": "{desc} {n_fmt}/{total_fmt}"}

    def hook(factory: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        return factory(*args, **{**kwargs, **fmt, "file": _StatusFile(topic, label)})

    previous = tlog.set_tqdm_hook(hook)
    gguf: Any = None
    with contextlib.suppress(ImportError):  # its conversion bar is tqdm.auto's own, not transformers'
        import transformers.modeling_gguf_pytorch_utils as gguf
    own = getattr(gguf, "tqdm", None)
    if own is not None:
        gguf.tqdm = functools.partial(own, **fmt, file=_StatusFile(topic, label))
    try:
        yield
    finally:
        tlog.set_tqdm_hook(previous)
        if own is not None:
            gguf.tqdm = own


def _latest_text() -> str | None:
    with _lock:
        return list(_activities.values())[-1][0] if _activities else None


def current_activity() -> str | None:
    """The latest announced activity with how long it has run, e.g. ``loading smollm2 (12s)``."""
    with _lock:
        if not _activities:
            return None
        text, since = list(_activities.values())[-1]
    return f"{text} ({time.monotonic() - since:.0f}s)"


def configured_mode(config: pytest.Config, is_worker: bool) -> str:
    """The ini key's mode, ``off`` for an xdist worker or ``-q``; a bad value is a usage error."""
    raw = str(config.getini("llmeval_progress") or "auto").strip().lower()
    if raw not in MODES:
        raise pytest.UsageError(f"ini key llmeval_progress: expected one of {', '.join(MODES)}, got {raw!r}")
    return "off" if is_worker or config.get_verbosity() < 0 else raw


def resolve_mode(config: pytest.Config, mode: str) -> str:
    """``terminal``, ``log`` or ``off``: ``auto`` asks the terminal reporter (which exists once pytest is
    configured) whether it writes to a terminal."""
    if mode != "auto":
        return mode
    tr = config.pluginmanager.get_plugin("terminalreporter")
    if tr is None:
        return "off"
    tty = bool(tr.isatty()) and os.environ.get("TERM", "") != "dumb"
    return "terminal" if tty else "log"


class Progress:
    """The run's progress: a status line in place on a terminal, a line now and then in a log."""

    def __init__(self, config: pytest.Config, is_worker: bool) -> None:
        self.config = config
        raw = config.getini("llmeval_progress_every")
        try:
            self.every = max(0.1, float(raw))
        except ValueError:
            raise pytest.UsageError(
                f"ini key llmeval_progress_every: expected seconds, got {raw!r}"
            ) from None
        self._mode = configured_mode(config, is_worker)
        self.tick_s = min(TICK_S, self.every)
        self._shown = 0  # characters of the status line drawn after pytest's line (terminal)
        self._last_line = time.monotonic()  # the first log line comes after one interval
        self._last_key: tuple[int, str | None] = (-1, None)
        if self._mode != "off":
            with _lock:
                _listeners.append(self)
            config.pluginmanager.register(self, "llmeval-progress")

    @property
    def mode(self) -> str:
        """``terminal``, ``log`` or ``off`` (decided on first use: the terminal reporter comes after us)."""
        if self._mode == "auto":
            self._mode = resolve_mode(self.config, self._mode)
        return self._mode

    # -- called by generation ------------------------------------------------------------------
    def tick(self, stats: Any, waiting: bool = True) -> None:
        """A waiting item's periodic look: update the status line, or write a log line when due."""
        if self.mode == "off" or stats is None:
            return
        text = status_text(stats)
        if self.mode == "terminal":
            if waiting:
                self._draw(text)
            return
        now = time.monotonic()
        if now - self._last_line < self.every or (not waiting and stats.done >= stats.submitted):
            return
        key = (stats.done, _latest_text())
        if key == self._last_key and now - self._last_line < max(60.0, self.every):
            return  # nothing new: a line a minute while a long batch runs
        self._last_line, self._last_key = now, key
        from .console import write_line

        write_line(self.config, text, cyan=True)

    # -- the terminal's status line ------------------------------------------------------------
    def _writer(self) -> Any:
        tr = self.config.pluginmanager.get_plugin("terminalreporter")
        return getattr(tr, "_tw", None)

    def _raw(self, data: str) -> None:
        """Bytes for the terminal that pytest's writer does not count (its line width stays right)."""
        tw = self._writer()
        f = getattr(tw, "_file", None)
        if f is None:
            return
        capman = self.config.pluginmanager.get_plugin("capturemanager")
        with capman.global_and_fixture_disabled() if capman is not None else contextlib.nullcontext():
            f.write(data)
            f.flush()

    def _draw(self, text: str) -> None:
        tw = self._writer()
        if tw is None:
            return
        room = tw.fullwidth - tw.width_of_current_line - 2
        if room < 12:
            return
        shown = " " + text.encode("ascii", "replace").decode()[:room]
        self._raw("\x1b[K" + shown + f"\x1b[{len(shown)}D")  # cursor back where pytest left it
        self._shown = len(shown)

    def clear(self) -> None:
        """Erase the status line before anything else is written."""
        if self._shown:
            self._shown = 0
            self._raw("\x1b[K")

    # -- pytest writes: the status line goes first ---------------------------------------------
    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_logstart(self) -> None:
        self.clear()

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_logreport(self) -> None:
        self.clear()

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_logfinish(self) -> None:
        self.clear()

    @pytest.hookimpl(tryfirst=True)
    def pytest_sessionfinish(self) -> None:
        self.clear()

    def pytest_unconfigure(self) -> None:
        with _lock:
            if self in _listeners:
                _listeners.remove(self)


def status_text(stats: Any) -> str:
    """``[llmeval] generated 40/150 (3 cached, 1.2 req/s, ETA 90s) · loading smollm2 (12s)``."""
    elapsed = max(time.monotonic() - stats.started, 1e-6)
    rate = (stats.done - stats.cached) / elapsed
    left = stats.submitted - stats.done
    eta = f", ETA {left / rate:.0f}s" if rate > 0 and left else ""
    text = (
        f"[llmeval] generated {stats.done}/{stats.submitted} ({stats.cached} cached, {rate:.1f} req/s{eta})"
    )
    activity = current_activity()
    return text + (f" · {activity}" if activity else "")


def keep_header_line(config: pytest.Config, line: str, **markup: bool) -> bool:
    """Write ``line`` below pytest's progress dots without making pytest repeat the file name.

    pytest prints a file's name again whenever something else ended its line of dots
    (``ensure_newline`` forgets the current file). Between the dots of one file, the line
    goes on its own line and pytest's current file is kept, so the dots continue below it.
    Returns False where pytest's own way is right (verbose output names every item anyway).
    """
    tr = config.pluginmanager.get_plugin("terminalreporter")
    tw = getattr(tr, "_tw", None)
    if tw is None or not tr.currentfspath or config.get_verbosity("verbosity_test_cases") > 0:
        return False
    progress = config.pluginmanager.get_plugin("llmeval-progress")
    if progress is not None:
        progress.clear()
    if tw.width_of_current_line:
        tw.line()
    tw.line(line, **markup)
    return True
