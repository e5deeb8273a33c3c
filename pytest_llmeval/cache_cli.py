"""``llmeval cache explain NODEID``: what an item's response-cache key was made of, and why it missed.

Every item's record (``results.jsonl`` in its run folder) keeps its cache key,
the model identity and request hash it was made from, the generation
parameters and whether it was a hit. This command shows those parts for an item
of a stored run, checks the key by recomputing it from the recorded prompt, says
whether the cache holds it now, and lists the other model identities (another
endpoint, another adapter) under which the same request is cached: the reason a
miss that looks as if it should have been a hit was not one.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import time
from pathlib import Path
from typing import Any

from .cache import DEFAULT_CACHE

RUNS_SEARCHED = 20  # how far back a node id is looked for when the chosen run lacks it


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    """Add ``llmeval cache explain`` to the console's sub-commands."""
    sp = sub.add_parser("cache", help="inspect the response cache")
    inner = sp.add_subparsers(dest="cache_command", metavar="ACTION")
    inner.required = True
    ex = inner.add_parser(
        "explain", parents=[common], help="an item's cache key: its parts, and why it was not a hit"
    )
    ex.add_argument("nodeid", metavar="NODEID", help="the item's node id (or a unique part of it)")
    ex.add_argument("--run", default="latest", metavar="ID", help="run id, unique prefix, latest or latest~N")
    ex.add_argument(
        "--cache-path",
        default=None,
        metavar="PATH",
        help=f"response cache (default: <rootdir>/{DEFAULT_CACHE})",
    )
    ex.add_argument("--json", action="store_true", help="print JSON")
    ex.set_defaults(func=cmd_explain)


def _cache_path(args: argparse.Namespace) -> Path:
    if args.cache_path:
        return Path(args.cache_path)
    from .paths import find_rootdir

    rootdir, _, settings = find_rootdir(Path.cwd())
    p = Path(settings.get("llmeval_cache_path") or DEFAULT_CACHE).expanduser()
    return p if p.is_absolute() else rootdir / p


def find_record(conn: sqlite3.Connection, run_ref: str, nodeid: str) -> tuple[str, dict[str, Any]]:
    """(run id, record) of ``nodeid`` in ``run_ref``, else in the runs before it."""
    from .cli import UsageError
    from .store import resolve_run

    try:
        first = resolve_run(conn, run_ref)
    except KeyError as e:
        raise UsageError(str(e.args[0])) from None
    ids = [r[0] for r in conn.execute("SELECT id FROM runs ORDER BY started DESC, rowid DESC")]
    start = ids.index(first) if first in ids else 0
    for run_id in ids[start : start + RUNS_SEARCHED]:
        row = conn.execute("SELECT run_dir FROM runs WHERE id = ?", (run_id,)).fetchone()
        path = Path(row[0]) / "results.jsonl" if row and row[0] else None
        if path is None or not path.is_file():
            continue
        exact, partial = None, []
        with open(path, encoding="utf-8") as f:
            for line in f:
                if nodeid not in line:
                    continue
                rec = json.loads(line)
                if rec.get("nodeid") == nodeid:
                    exact = rec
                elif nodeid in str(rec.get("nodeid")):
                    partial.append(rec)
        if exact is None and len(partial) > 1:
            names = ", ".join(str(r["nodeid"]) for r in partial[:5])
            raise UsageError(f"{nodeid!r} matches {len(partial)} items of run {run_id}: {names}...")
        if exact is not None or partial:
            return run_id, exact or partial[0]
    raise UsageError(f"no item {nodeid!r} in run {first} nor in the {RUNS_SEARCHED - 1} runs before it")


def explain(rec: dict[str, Any], cache_path: Path) -> dict[str, Any]:
    """What is known about an item's cache key: its parts, a recomputation, and the cache's state now."""
    from .backends.base import Request
    from .cache import ResponseCache, describe_identity_change, identity_parts

    info = (rec.get("extra") or {}).get("cache")
    out: dict[str, Any] = {
        "nodeid": rec.get("nodeid"),
        "model": rec.get("model"),
        "outcome": rec.get("outcome"),
    }
    if not info:
        out["status"] = "error" if rec.get("outcome") == "error" and rec.get("output") is None else "off"
        causes = (rec.get("extra") or {}).get("retry_causes")
        if out["status"] == "error":
            out["why"] = "the model call failed, and errors are never cached" + (
                f" (after {rec.get('retries', 0)} retries: {'; '.join(causes)})" if causes else ""
            )
        else:
            out["why"] = (
                "no cache key recorded: the cache was off in this run (--cache off), or it ran before keys were recorded"
            )
        return out
    messages = [
        {"role": m.get("role", "user"), "content": m.get("content", "")} for m in rec.get("messages") or []
    ]
    req = Request.make(messages, **(info.get("params") or {}))
    out.update(
        status=info.get("status"),
        key=info["key"],
        key_recomputed=req.key(info["identity"]) == info["key"] if messages else None,
        identity=identity_parts(info["identity"]),
        messages={"count": len(messages), "sha256": req.messages_hash()},
        params=info.get("params") or {},
        request=req.request_hash(),
        note=info.get("note"),
    )
    if not cache_path.is_file():
        out["cache"] = {"path": str(cache_path), "exists": False}
        return out
    cache = ResponseCache(cache_path, "ro")
    try:
        entry = cache.entry(info["key"])
        request = out["request"] if messages or entry is None else entry["request"]
        others = cache.identities([request], info["identity"]).get(request, []) if request else []
    finally:
        cache.close()
    out["cache"] = {"path": str(cache_path), "exists": True, "holds_key": entry is not None}
    if entry is not None:
        out["cache"]["stored"] = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(entry["created"]))
        out["cache"]["text_bytes"] = entry["text_bytes"]
    out["other_identities"] = [describe_identity_change(o, info["identity"]) for o in others]
    return out


def render(run_id: str, d: dict[str, Any]) -> str:
    """The explanation as text."""
    from .redact import safe_terminal

    def t(v: Any, n: int = 300) -> str:
        return safe_terminal(str(v), n)

    lines = [f"{t(d['nodeid'])} in run {t(run_id)} (model {t(d['model'])}, {t(d['outcome'])})"]
    if "key" not in d:
        lines.append(f"  no cache key: {t(d['why'], 600)}")
        return "\n".join(lines) + "\n"
    lines.append(f"  cache      {t(d['status'])} in that run")
    check = {True: "recomputed from the recorded prompt: matches", False: "recomputed: DIFFERS", None: ""}
    lines.append(f"  key        {d['key']}  (sha256 of the three parts below; {check[d['key_recomputed']]})")
    ident = "  ".join(f"{k}={t(v, 120)}" for k, v in sorted(d["identity"].items()))
    lines.append(f"  identity   {ident}")
    lines.append(f"  messages   {d['messages']['count']} message(s), sha256 {d['messages']['sha256']}")
    lines.append(f"  params     {t(json.dumps(d['params'], sort_keys=True))}")
    lines.append(f"  request    {d['request']}  (messages and params without the model: the cache's index)")
    if d.get("note"):
        lines.append(f"  why missed {t(d['note'], 600)}")
    c = d.get("cache") or {}
    if not c.get("exists"):
        lines.append(f"  the cache {t(c.get('path'))} does not exist")
    elif c.get("holds_key"):
        lines.append(
            f"  now        held in {t(c['path'])} (stored {c['stored']}, {c['text_bytes']} bytes of text)"
        )
    else:
        lines.append(f"  now        not in {t(c['path'])}")
    for o in d.get("other_identities") or []:
        lines.append(f"  also       {t(o, 600)}")
    return "\n".join(lines) + "\n"


def cmd_explain(args: argparse.Namespace) -> int:
    """``llmeval cache explain NODEID``."""
    from .cli import EXIT_OK, _open

    conn = _open(args)
    try:
        run_id, rec = find_record(conn, args.run, args.nodeid)
    finally:
        conn.close()
    d = explain(rec, _cache_path(args))
    if args.json:
        print(json.dumps({"run": run_id, **d}, indent=2, default=str))
    else:
        print(render(run_id, d), end="")
    return EXIT_OK
