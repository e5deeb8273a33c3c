"""Dataset files (JSONL, YAML, CSV) -> :class:`Case` objects; errors name file:line."""

from __future__ import annotations

import csv
import hashlib
import json
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from .errors import DatasetError

MAX_LINE_BYTES = 4 * 1024 * 1024
_ID_RE = re.compile(r"^[A-Za-z0-9_.:/-]{1,200}$")


@dataclass(frozen=True)
class Case(Mapping[str, Any]):
    """One dataset row. Reads like a dict (``case["expected"]``) and knows where it came from."""

    id: str
    data: dict[str, Any]
    tags: tuple[str, ...] = ()
    source: str = ""

    def __getitem__(self, key: str) -> Any:
        try:
            return self.data[key]
        except KeyError:
            raise KeyError(
                f"case {self.id!r} ({self.source}) has no field {key!r}; fields: {', '.join(self.data)}"
            ) from None

    def __iter__(self) -> Iterator[str]:
        return iter(self.data)

    def __len__(self) -> int:
        return len(self.data)

    def __hash__(self) -> int:
        return hash((self.id, self.source))


@dataclass
class DatasetSpec:
    """What ``@dataset`` records on a test function."""

    path: Path
    prompt: Path | None
    params: dict[str, Any] = field(default_factory=dict)
    main_score: str | None = None


def _check_id(value: Any, where: str) -> str:
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise DatasetError(f"{where}: 'id' must be a string or integer, got {type(value).__name__}")
    sid = str(value)
    if not _ID_RE.match(sid):
        raise DatasetError(
            f"{where}: id {sid!r} may only contain letters, digits and _ . : / - (1-200 characters)"
        )
    return sid


def _tags_of(row: dict[str, Any], where: str) -> tuple[str, ...]:
    tags = row.get("tags", [])
    if isinstance(tags, str):
        tags = [t.strip() for t in tags.split(",") if t.strip()]
    if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
        raise DatasetError(f"{where}: 'tags' must be a list of strings")
    for t in tags:
        if not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", t):
            raise DatasetError(f"{where}: tag {t!r} must be an identifier (letters, digits, _)")
    return tuple(tags)


def _iter_rows(path: Path) -> Iterator[tuple[int, Any]]:
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        with open(path, "rb") as f:
            for lineno, raw in enumerate(f, start=1):
                if len(raw) > MAX_LINE_BYTES:
                    raise DatasetError(
                        f"{path}:{lineno}: line is {len(raw)} bytes, over the {MAX_LINE_BYTES} byte limit"
                    )
                if lineno == 1 and raw.startswith(b"\xef\xbb\xbf"):
                    raw = raw[3:]  # a byte-order mark from an editor; harmless
                try:
                    text = raw.decode("utf-8")
                except UnicodeDecodeError as e:
                    raise DatasetError(
                        f"{path}:{lineno}: not valid UTF-8 ({e.reason} at byte {e.start})"
                    ) from None
                if not text.strip():
                    continue
                try:
                    yield lineno, json.loads(text)
                except json.JSONDecodeError as e:
                    raise DatasetError(f"{path}:{lineno}: invalid JSON: {e.msg} (column {e.colno})") from None
    elif suffix in (".yaml", ".yml"):
        import yaml

        try:
            rows = yaml.safe_load(path.read_text(encoding="utf-8-sig"))
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            line = f":{mark.line + 1}" if mark else ""
            raise DatasetError(f"{path}{line}: invalid YAML: {e}") from None
        if isinstance(rows, dict) and "cases" in rows:
            rows = rows["cases"]
        if not isinstance(rows, list):
            raise DatasetError(f"{path}: expected a list of cases (or a mapping with 'cases')")
        for i, row in enumerate(rows, start=1):
            yield i, row
    elif suffix == ".csv":
        with open(path, newline="", encoding="utf-8-sig") as f:
            for i, row in enumerate(csv.DictReader(f), start=2):
                yield i, dict(row)
    else:
        raise DatasetError(f"{path}: unsupported dataset format {suffix!r} (use .jsonl, .yaml or .csv)")


def load_cases(path: str | Path) -> list[Case]:
    """Load every case of a dataset file, failing on the first bad row with file:line."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"dataset file {path} does not exist")
    cases: list[Case] = []
    seen: dict[str, str] = {}
    for lineno, row in _iter_rows(path):
        where = f"{path}:{lineno}"
        if not isinstance(row, dict):
            raise DatasetError(f"{where}: a case must be an object, got {type(row).__name__}")
        cid = _check_id(row["id"], where) if "id" in row else f"line{lineno}"
        if cid in seen:
            raise DatasetError(f"{where}: duplicate id {cid!r} (first at {seen[cid]})")
        seen[cid] = where
        tags = _tags_of(row, where)
        data = {k: v for k, v in row.items()}
        cases.append(Case(id=cid, data=data, tags=tags, source=where))
    return cases


def file_hash(path: str | Path) -> str:
    """sha256 of a file's bytes (dataset drift detection)."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def dataset(
    path: str,
    *,
    prompt: str | None = None,
    main_score: str | None = None,
    repeat: int | None = None,
    judge: Any = None,
    **params: Any,
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Parametrize a test over the cases of a dataset file and the selected models.

    ``path`` and ``prompt`` are relative to the test file. ``params`` are
    generation parameters (``max_tokens``, ``temperature``, ``stop``, ...).
    ``main_score`` names the score shown as the item's headline (default: the
    last score recorded). ``repeat`` samples each case that many times, unless
    ``--repeat`` says otherwise (docs/gate_statistics.md, "Repeats"). ``judge`` declares the
    test's judge (a ``JudgeSpec``): its requests are then scheduled as soon as each completion
    lands (:mod:`pytest_llmeval.judge_stage`).
    """
    from .judge_stage import JudgeSpec

    if repeat is not None and (isinstance(repeat, bool) or not isinstance(repeat, int) or repeat < 1):
        raise TypeError(f"@dataset({path!r}, repeat=...): expected a whole number >= 1, got {repeat!r}")
    if judge is not None and not isinstance(judge, JudgeSpec):
        raise TypeError(f"@dataset(judge=...) takes a JudgeSpec, got {type(judge).__name__}")

    def deco(fn: Callable[..., Any]) -> Callable[..., Any]:
        return pytest.mark.llmeval_dataset(
            path=path, prompt=prompt, main_score=main_score, params=params, repeat=repeat, judge=judge
        )(fn)

    return deco
