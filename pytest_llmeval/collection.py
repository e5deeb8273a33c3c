"""Collection: dataset files -> cases -> parametrized items (readable ids, tags as markers)."""

from __future__ import annotations

from pathlib import Path

import pytest

from .dataset import DatasetError, file_hash, load_cases
from .selection import ModelSelection


class Collection:
    """Parametrizes tests that use ``@dataset`` or the ``model`` fixture; remembers dataset hashes."""

    def __init__(self, config: pytest.Config, selection: ModelSelection) -> None:
        self.config = config
        self.selection = selection
        self.datasets: dict[str, str] = {}  # test name -> dataset sha256
        self._registered_tags: set[str] = set()

    def generate_tests(self, metafunc: pytest.Metafunc) -> None:
        mark = metafunc.definition.get_closest_marker("llmeval_dataset")
        needs_model = "model" in metafunc.fixturenames
        if mark is None and not needs_model:
            return
        if needs_model:
            selected = self.selection.selected  # never empty: the embedded default at least
            try:
                if not self.selection.explicit:
                    self.selection.validate(check_runnable=False)
            except pytest.UsageError as e:
                raise pytest.Collector.CollectError(str(e)) from None
            metafunc.parametrize("model", selected, indirect=True, ids=selected)
        if mark is not None:
            path = Path(metafunc.definition.path).parent / mark.kwargs["path"]
            try:
                cases = load_cases(path)
            except DatasetError as e:
                raise pytest.Collector.CollectError(str(e)) from None
            self.datasets[test_of(metafunc.definition.nodeid)] = file_hash(path)
            params = []
            for c in cases:
                for t in c.tags:
                    if t not in self._registered_tags:
                        self._registered_tags.add(t)
                        self.config.addinivalue_line("markers", f"{t}: dataset tag")
                params.append(pytest.param(c, id=c.id, marks=[getattr(pytest.mark, t) for t in c.tags]))
            metafunc.parametrize("case", params, indirect=True)


_MARK_KEY = pytest.StashKey[object]()
_NO_MARK = object()


def dataset_mark(item: pytest.Item) -> pytest.Mark | None:
    """The item's ``llmeval_dataset`` marker, looked up once: several stages read it per item, and
    pytest walks the node chain on every lookup (a measurable part of the per-item overhead)."""
    mark = item.stash.get(_MARK_KEY, None)
    if mark is None:
        mark = item.get_closest_marker("llmeval_dataset") or _NO_MARK
        item.stash[_MARK_KEY] = mark
    return None if mark is _NO_MARK else mark  # type: ignore[return-value]


def is_eval_item(item: pytest.Item) -> bool:
    """An item parametrized with a dataset case and a model."""
    cs = getattr(item, "callspec", None)
    return cs is not None and "case" in cs.params and "model" in cs.params


def test_of(nodeid: str) -> str:
    """The test a node id belongs to, without its parameters."""
    return nodeid.split("[", 1)[0]
