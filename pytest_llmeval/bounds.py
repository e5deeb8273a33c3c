"""One bound on the size of a model's output, applied where the completion arrives.

A model can answer with megabytes (a loop, a server gone wrong). The scheduler
cuts every output to the bound as soon as it arrives, so the text that the
test, the cache, JUnit XML, ``results.jsonl``, the HTML report, the database
and the traces see is already bounded, and memory stays bounded too. A cut
text ends with a marker that gives the original size, and the completion keeps
that size in ``extra["output_bytes"]``.

The bound is ``--output-limit SIZE`` or the ``llmeval_output_limit`` ini key
(default 64 KiB; ``0`` or ``none`` keeps outputs whole).
"""

from __future__ import annotations

import re

DEFAULT_LIMIT = 64 * 1024
HELP = (
    "bytes of model output kept per item: 64KiB (default), 1MiB, none, ...; "
    "a longer output is cut and marked with its size"
)
_UNITS = {"": 1, "b": 1, "k": 1000, "kb": 1000, "kib": 1024, "m": 1000**2, "mb": 1000**2, "mib": 1024**2}
_SIZE = re.compile(r"^\s*(\d+)\s*([a-zA-Z]*)\s*$")
# The shortest bound that still leaves room for the marker and some text.
MIN_LIMIT = 256


def parse_size(text: str | int | None) -> int | None:
    """``"64KiB"`` -> 65536; ``"none"``/``"0"`` -> None (no bound). Raises ValueError on anything else."""
    if text is None or isinstance(text, int):
        return text or None
    if text.strip().lower() in ("", "none", "off", "0"):
        return None
    m = _SIZE.match(text)
    if not m or m.group(2).lower() not in _UNITS:
        raise ValueError(f"expected a size such as 65536, 64KiB, 1MiB or none, got {text!r}")
    size = int(m.group(1)) * _UNITS[m.group(2).lower()]
    if size < MIN_LIMIT:
        raise ValueError(f"an output limit under {MIN_LIMIT} bytes leaves nothing to read ({text!r})")
    return size


def marker(original_bytes: int) -> str:
    """The line that ends a cut output."""
    return f"\n[output cut by pytest-llmeval: {original_bytes:,} bytes in all]"


def cut(text: str, limit: int | None) -> tuple[str, int | None]:
    """``text`` within ``limit`` UTF-8 bytes, marker included; and its original size if it was cut."""
    # Fast path: a character is at most 4 bytes, so short texts need no encoding.
    if limit is None or len(text) * 4 <= limit:
        return text, None
    raw = text.encode("utf-8", "surrogatepass")
    if len(raw) <= limit:
        return text, None
    mark = marker(len(raw))
    keep = max(0, limit - len(mark.encode()))
    return raw[:keep].decode("utf-8", "ignore") + mark, len(raw)
