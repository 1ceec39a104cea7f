"""`l2c sandbox serve|advance|truth|export-link`, and the in-process sandbox `l2c run` uses without DATAVERSE_URL."""

from __future__ import annotations

import argparse
import contextlib
import os
import shlex
import signal
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import requests
from pydantic import SecretStr

from config.settings import Settings, load_settings
from ground.errors import ConfigError, SourceUnavailable

STATE_SUBDIR = "sandbox"
ADMIN_KEY_VAR = "L2C_SANDBOX_KEY"


def _state_dir(args: argparse.Namespace, settings: Settings) -> Path:
    return Path(args.state_dir) if getattr(args, "state_dir", None) else settings.data_dir / STATE_SUBDIR


def _default_state(settings: Settings):  # noqa: ANN202
    from sandbox.runtime import OrgState

    return OrgState(seed=settings.sandbox_seed, leads=settings.sandbox_leads)


@contextlib.contextmanager
def in_process(settings: Settings) -> Iterator[Settings]:
    """Start the sandbox for this process and yield settings that point at it."""
    from sandbox.runtime import Sandbox, load_state, save_state

    state_dir = settings.data_dir / STATE_SUBDIR
    state = load_state(state_dir, _default_state(settings))
    save_state(state_dir, state)
    sandbox = Sandbox(state_dir, state).start()
    try:
        env = sandbox.env()
        print(f"sandbox: DATAVERSE_URL is not set, so l2c runs against the built-in sandbox at {sandbox.url} "
              f"(seed {state.seed}, {state.leads} leads, clock {state.clock:%Y-%m-%d %H:%M} UTC)", flush=True)
        yield settings.model_copy(update={
            "dataverse_url": env["DATAVERSE_URL"],
            "azure_tenant_id": env["AZURE_TENANT_ID"],
            "azure_client_id": env["AZURE_CLIENT_ID"],
            "azure_client_secret": SecretStr(env["AZURE_CLIENT_SECRET"]),
            "azure_client_certificate_path": None,
            "azure_authority_host": env["AZURE_AUTHORITY_HOST"],
            "ca_bundle": Path(env["L2C_CA_BUNDLE"]),
        })
    finally:
        sandbox.stop()


def serve(args: argparse.Namespace) -> int:
    from sandbox import corrupt, protection, server
    from sandbox.runtime import OrgState, Sandbox, SandboxOptions, load_state, save_state
    from sandbox.webapi import PRV_AUDIT_SUMMARY, PRV_RECORD_HISTORY

    settings = load_settings()
    state_dir = _state_dir(args, settings)
    state = load_state(state_dir, _default_state(settings))
    if args.seed is not None or args.leads is not None:
        state = OrgState(seed=args.seed if args.seed is not None else state.seed,
                         leads=args.leads if args.leads is not None else state.leads, days=0.0)
    unknown = sorted(set(args.corrupt) - set(corrupt.KINDS))
    if unknown:
        kinds = "; ".join(f"{kind}: {what}" for kind, what in corrupt.KINDS.items())
        raise ConfigError(f"unknown --corrupt kind {', '.join(unknown)}", hint=f"the kinds are {kinds}")
    if 0 < state.leads < 100 or state.leads < 0:
        raise ConfigError(f"--leads must be 0 (a new org without a lead) or at least 100, got {state.leads}")
    save_state(state_dir, state)
    options = SandboxOptions(
        port=args.port,
        faults=server.Faults(latency_ms=args.latency_ms, p_503=args.fail_503, p_drop=args.drop,
                             p_truncate=args.truncate, only_paths="/api/data/"),
        limits=protection.Limits(requests=args.request_limit),
        throttle_fraction=args.throttle,
        throttle_retry_after=args.retry_after,
        withdrawn_privileges={PRV_AUDIT_SUMMARY, PRV_RECORD_HISTORY} if args.no_audit_read else set(),
        change_tracking_off=set(args.no_change_tracking),
        not_member=args.not_member,
        api_restricted=args.api_restricted,
        token_lifetime=args.token_lifetime,
        corrupt=frozenset(args.corrupt),
        clock_skew=args.clock_skew,
    )
    print(f"# generating the sandbox org: seed {state.seed}, {state.leads} leads ...", file=sys.stderr, flush=True)
    sandbox = Sandbox(state_dir, state, options).start()
    org = sandbox.org
    print(f"# sandbox org ready in {org.stats.get('simulate_seconds', 0):.1f}s: "
          + ", ".join(f"{name} {frame.height}" for name, frame in org.rows.items())
          + f", audits {org.audits.height}; clock {state.clock:%Y-%m-%d %H:%M} UTC", file=sys.stderr)
    print("# paste these lines into your shell to point l2c at this sandbox:", flush=True)
    env = sandbox.env(certificate=args.certificate)
    env[ADMIN_KEY_VAR] = sandbox.app.admin_key
    env["L2C_DATA_DIR"] = str(settings.data_dir)
    for key, value in env.items():
        print(f"export {key}={shlex.quote(value)}", flush=True)
    print("# Ctrl-C stops the sandbox", file=sys.stderr, flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        stop.wait()
    except KeyboardInterrupt:
        pass
    finally:
        sandbox.stop()
    return 0


def advance(args: argparse.Namespace) -> int:
    from sandbox.runtime import OrgState, load_state, save_state

    if args.days <= 0:
        raise ConfigError(f"--days must be positive, got {args.days}")
    settings = load_settings()
    key = os.environ.get(ADMIN_KEY_VAR)
    if key and settings.dataverse_url:
        # A standalone sandbox is running: move its clock through the admin API.
        from connector.tls import trusting_session

        session = trusting_session(settings.ca_bundle)
        try:
            response = session.post(f"{settings.dataverse_url}/_sandbox/advance", params={"days": args.days},
                                    headers={"X-Sandbox-Key": key}, timeout=600)
        except requests.RequestException as exc:
            raise SourceUnavailable(f"cannot reach the sandbox at {settings.dataverse_url}: {type(exc).__name__}",
                                    hint="is `l2c sandbox serve` still running?") from None
        if response.status_code != 200:
            raise ConfigError(f"the sandbox refused to advance: {response.text[:200]}")
        clock = response.json()["clock"]
    elif settings.dataverse_url:
        raise ConfigError("DATAVERSE_URL points at a real environment (no L2C_SANDBOX_KEY): there is no clock "
                          "to advance", hint="unset DATAVERSE_URL to advance the built-in sandbox")
    else:
        state_dir = _state_dir(args, settings)
        state = load_state(state_dir, _default_state(settings))
        state = OrgState(state.seed, state.leads, state.days + args.days)
        save_state(state_dir, state)
        clock = state.clock.isoformat()
    print(f"sandbox clock advanced by {args.days:g} days to {clock}")
    return 0


def truth(args: argparse.Namespace) -> int:
    from sandbox.runtime import load_state
    from sandbox.simulator import simulate

    settings = load_settings()
    state = load_state(_state_dir(args, settings), _default_state(settings))
    org = simulate(state.seed, state.leads, state.clock)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix == ".csv":
        org.truth.write_csv(out)
    else:
        org.truth.write_parquet(out)
    print(f"wrote {org.truth.height} ground-truth events of {org.truth.get_column('case_id').n_unique()} cases "
          f"to {out} (seed {state.seed}, {state.leads} leads, clock {state.clock:%Y-%m-%d %H:%M} UTC)")
    return 0


def export_link(args: argparse.Namespace) -> int:
    from sandbox.link_export import LinkOptions, export_link
    from sandbox.runtime import load_state
    from sandbox.simulator import simulate

    if args.format == "delta" and args.mode is not None:
        raise ConfigError("--mode is a CSV option: a Delta export always holds the latest row per Id",
                          hint="drop --mode")
    options = LinkOptions(format=args.format, mode=args.mode or "append-only",
                          incremental=args.incremental_folders, interval_minutes=args.interval_minutes)
    settings = load_settings()
    state = load_state(_state_dir(args, settings), _default_state(settings))
    org = simulate(state.seed, state.leads, state.clock)
    result = export_link(org, Path(args.out), options)
    where = f"(seed {state.seed}, {state.leads} leads, clock {state.clock:%Y-%m-%d %H:%M} UTC)"
    if result.noop:
        print(f"{result.out} already holds the Link export up to the sandbox clock {where}: nothing to add")
    else:
        print(f"wrote the {options.format} Link export to {result.out} {where}: {result.rows} rows in "
              f"{result.seconds:.1f}s")
    return 0
