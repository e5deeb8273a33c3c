"""``python -m serving``: serve a model and its LoRA adapters with vLLM until Ctrl-C.

    python -m serving --model smollm2 --adapters json-lora=data/lora_adapters/json_v1 --port 8001
    python -m serving --model embedded:smollm2 -- --max-model-len 4096   # after --: vLLM's own flags

``--model`` is a models.yaml name, ``embedded:NAME``, a local directory or a
Hugging Face hub id. The base model is served under the models.yaml ``model``
string (e.g. ``embedded:smollm2``) and each adapter under its own name, so a
client picks one with ``model=...``.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path
from types import FrameType

from pytest_llmeval.backends.vllm_process import ServerError, VLLMServer

from .targets import DEFAULT_MODELS_FILE, resolve_target


def _port(value: str) -> int:
    try:
        port = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"port must be a number, got {value!r}") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"port must be 0..65535 (0 = pick a free one), got {port}")
    return port


def _adapter(value: str) -> tuple[str, str]:
    name, sep, path = value.partition("=")
    if not sep or not name or not path:
        raise argparse.ArgumentTypeError(f"--adapters takes NAME=PATH, got {value!r}")
    if not (Path(path) / "adapter_config.json").is_file():
        raise argparse.ArgumentTypeError(
            f"adapter {name}: {path} is not a PEFT adapter directory (no adapter_config.json)"
        )
    return name, path


def _positive(value: str) -> int:
    try:
        n = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value!r}") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {n}")
    return n


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m serving",
        description="Serve a model and LoRA adapters through vLLM's OpenAI-compatible API.",
        epilog="Arguments after -- go to vLLM unchanged (e.g. -- --max-model-len 4096 --dtype float32).",
    )
    p.add_argument(
        "--model", required=True, help="models.yaml name, embedded:NAME, local directory or hub id"
    )
    p.add_argument(
        "--adapters",
        nargs="+",
        action="extend",
        type=_adapter,
        default=[],
        metavar="NAME=PATH",
        help="LoRA adapters to serve, each under NAME (added to those models.yaml lists)",
    )
    p.add_argument("--models-file", default=DEFAULT_MODELS_FILE, help="models.yaml (default: %(default)s)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: %(default)s)")
    p.add_argument("--port", type=_port, default=None, help="port; 0 or omitted picks a free one")
    p.add_argument("--startup-timeout", type=float, default=None, help="seconds to wait for readiness (600)")
    p.add_argument(
        "--max-lora-rank", type=_positive, default=None, help="default: the adapters' largest rank"
    )
    p.add_argument("--kv-cache-gib", type=_positive, default=None, help="CPU KV cache in GiB (CPU default 2)")
    p.add_argument("--log", default=None, help="server log file (default: data/serving/NAME-PORT.log)")
    p.add_argument(
        "--compile",
        action="store_true",
        help="let vLLM torch.compile the model on CPU too (slower start; eager is the CPU default)",
    )
    return p


class _Stop(Exception):
    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    extra: list[str] = []
    if "--" in argv:
        i = argv.index("--")
        argv, extra = argv[:i], argv[i + 1 :]
    args = build_parser().parse_args(argv)
    try:
        target = resolve_target(args.model, args.models_file)
    except ServerError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    adapters = {**target.adapters, **dict(args.adapters)}
    server = VLLMServer(
        target.model_path,
        target.served_name,
        adapters,
        host=args.host,
        port=args.port if args.port is not None else (target.port or 0),
        startup_timeout=args.startup_timeout or target.startup_timeout,
        extra_args=[*target.server_args, *extra],
        log_path=args.log,
        max_lora_rank=args.max_lora_rank,
        kv_cache_gib=args.kv_cache_gib,
        enforce_eager=False if args.compile else None,
    )

    def request_stop(signum: int, frame: FrameType | None) -> None:
        raise _Stop(signum)

    def force_stop(signum: int, frame: FrameType | None) -> None:
        # A second Ctrl-C while shutting down: no more waiting.
        if server.pid:
            try:
                os.killpg(server.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    try:
        try:
            server.start()
            print(
                f"starting vLLM for {target.served_name} (log: {server.log_path})",
                file=sys.stderr,
                flush=True,
            )
            server.wait_ready()
        except ServerError as e:
            print(f"error: {e}", file=sys.stderr)
            return 1
        print(f"vLLM server ready in {server.ready_after_s:.1f} s at {server.api_base}", flush=True)
        print(f"  model {target.served_name}  ({target.model_path})", flush=True)
        for name, path in server.adapters.items():
            print(f"  model {name}  (LoRA adapter {path})", flush=True)
        print(f"  log   {server.log_path}", flush=True)
        print(f"  pid   {server.pid} (its own process group)", flush=True)
        print("Ctrl-C stops it.", flush=True)
        assert server.proc is not None
        server.proc.wait()  # a signal interrupts this with _Stop
        print(
            f"error: the vLLM server exited by itself (code {server.proc.returncode if server.proc else '?'});"
            f" last log lines:\n{server.log_tail(30)}",
            file=sys.stderr,
        )
        server.stop()
        return 1
    except _Stop as s:
        signal.signal(signal.SIGINT, force_stop)
        signal.signal(signal.SIGTERM, force_stop)
        print(f"{s.args[0]}: stopping the vLLM server", file=sys.stderr, flush=True)
        server.stop()
        print("stopped", file=sys.stderr, flush=True)
        return 0
