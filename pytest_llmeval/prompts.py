"""Prompt templates -> chat messages.

A template file is split into messages by marker lines ``--- system ---``,
``--- user ---`` and ``--- assistant ---`` (text before the first marker is the
user message). Placeholders are ``{{ field }}``, ``{{ field.sub }}`` and
``{{ field | json }}`` (compact JSON); ``{{ field | json_pretty }}`` indents.
Braces elsewhere (JSON examples) are left alone, so templates can show JSON.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from .errors import TemplateError

Message = dict[str, str]

_MARKER = re.compile(r"^---\s*(system|user|assistant)\s*---\s*$", re.MULTILINE)
_PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z_][\w.]*)\s*(?:\|\s*(\w+)\s*)?\}\}")
_FILTERS = {"json", "json_pretty", "upper", "lower", "strip"}


@dataclass(frozen=True)
class Template:
    """A parsed prompt template."""

    path: str
    parts: tuple[tuple[str, str], ...]

    def fields(self) -> set[str]:
        """Top-level field names the template reads."""
        return {m.group(1).split(".")[0] for _, text in self.parts for m in _PLACEHOLDER.finditer(text)}

    def render(self, data: Mapping[str, Any], case_id: str = "?") -> list[Message]:
        """Render chat messages for one case; a missing field names template, field and case."""
        return [
            {"role": role, "content": self._render_text(text, data, case_id)} for role, text in self.parts
        ]

    def _render_text(self, text: str, data: Mapping[str, Any], case_id: str) -> str:
        def sub(m: re.Match[str]) -> str:
            dotted, filt = m.group(1), m.group(2)
            value: Any = data
            for part in dotted.split("."):
                if isinstance(value, Mapping) and part in value:
                    value = value[part]
                else:
                    line = text[: m.start()].count("\n") + 1
                    raise TemplateError(
                        f"{self.path}: placeholder {{{{ {dotted} }}}} (line {line} of its section) "
                        f"needs field {dotted!r}, which case {case_id!r} does not have. "
                        f"Add the field to the case or change the template."
                    )
            if filt and filt not in _FILTERS:
                raise TemplateError(
                    f"{self.path}: unknown filter {filt!r}; known: {', '.join(sorted(_FILTERS))}"
                )
            if filt == "json":
                return json.dumps(value, ensure_ascii=False, separators=(",", ":"))
            if filt == "json_pretty":
                return json.dumps(value, ensure_ascii=False, indent=2)
            if isinstance(value, (dict, list)):
                value = json.dumps(value, ensure_ascii=False)
            s = str(value)
            if filt == "upper":
                return s.upper()
            if filt == "lower":
                return s.lower()
            if filt == "strip":
                return s.strip()
            return s

        return _PLACEHOLDER.sub(sub, text)


def parse_template(text: str, path: str = "<template>") -> Template:
    """Split template text into (role, text) parts."""
    parts: list[tuple[str, str]] = []
    markers = list(_MARKER.finditer(text))
    head = text[: markers[0].start()] if markers else text
    if head.strip():
        parts.append(("user", head.strip("\n")))
    for i, m in enumerate(markers):
        end = markers[i + 1].start() if i + 1 < len(markers) else len(text)
        body = text[m.end() : end].strip("\n")
        parts.append((m.group(1), body))
    if not parts:
        raise TemplateError(f"{path}: the template is empty")
    return Template(path=path, parts=tuple(parts))


@lru_cache(maxsize=64)
def _load(path: str, mtime: float) -> Template:
    return parse_template(Path(path).read_text(encoding="utf-8-sig"), path)


def load_template(path: str | Path) -> Template:
    """Load (and cache) a template file."""
    p = Path(path)
    if not p.is_file():
        raise TemplateError(f"prompt template {p} does not exist")
    return _load(str(p), p.stat().st_mtime)


def default_messages(data: Mapping[str, Any]) -> list[Message]:
    """Messages for a case without a template: its ``messages`` field, or its ``prompt``/``input``."""
    if "messages" in data and isinstance(data["messages"], list):
        return [dict(m) for m in data["messages"]]
    for key in ("prompt", "input", "question"):
        if key in data:
            return [{"role": "user", "content": str(data[key])}]
    raise TemplateError(
        "case has no 'messages', 'prompt', 'input' or 'question' field and the test names no prompt template"
    )
