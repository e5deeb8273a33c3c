"""What every backend provides, and the records that flow through the scheduler."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar, Literal

Message = dict[str, str]


@dataclass(frozen=True)
class Request:
    """One generation request: chat messages plus generation parameters."""

    messages: tuple[tuple[str, str], ...]
    params: tuple[tuple[str, Any], ...] = ()

    @classmethod
    def make(cls, messages: list[Message], **params: Any) -> Request:
        """Build a hashable request from plain messages and parameters."""
        msgs = tuple((m["role"], m["content"]) for m in messages)
        ps = tuple(sorted((k, _freeze(v)) for k, v in params.items() if v is not None))
        return cls(msgs, ps)

    @property
    def message_list(self) -> list[Message]:
        return [{"role": r, "content": c} for r, c in self.messages]

    @property
    def param_dict(self) -> dict[str, Any]:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in self.params}

    def key(self, model_identity: str) -> str:
        """Cache key: model identity + messages + generation parameters."""
        return _sha256({"model": model_identity, "messages": self.messages, "params": self.params})

    def request_hash(self) -> str:
        """The key without the model: equal for the same messages and parameters sent to any model.

        The response cache indexes its entries by it, so a miss can say that the same
        request is cached for another model identity (another endpoint, another adapter).
        """
        return _sha256({"messages": self.messages, "params": self.params})

    def messages_hash(self) -> str:
        """sha256 of the messages alone (what ``llmeval cache explain`` shows)."""
        return _sha256({"messages": self.messages})


def _sha256(payload: dict[str, Any]) -> str:
    text = json.dumps(payload, sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def _freeze(v: Any) -> Any:
    if isinstance(v, list):
        return tuple(_freeze(x) for x in v)
    if isinstance(v, dict):
        return tuple(sorted((k, _freeze(x)) for k, x in v.items()))
    return v


@dataclass
class Completion:
    """A model's answer to one request, with what it cost to get it."""

    text: str
    latency_s: float = 0.0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost: float = 0.0
    cached: bool = False
    finish_reason: str | None = None
    retries: int = 0
    model: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def __str__(self) -> str:
        return self.text


class Backend:
    """A model that can generate completions.

    ``mode`` tells the scheduler how to feed it: ``"batch"`` backends get lists
    of requests (in-process models), ``"concurrent"`` backends get one request
    per call from up to ``max_concurrency`` threads (servers).
    """

    mode: ClassVar[Literal["batch", "concurrent"]] = "concurrent"
    #: False for backends whose ``latency_s`` is a whole batch's time (in-process models): their
    #: completions carry ``extra["batch_size"]`` and the item's own timing instead (see timing.py)
    latency_is_per_request: ClassVar[bool] = True

    def __init__(self, spec: Any) -> None:
        self.spec = spec
        self.name: str = spec.name

    @property
    def max_concurrency(self) -> int:
        return int(getattr(self.spec, "max_concurrency", 1) or 1)

    @property
    def batch_size(self) -> int:
        return int(getattr(self.spec, "batch_size", 1) or 1)

    def identity(self) -> str:
        """A string that changes whenever the model's outputs could change (cache key part)."""
        return self.spec.identity()

    def load(self) -> None:
        """Do expensive set-up (load weights, start or probe a server). Called once, lazily."""

    def generate(self, request: Request) -> Completion:
        """Generate one completion. Raise on failure; the scheduler retries what is retryable."""
        return self.generate_batch([request])[0]

    def generate_batch(self, requests: list[Request], cancelled: Any = None) -> list[Completion]:
        """Generate several completions at once (batch backends override this)."""
        return [self.generate(r) for r in requests]

    def is_retryable(self, exc: BaseException) -> tuple[bool, float | None]:
        """Whether ``exc`` is transient, and the server's Retry-After in seconds if it gave one."""
        return False, None

    def close(self) -> None:
        """Release resources (stop a server, free memory)."""
