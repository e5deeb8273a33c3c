"""The ``llmeval`` console (also ``python -m pytest_llmeval``): models, runs, export, compare.

    llmeval models [--models-file evals/models.yaml]
    llmeval runs [--limit 20]
    llmeval export --format csv|json|prometheus [--run ID|latest] [--output FILE] [--pushgateway URL]
    llmeval compare [--baseline RUN] [--current RUN]

``--db PATH`` (default ``data/metrics.db``) picks the metrics database that
pytest runs write. Exit status: 0 done, 1 failed (e.g. a push), 2 usage error.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .redact import safe_terminal

DEFAULT_DB = "data/metrics.db"
DEFAULT_MODELS_FILE = "evals/models.yaml"
EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


class UsageError(Exception):
    """Bad arguments: exit status 2 with the message."""


class Failed(Exception):
    """The command could not do its work: exit status 1 with the message."""


# -- compare ---------------------------------------------------------------------
@dataclass
class MetricDelta:
    """One metric of one (test, model) in two runs, over the cases both ran."""

    metric: str
    baseline: float | None
    current: float | None
    delta: float | None = None
    ci: tuple[float, float] | None = None
    p_value: float | None = None


@dataclass
class PairComparison:
    """A (test, model) that both runs have."""

    test: str
    model: str
    shared: int
    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    metrics: list[MetricDelta] = field(default_factory=list)
    changed: list[dict[str, Any]] = field(default_factory=list)  # case_id, baseline outcome, current outcome


def _by_case(run: dict[str, Any]) -> dict[tuple[str, str], dict[str, dict[str, Any]]]:
    out: dict[tuple[str, str], dict[str, dict[str, Any]]] = {}
    for r in run["results"]:
        if r["outcome"] != "skipped":
            out.setdefault((r["test"], r["model"]), {})[r["case_id"]] = r
    return out


def _scores(r: dict[str, Any]) -> dict[str, float]:
    return {str(s["name"]): float(s["value"]) for s in r.get("scores") or [] if s.get("value") is not None}


def _delta(metric: str, b: list[float], c: list[float], stat: str) -> MetricDelta:
    from .gate import bootstrap_delta
    from .results import percentile

    if not b:
        return MetricDelta(metric, None, None)
    if stat == "mean":
        bv, cv = sum(b) / len(b), sum(c) / len(c)
    elif stat == "sum":
        bv, cv = sum(b), sum(c)
    else:
        bv, cv = percentile(b, float(stat[1:])), percentile(c, float(stat[1:]))
    md = MetricDelta(metric, bv, cv, None if bv is None or cv is None else cv - bv)
    if len(b) >= 2 and stat != "sum":
        lo, hi = bootstrap_delta(b, c, stat=stat)
        if not (math.isnan(lo) or math.isnan(hi)):
            md.ci = (lo, hi)
    return md


def compare_runs(base: dict[str, Any], cur: dict[str, Any]) -> tuple[list[PairComparison], list[str]]:
    """Per-metric deltas per (test, model) on shared cases, with the gate's statistics.

    Pass rate: exact McNemar p-value on the discordant cases and a paired
    bootstrap 95% interval; scores and latency quantiles: paired bootstrap
    intervals; cost: the plain difference. Also the cases whose outcome changed.
    """
    from .gate import mcnemar_exact

    b_all, c_all = _by_case(base), _by_case(cur)
    notes = []
    for key in b_all.keys() - c_all.keys():
        notes.append(f"{key[0]} [{key[1]}] is only in the baseline run")
    for key in c_all.keys() - b_all.keys():
        notes.append(f"{key[0]} [{key[1]}] is only in the current run")
    out = []
    for key in [k for k in c_all if k in b_all]:
        bc, cc = b_all[key], c_all[key]
        shared = sorted(bc.keys() & cc.keys())
        pc = PairComparison(
            key[0], key[1], len(shared), sorted(cc.keys() - bc.keys()), sorted(bc.keys() - cc.keys())
        )
        bp = [float(bc[c]["outcome"] == "passed") for c in shared]
        cp = [float(cc[c]["outcome"] == "passed") for c in shared]
        md = _delta("pass_rate", bp, cp, "mean")
        if shared:
            md.p_value = mcnemar_exact(
                sum(1 for x, y in zip(bp, cp, strict=True) if x and not y),
                sum(1 for x, y in zip(bp, cp, strict=True) if y and not x),
            )
        pc.metrics.append(md)
        names: dict[str, None] = {}
        for c in shared:
            for n in [*_scores(bc[c]), *_scores(cc[c])]:
                names.setdefault(n, None)
        for name in names:
            pairs = [(_scores(bc[c]).get(name), _scores(cc[c]).get(name)) for c in shared]
            pairs = [(x, y) for x, y in pairs if x is not None and y is not None]
            pc.metrics.append(_delta(f"score:{name}", [x for x, _ in pairs], [y for _, y in pairs], "mean"))
        lat = [(bc[c]["latency_s"], cc[c]["latency_s"]) for c in shared]
        lat = [(x, y) for x, y in lat if x is not None and y is not None]
        for q in ("50", "95"):
            pc.metrics.append(_delta(f"latency_p{q}", [x for x, _ in lat], [y for _, y in lat], f"p{q}"))
        pc.metrics.append(
            _delta(
                "cost", [bc[c]["cost"] or 0.0 for c in shared], [cc[c]["cost"] or 0.0 for c in shared], "sum"
            )
        )
        pc.changed = [
            {"case_id": c, "baseline": bc[c]["outcome"], "current": cc[c]["outcome"]}
            for c in shared
            if bc[c]["outcome"] != cc[c]["outcome"]
        ]
        out.append(pc)
    return out, notes


def _fmt(v: float | None) -> str:
    return "-" if v is None else f"{v:.3f}"


def _render_compare(
    base: dict[str, Any], cur: dict[str, Any], pairs: list[PairComparison], notes: list[str]
) -> str:
    lines = [
        f"baseline: {_run_label(base['run'])}",
        f"current:  {_run_label(cur['run'])}",
    ]
    for pc in pairs:
        lines.append("")
        extra = ""
        if pc.added or pc.removed:
            extra = f"; {len(pc.added)} case(s) only in current, {len(pc.removed)} only in baseline"
        lines.append(f"{safe_terminal(pc.test)} [{safe_terminal(pc.model)}]: {pc.shared} shared cases{extra}")
        lines.append(f"  {'metric':<28} {'baseline':>9} {'current':>9} {'delta':>8}  95% CI / p-value")
        for m in pc.metrics:
            stats = ""
            if m.ci is not None:
                stats = f"[{m.ci[0]:+.3f}, {m.ci[1]:+.3f}]"
            if m.p_value is not None:
                stats += f" p={m.p_value:.3g} (McNemar)"
            delta = "-" if m.delta is None else f"{m.delta:+.3f}"
            lines.append(
                f"  {safe_terminal(m.metric, 28):<28} {_fmt(m.baseline):>9} {_fmt(m.current):>9} {delta:>8}  {stats}".rstrip()
            )
        if pc.changed:
            lines.append(f"  changed cases ({len(pc.changed)}):")
            for ch in pc.changed:
                lines.append(f"    {safe_terminal(ch['case_id'], 80)}: {ch['baseline']} -> {ch['current']}")
        else:
            lines.append("  no case changed outcome")
    for n in notes:
        lines.append(f"note: {safe_terminal(n, 300)}")
    return "\n".join(lines) + "\n"


def _run_label(run: dict[str, Any]) -> str:
    models = ", ".join(run.get("models") or []) or "-"
    state = "" if run.get("complete") else " (incomplete)"
    return f"{run['id']} started {run['started']} models {safe_terminal(models, 80)}{state}"


# -- commands ----------------------------------------------------------------------
def _open(args: argparse.Namespace) -> Any:
    from .store import StoreError, connect

    path = Path(args.db or DEFAULT_DB)
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
        print(f"no runs in {args.db or DEFAULT_DB} yet")
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
        sys.stdout.write(_render_compare(base, cur, pairs, notes))
    return EXIT_OK


def cmd_models(args: argparse.Namespace) -> int:
    from .errors import ConfigError
    from .models import load_models

    path = Path(args.models_file)
    try:
        specs = load_models(path)
    except ConfigError as e:
        raise UsageError(str(e)) from None
    print(f"models in {path}:")
    width = max(len(n) for n in specs)
    for name, spec in specs.items():
        ok, why = spec.availability()
        print(f"  {name:<{width}}  {spec.type:<12} {'ready' if ok else why}")
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--db", default=argparse.SUPPRESS, metavar="PATH", help=f"metrics database (default {DEFAULT_DB})"
    )
    p = argparse.ArgumentParser(
        prog="llmeval", description="Inspect pytest-llmeval runs: models, runs, export, compare."
    )
    p.add_argument("--db", default=None, metavar="PATH", help=f"metrics database (default {DEFAULT_DB})")
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
    sp.set_defaults(func=cmd_compare)

    sp = sub.add_parser("models", help="configured models and whether each can run here")
    sp.add_argument("--models-file", default=DEFAULT_MODELS_FILE, metavar="PATH")
    sp.set_defaults(func=cmd_models)
    return p


def main(argv: list[str] | None = None) -> int:
    """Run the console; returns the exit status."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # argparse printed the usage error (2) or the help (0)
        return int(e.code or 0) if isinstance(e.code, int) else EXIT_USAGE
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
