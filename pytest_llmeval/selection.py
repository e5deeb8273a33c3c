"""Which models a run uses: the models file, the registered types, the selection and its backends."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from .backends.base import Backend
from .console import split_models
from .errors import ConfigError
from .models import (
    BUILTIN_TYPES,
    DEFAULT_MODEL,
    DEFAULT_MODELS_FILE,
    ModelSpec,
    ModelType,
    known_models,
    model_types,
)
from .redact import register_key_envs


class ModelSelection:
    """The models of this run: the built-in models plus the models file's, the names selected, a backend each.

    Specs load lazily (``--help`` and plain test runs never read the file). The
    selection is ``--model``, else the ``llmeval_model`` ini key, else the
    embedded ``smollm2``. One given with ``--model`` is checked at start-up (a
    usage error); the others when the run's eval items are known.
    """

    def __init__(self, config: pytest.Config, is_worker: bool) -> None:
        self.config = config
        self.is_worker = is_worker
        self._specs: dict[str, ModelSpec] | None = None
        self._types: dict[str, ModelType] | None = None
        self._backends: dict[str, Backend] = {}
        # Servers the controller started for vllm_server models (model -> URL or start error).
        self.server_urls: dict[str, str] = {}
        self.server_errors: dict[str, str] = {}
        explicit = split_models(config.getoption("model") or [])
        self.explicit = bool(explicit)
        self.selected: list[str] = (
            explicit or split_models([config.getini("llmeval_model") or ""]) or [DEFAULT_MODEL]
        )

    # -- configuration ------------------------------------------------------------------
    def models_file(self) -> Path:
        opt = self.config.getoption("models_file")
        path = Path(opt or self.config.getini("llmeval_models_file") or DEFAULT_MODELS_FILE)
        if not path.is_absolute():
            base = Path(self.config.invocation_params.dir) if opt else self.config.rootpath
            path = base / path
        return path

    def models_file_required(self) -> bool:
        """A file named by ``--models-file`` or the ini key must exist; the default path may not."""
        return bool(self.config.getoption("models_file") or self.config.getini("llmeval_models_file"))

    def types(self) -> dict[str, ModelType]:
        """Built-in model types plus those other plugins register."""
        if self._types is None:
            extra: dict[str, Any] = {}
            for registered in self.config.hook.pytest_llmeval_register_backends():
                extra.update(registered or {})
            self._types = model_types(extra)
        return self._types

    def specs(self) -> dict[str, ModelSpec]:
        """Built-in models, then the models file's entries (which may override them by name)."""
        if self._specs is None:
            extra = {n: t for n, t in self.types().items() if n not in BUILTIN_TYPES}
            try:
                self._specs = known_models(self.models_file(), self.models_file_required(), extra)
            except ConfigError as e:
                raise pytest.UsageError(str(e)) from None
            # Every key the file points at (the judge's included) is scrubbed from everything the
            # run writes, whatever its variable is called; specs load before any request is made.
            register_key_envs(getattr(s, "api_key_env", None) for s in self._specs.values())
        return self._specs

    def where(self) -> str:
        """``built-in models and FILE`` (or the built-in models alone), for messages."""
        path = self.models_file()
        return f"built-in models and {path}" if path.is_file() else f"built-in models ({path} does not exist)"

    def spec(self, name: str) -> ModelSpec:
        return self.specs()[name]

    def validate(self, check_runnable: bool = True) -> None:
        """Usage error for unknown models, and (with ``check_runnable``) for models that cannot run here."""
        specs = self.specs()
        unknown = [m for m in self.selected if m not in specs]
        if unknown:
            raise pytest.UsageError(
                f"unknown model {', '.join(map(repr, unknown))} ({self.where()}); available: {', '.join(specs)}"
            )
        if check_runnable:
            problems = []
            for name in self.selected:
                ok, why = specs[name].availability()
                if not ok:
                    problems.append(f"model {name!r} cannot run here: {why}")
            if problems:
                raise pytest.UsageError("\n".join(problems) + "\n(see `pytest --list-models`)")

    def loaded_specs(self) -> list[ModelSpec]:
        """Specs of the selected models, if they were loaded or the selection is explicit."""
        if self._specs is None and not self.explicit:
            return []
        specs = self.specs()
        return [specs[n] for n in self.selected if n in specs]

    # -- backends ---------------------------------------------------------------------------
    def backend(self, name: str) -> Backend:
        """The backend of model ``name``, built once per run."""
        if name not in self._backends:
            spec = self.spec(name)
            types = self.types()
            if spec.type not in types:
                raise ConfigError(f"model {name}: no backend registered for type {spec.type!r}")
            backend = types[spec.type].factory(spec)
            if name in self.server_urls:
                backend.base_url = self.server_urls[name]  # type: ignore[attr-defined]
            if name in self.server_errors:
                backend.start_error = self.server_errors[name]  # type: ignore[attr-defined]
            self._backends[name] = backend
        return self._backends[name]

    def close(self) -> None:
        for b in self._backends.values():
            try:
                b.close()
            except Exception:
                pass


def list_models_main(config: pytest.Config, session: pytest.Session) -> int:
    """``pytest --list-models``: every known model, where it is defined and whether it can run here."""
    selection = ModelSelection(config, is_worker=False)
    tr = config.pluginmanager.get_plugin("terminalreporter")
    write = tr.write_line if tr is not None else (lambda s, **k: print(s))
    try:
        specs = selection.specs()
    except pytest.UsageError as e:
        write(f"ERROR: {e}", red=True)
        return pytest.ExitCode.USAGE_ERROR
    write(f"models ({selection.where()}); selected: {', '.join(selection.selected)}")
    width = max(len(n) for n in specs)
    for name, spec in specs.items():
        ok, why = spec.availability()
        write(f"  {name:<{width}}  {spec.type:<12} {'ready' if ok else why}", green=ok, yellow=not ok)
        about = f"{spec.description}  " if spec.description else ""
        write(f"  {'':<{width}}  {about}[{spec.origin}]")
    return 0
