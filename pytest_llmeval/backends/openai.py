"""Any OpenAI-compatible chat-completions server: OpenAI itself, vLLM, a local proxy."""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from typing import Any, ClassVar

from ..endpoint import effective_base_url, normalise_endpoint
from ..errors import ConfigError, ModelCallError
from ..model_checks import check_embedded, check_key
from ..models import ModelSpec
from .base import Backend, Completion, Request
from .replicas import deployment_key

_NO_KEY = "not-needed"


@dataclass
class OpenAISpec(ModelSpec):
    """``type: openai``: any OpenAI-compatible chat-completions endpoint."""

    model: str = ""  # the model name sent with each request
    base_url: str | None = None  # default: the OpenAI API
    api_key_env: str | None = None
    max_concurrency: int = 8  # per replica, with ``replicas``
    # Several endpoints of one deployment, instead of base_url (backends/replicas.py)
    replicas: list[str] | None = None
    deployment: str | None = None  # a name for the replicas' deployment: the cache identity, if given

    REQUIRED: ClassVar[tuple[str, ...]] = ("model",)

    def weights(self) -> str | None:
        return self.model

    def identity(self) -> str:
        # A remote model's outputs depend on where it is served: the endpoint (or, for a replica
        # list, the deployment, whichever replica answers) is part of the key, so two servers
        # answering to the same model name never share cached completions.
        ident: dict[str, Any] = {
            "type": self.type,
            "path": None,
            "model": self.model,
            "served_model": self.model,
        }
        if self.replicas:
            ident["deployment"] = deployment_key(self.deployment, self.replicas)
        else:
            ident["endpoint"] = normalise_endpoint(effective_base_url(self.base_url))
        return json.dumps(ident, sort_keys=True)

    def validate(self, where: str) -> None:
        validate_replicas(self, where)

    def check_available(self) -> None:
        if not self.base_url and not self.replicas:  # a GPU somewhere else serves it
            super().check_available()
        check_key(self.api_key_env)
        check_embedded(self.model)


class MalformedResponse(ValueError):
    """An HTTP 200 whose body is not a usable chat completion (retryable, like a truncated body)."""


class OpenAIBackend(Backend):
    """Chat completions through the ``openai`` SDK; retries are the scheduler's job."""

    mode = "concurrent"

    def __init__(self, spec: Any) -> None:
        super().__init__(spec)
        self._client: Any = None
        self.base_url: str | None = spec.base_url

    @property
    def max_concurrency(self) -> int:
        """Requests in flight: ``max_concurrency`` per replica."""
        return super().max_concurrency * max(1, len(self.spec.replicas or ()))

    def served_model(self) -> str:
        """The ``model`` field sent with each request."""
        return str(self.spec.model)

    def _api_key(self) -> str:
        env = self.spec.api_key_env
        if env:
            key = os.environ.get(env)
            if not key:
                raise ModelCallError(f"model {self.name}: environment variable {env} is not set")
            return key
        return _NO_KEY

    def load(self) -> None:
        if self._client is not None:
            return
        import openai

        key = self._api_key()

        def client(base_url: str | None) -> Any:
            return openai.OpenAI(
                api_key=key,
                base_url=base_url,
                timeout=self.spec.timeout,
                max_retries=0,  # the scheduler retries, counts retries and honours Retry-After
            )

        if self.spec.replicas and not self.base_url:
            from .replicas import ReplicaClient, ReplicaSet

            replicas = ReplicaSet(self.name, list(self.spec.replicas), int(self.spec.max_concurrency), client)
            self._client = ReplicaClient(replicas)
        else:
            self._client = client(self.base_url)

    def generate(self, request: Request) -> Completion:
        self.load()
        params = {**self.spec.params, **request.param_dict}
        kwargs: dict[str, Any] = {
            "model": self.served_model(),
            "messages": request.message_list,
            "max_tokens": int(params.get("max_tokens", 256)),
            "temperature": float(params.get("temperature", 0.0)),
        }
        for key in ("top_p", "stop", "seed"):
            if key in params:
                kwargs[key] = params[key]
        started = time.perf_counter()
        resp = self._client.chat.completions.create(**kwargs)
        latency = time.perf_counter() - started
        # A 200 whose body lacks the answer (a proxy's glitch, a half-written reply) is worth another try.
        if not getattr(resp, "choices", None):
            raise MalformedResponse(f"model {self.name}: the server answered HTTP 200 without choices")
        choice = resp.choices[0]
        message = getattr(choice, "message", None)
        if message is None:
            raise MalformedResponse(f"model {self.name}: the server answered HTTP 200 without a message")
        text = message.content or ""
        usage = getattr(resp, "usage", None)
        pt = int(getattr(usage, "prompt_tokens", 0) or 0)
        ct = int(getattr(usage, "completion_tokens", 0) or 0)
        return Completion(
            text=text,
            latency_s=latency,
            prompt_tokens=pt,
            completion_tokens=ct,
            cost=self.spec.cost(pt, ct),
            finish_reason=choice.finish_reason,
            model=self.name,
        )

    def is_retryable(self, exc: BaseException) -> tuple[bool, float | None]:
        import openai

        if isinstance(exc, (openai.APITimeoutError, openai.APIConnectionError)):
            return True, None
        if isinstance(exc, openai.APIStatusError):
            status = exc.status_code
            if status == 429 or status >= 500:
                return True, _retry_after(exc.response.headers if exc.response is not None else {})
            return False, None
        # A body the SDK could not decode (truncated JSON) is transient on a flaky link.
        if isinstance(exc, (ValueError, openai.APIResponseValidationError)):
            return True, None
        return False, None

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None


def validate_replicas(spec: Any, where: str) -> None:
    """Check ``replicas`` / ``deployment``; store the replicas normalised and sorted (order means nothing)."""
    from .replicas import normalise_url

    if spec.deployment is not None and spec.replicas is None:
        raise ConfigError(f"{where}: key 'deployment' names a replica list; add 'replicas:' or remove it")
    if spec.replicas is None:
        return
    if spec.base_url:
        raise ConfigError(f"{where}: give 'base_url' (one endpoint) or 'replicas' (several), not both")
    if not spec.replicas:
        raise ConfigError(f"{where}: key 'replicas' must list at least one URL, e.g. [http://node1:8000/v1]")
    urls = []
    for url in spec.replicas:
        u = normalise_url(url)
        if not u.startswith(("http://", "https://")):
            raise ConfigError(f"{where}: replica {url!r} is not an http:// or https:// URL")
        if u in urls:
            raise ConfigError(f"{where}: replica {url!r} is listed twice")
        urls.append(u)
    spec.replicas = sorted(urls)


def _retry_after(headers: Any) -> float | None:
    """Seconds from a Retry-After (or retry-after-ms) header, if present and sane."""
    try:
        ms = headers.get("retry-after-ms")
        if ms is not None:
            return max(0.0, float(ms) / 1000.0)
        value = headers.get("retry-after")
        if value is None:
            return None
        return max(0.0, float(value))
    except (TypeError, ValueError):
        return None
