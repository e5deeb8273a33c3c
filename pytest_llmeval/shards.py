"""Shards: ``--shard K/N`` keeps a deterministic 1/N of a run's cases.

A case's shard is a pure function of its test and case id: the first eight
bytes of ``sha256(test + "\\x1f" + case_id)`` modulo N. Item order, ``-n``,
other cases and the models play no part, so

* every model (and every repeat) of a case lands in the same shard, and the
  paired model comparisons of the merged run stay exact;
* shards run anywhere, in any order, in separate processes or CI jobs;
* ``llmeval merge`` can check that each record it reads belongs to the shard
  whose folder it came from.

Items that are not dataset cases (a plain test beside the evals, a multi-turn
test on the ``model`` fixture alone) are assigned by their test function, so
every item runs in exactly one shard.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

import pytest

from .collection import is_eval_item, test_of

_SHARD_RE = re.compile(r"^\s*(\d+)\s*/\s*(\d+)\s*$")


@dataclass(frozen=True)
class Shard:
    """Shard ``index`` (1-based) of ``count``."""

    index: int
    count: int

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"

    def keeps(self, test: str, case_id: str | None) -> bool:
        """Whether the case ``case_id`` of ``test`` (or the whole test, for None) belongs to this shard."""
        return shard_of(test, case_id, self.count) == self.index

    def to_dict(self) -> dict[str, int]:
        return {"index": self.index, "count": self.count}


def parse_shard(text: str) -> Shard:
    """``"2/3"`` -> ``Shard(2, 3)``; anything else (``0/3``, ``4/3``, ``x``) is a ValueError saying why."""
    m = _SHARD_RE.match(str(text))
    if not m:
        raise ValueError(f"--shard takes K/N (this run's shard K of N, e.g. 2/3), got {text!r}")
    index, count = int(m.group(1)), int(m.group(2))
    if count < 1:
        raise ValueError(f"--shard {text}: the number of shards N must be at least 1")
    if not 1 <= index <= count:
        raise ValueError(f"--shard {text}: the shard K must be between 1 and {count}")
    return Shard(index, count)


# Options that gate a run; a shard's verdict belongs to the merged run.
_GATE_OPTIONS = (
    ("baseline", "--baseline"),
    ("save_baseline", "--save-baseline"),
    ("tolerance", "--tolerance"),
    ("fail_under", "--fail-under"),
    ("gate_mode", "--gate-mode"),
    ("require_baseline", "--require-baseline"),
)


def check_options(config: pytest.Config) -> None:
    """A usage error for gate options given with ``--shard``: the merge gates, on all the cases."""
    given = [flag for name, flag in _GATE_OPTIONS if config.getoption(name) not in (None, False, [])]
    if given:
        raise pytest.UsageError(
            f"--shard {config.getoption('llmeval_shard')} with {', '.join(given)}: a shard holds part of the "
            "cases, so it is not gated; pass the gate options to `llmeval merge RUN_DIR...` instead"
        )


def shard_of(test: str, case_id: str | None, count: int) -> int:
    """The 1-based shard of a case (or, with ``case_id`` None, of a whole test) among ``count``."""
    key = test if case_id is None else f"{test}\x1f{case_id}"
    digest = hashlib.sha256(key.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % count + 1


def item_key(item: pytest.Item) -> tuple[str, str | None]:
    """(test, case id) of an eval item; (test, None) for any other item."""
    test = test_of(item.nodeid)
    if is_eval_item(item):
        return test, str(item.callspec.params["case"].id)  # type: ignore[attr-defined]
    return test, None


def select(items: list[pytest.Item], shard: Shard) -> tuple[list[pytest.Item], list[pytest.Item]]:
    """(kept, deselected), each in item order."""
    kept: list[pytest.Item] = []
    dropped: list[pytest.Item] = []
    for item in items:
        (kept if shard.keeps(*item_key(item)) else dropped).append(item)
    return kept, dropped
