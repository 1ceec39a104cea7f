"""The `l2c` command: parses arguments, loads settings, runs one command, maps errors to exit codes.

L2CError is caught here once and printed as one line (what, why, what to do); `--verbose` adds the
traceback. Anything else is a bug: exit 1 with the traceback. SIGINT and SIGTERM ask the run to stop
(ground/stop.py): the extract's streams end between two pages and its main thread marks the manifest and frees
the lock; elsewhere the handler raises at once and the all-or-nothing writes keep the previous files. Either way
one line, exit 130 (SIGINT) or 143 (SIGTERM).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import sys
import threading
import traceback
from collections.abc import Callable, Iterator, Sequence
from types import FrameType

from exports import FORMATS
from ground import stop
from ground.errors import L2CError, local_error

log = logging.getLogger("l2c")

Command = Callable[[argparse.Namespace], int]


def _run(args: argparse.Namespace) -> int:
    from l2c import pipeline

    return pipeline.run(args)


def _extract(args: argparse.Namespace) -> int:
    from l2c import pipeline

    return pipeline.extract_only(args)


def _status(args: argparse.Namespace) -> int:
    from config.settings import load_settings
    from connector.status import status

    for line in status(load_settings()):
        print(line)
    return 0


def _doctor(args: argparse.Namespace) -> int:
    from config.settings import load_settings
    from connector.doctor import doctor
    from l2c.pipeline import resolved

    settings = load_settings()
    if settings.source == "link":
        from connector.link_doctor import doctor_link

        return doctor_link(settings)
    with resolved(settings) as resolved_settings:
        return doctor(resolved_settings)


def _transform(args: argparse.Namespace) -> int:
    from l2c import pipeline

    return pipeline.transform_only(args)


def _export(args: argparse.Namespace) -> int:
    from pathlib import Path

    from config.settings import load_settings
    from exports import OCEL_FORMATS, export
    from transforms.build import object_versions

    settings = load_settings()
    if args.format in OCEL_FORMATS:
        object_versions(settings)  # every version of each object: OCEL's attribute changes, read from the lake
    done = export(settings, args.format, Path(args.out))
    counts = f"{done.events} events" + (f", {done.cases} cases" if done.cases else "") + (
        f", {done.objects} objects" if done.objects else "")
    if args.format == "pa-incremental":
        written = ", ".join(p.name for p in done.files) or "nothing new since the last export"
        print(f"export pa-incremental: {counts} appended to {done.path}: {written}")
    else:
        print(f"export {args.format}: {counts} -> {done.path}")
    return 0


def _report(args: argparse.Namespace) -> int:
    from pathlib import Path

    from config.settings import load_settings
    from exports.report import write_report

    path = write_report(load_settings(), Path(args.out))
    print(f"report: {path}")
    return 0


def _sandbox_serve(args: argparse.Namespace) -> int:
    from l2c import sandbox_cli

    return sandbox_cli.serve(args)


def _sandbox_advance(args: argparse.Namespace) -> int:
    from l2c import sandbox_cli

    return sandbox_cli.advance(args)


def _sandbox_truth(args: argparse.Namespace) -> int:
    from l2c import sandbox_cli

    return sandbox_cli.truth(args)


def _sandbox_export_link(args: argparse.Namespace) -> int:
    from l2c import sandbox_cli

    return sandbox_cli.export_link(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="l2c",
        description="Dataverse lead-to-cash connector: incremental extraction into a Parquet lake and a "
        "process-mining event log (Parquet + DuckDB). Without DATAVERSE_URL it runs against the built-in "
        "sandbox; with L2C_SOURCE=link it reads an Azure Synapse Link / Link to Fabric export at L2C_LINK_URL "
        "instead of the Web API.",
        epilog="exit codes: 0 ok; 2 bad configuration or usage; 3 authentication or permission; 4 Dataverse "
        "(or the Link export) unavailable after retries; 5 another run holds the data directory; 6 the local "
        "environment refuses (disk full, read-only, permission denied, a path that cannot be used); 130/143 "
        "interrupted (SIGINT/SIGTERM); 1 a bug.",
    )
    parser.add_argument("--verbose", "-v", action="store_true", help="debug logging and tracebacks on errors")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    sub.add_parser("run", help="extract + transform + load (what `make extract` calls)").set_defaults(func=_run)
    sub.add_parser("extract", help="incremental pull into the raw lake").set_defaults(func=_extract)
    transform = sub.add_parser(
        "transform", help="build the event log from the lake: event_log.parquet + l2c.duckdb",
        description="Build the event log from the raw lake. Incremental: only the cases touched by rows landed "
                    "since the last build are recomputed (the result equals a full rebuild).")
    transform.add_argument("--full", action="store_true",
                           help="ignore the previous build and recompute every case from the whole lake")
    transform.set_defaults(func=_transform)
    export = sub.add_parser(
        "export", help="files for mining tools",
        description="Write the event log of the last transform for a process-mining tool: xes (IEEE 1849), "
                    "ocel2-sqlite / ocel2-json (OCEL 2.0: leads, opportunities, quotes, orders, invoices, accounts "
                    "and users as objects), csv (Celonis, Disco, ProcessMind, Power Automate Process Mining), or "
                    "pa-incremental (append the events new since the last export to a folder as "
                    "YYYYMMDDHHMMSS.csv, for Power Automate's incremental refresh).")
    export.add_argument("--format", required=True, choices=list(FORMATS))
    export.add_argument("--out", required=True, help="the file to write (for pa-incremental: the folder)")
    export.set_defaults(func=_export)
    report = sub.add_parser("report", help="one self-contained HTML page: process map, variants, KPIs")
    report.add_argument("--out", default="report.html", help="the HTML file to write (default: report.html)")
    report.set_defaults(func=_report)
    sub.add_parser("status", help="per table: last sync, rows, token age, last error").set_defaults(func=_status)
    sub.add_parser("doctor", help="check config, token, WhoAmI, privileges, change tracking").set_defaults(
        func=_doctor)

    sandbox = sub.add_parser("sandbox", help="the built-in Dataverse emulator")
    sandbox_sub = sandbox.add_subparsers(dest="sandbox_command", required=True, metavar="SANDBOX_COMMAND")
    serve = sandbox_sub.add_parser("serve", help="run the emulator standalone and print the export lines")
    serve.add_argument("--port", type=int, default=0, help="TCP port on 127.0.0.1 (default: a free one)")
    serve.add_argument("--seed", type=int, default=None, help="org seed (default: the saved org's, else 42)")
    serve.add_argument("--leads", type=int, default=None, help="org size in leads (default: saved, else 1000)")
    serve.add_argument("--state-dir", default=None, help="where the org state and CA live "
                       "(default: $L2C_DATA_DIR/sandbox)")
    serve.add_argument("--latency-ms", type=float, default=0.0, help="added latency per request")
    serve.add_argument("--throttle", type=float, default=0.0, metavar="FRACTION",
                       help="reject this fraction of Web API requests with 429 + Retry-After")
    serve.add_argument("--retry-after", type=int, default=1, help="Retry-After seconds of --throttle 429s")
    serve.add_argument("--fail-503", type=float, default=0.0, metavar="FRACTION", help="answer 503 this often")
    serve.add_argument("--drop", type=float, default=0.0, metavar="FRACTION", help="drop connections this often")
    serve.add_argument("--truncate", type=float, default=0.0, metavar="FRACTION",
                       help="truncate response bodies this often")
    serve.add_argument("--request-limit", type=int, default=6000, help="requests per user per 300 s window")
    serve.add_argument("--no-audit-read", action="store_true",
                       help="withdraw prvReadAuditSummary and prvReadRecordAuditHistory (audit -> 403)")
    serve.add_argument("--no-change-tracking", action="append", default=[], metavar="TABLE",
                       help="turn change tracking off for a table (repeatable)")
    serve.add_argument("--not-member", action="store_true",
                       help="the app has no application user in the org (every Web API request -> 403 0x80072560)")
    serve.add_argument("--api-restricted", action="store_true",
                       help="the admin restricted Dataverse API access for the app (every Web API request -> 403 "
                       "0x80095ffc)")
    serve.add_argument("--token-lifetime", type=int, default=3599, help="access token lifetime in seconds")
    serve.add_argument("--clock-skew", type=float, default=0.0, metavar="SECONDS",
                       help="run Entra's clock this far ahead of this machine's (negative: behind); past 600 s a "
                            "certificate sign-in fails with AADSTS700024, as with a wrong client clock")
    serve.add_argument("--corrupt", action="append", default=[], metavar="KIND",
                       help="serve malformed data for a few named records (repeatable); an unknown KIND lists the "
                            "kinds")
    serve.add_argument("--certificate", action="store_true",
                       help="print the certificate credential instead of the client secret")
    serve.set_defaults(func=_sandbox_serve)

    advance = sandbox_sub.add_parser("advance", help="move the simulated clock: new leads, state changes, "
                                     "deletions")
    advance.add_argument("--days", type=float, required=True)
    advance.add_argument("--state-dir", default=None)
    advance.set_defaults(func=_sandbox_advance)

    truth = sandbox_sub.add_parser("truth", help="write the ground-truth event log of the sandbox org")
    truth.add_argument("--out", required=True, help="output file (.parquet or .csv)")
    truth.add_argument("--state-dir", default=None)
    truth.set_defaults(func=_sandbox_truth)

    link = sandbox_sub.add_parser("export-link", help="write the sandbox org as Azure Synapse Link for Dataverse "
                                  "exports it (CSV or Delta); run again after `advance` to continue the export")
    link.add_argument("--format", choices=("csv", "delta"), required=True)
    link.add_argument("--mode", choices=("append-only", "in-place"), default=None,
                      help="CSV only: a row per captured change (default) or the current rows")
    link.add_argument("--incremental-folders", action="store_true",
                      help="CSV append-only in timestamped folders, one per interval that changed")
    link.add_argument("--interval-minutes", type=int, default=15,
                      help="the Link's sync interval (default 15, the minimum for incremental folders)")
    link.add_argument("--out", required=True, help="the export root folder (new, empty, or an earlier export)")
    link.add_argument("--state-dir", default=None)
    link.set_defaults(func=_sandbox_export_link)
    return parser


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def _stop_requested(signum: int, frame: FrameType | None) -> None:
    if stop.request(signum) and stop.raises_now():
        raise stop.Interrupted(signum)


@contextlib.contextmanager
def _stoppable() -> Iterator[None]:
    """SIGINT and SIGTERM ask the command to stop (ground/stop.py) while it runs; the previous handlers after."""
    stop.clear()
    previous = {signum: signal.signal(signum, _stop_requested) for signum in STOP_SIGNALS}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        stop.clear()


def _interrupted(exc: stop.Interrupted) -> int:
    print(f"l2c: {exc}: stopped; nothing half-written is kept, and the next run goes on from what is durable",
          file=sys.stderr, flush=True)
    if any(t.name.startswith("l2c-") and t.is_alive() for t in threading.enumerate()):
        # A stream still waits for an answer after the grace (connector/extract.py STOP_GRACE_S): it lands
        # nothing more, and the interpreter would wait for it at exit. Its state and the lock are settled.
        sys.stdout.flush()
        os._exit(exc.exit_code)
    return exc.exit_code


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse: 2 on usage errors, 0 for --help
        return int(exc.code or 0)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(message)s",
                        stream=sys.stderr)
    for noisy in ("urllib3", "msal"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    stoppable = _stoppable() if args.command != "sandbox" else contextlib.nullcontext()  # serve has its own
    try:
        with stoppable:
            try:
                return int(args.func(args))
            except Exception:
                stop.check()  # an error the stop request caused: DuckDB answers a signal with "Query interrupted"
                raise
    except stop.Interrupted as exc:
        return _interrupted(exc)
    except L2CError as exc:
        if args.verbose:
            traceback.print_exc()
        print(f"l2c: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("l2c: interrupted", file=sys.stderr)
        return 130
    except OSError as exc:  # the machine refused (disk full, read-only, permission): one line, exit 6
        local = local_error(exc)
        if local is None:
            return _bug()
        if args.verbose:
            traceback.print_exc()
        print(f"l2c: error: {local}", file=sys.stderr)
        return local.exit_code
    except Exception:
        return _bug()


def _bug() -> int:
    """An exception nobody raised on purpose: say so, with the traceback."""
    traceback.print_exc()
    print("l2c: internal error (a bug: please report it with the traceback above)", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
