"""A sandbox for the benchmarks, in its own process, that logs every Web API request it answers.

Run as `python -m tests.bench.serve STATE_DIR LEADS SEED LATENCY_MS LOG`: it prints one JSON line (the
environment that points l2c at it, the CA path, the org's size) and serves until stdin closes; the line
`advance DAYS` on stdin moves the org's clock (a day of new leads and changes), `reset` starts a fresh
service-protection window; each answers one JSON line.
The server lives apart from the clients so its CPU time does not share their interpreter lock, as a real
Dataverse would not. Each answered Web API request is one JSON line in LOG (method, path, query, Prefer,
Content-Type, body for POSTs, status): the floor bench replays exactly these requests.
"""

from __future__ import annotations

import base64
import json
import sys
import threading
import time
from pathlib import Path
from typing import Any

from sandbox.runtime import OrgState, Sandbox, SandboxOptions
from sandbox.server import Faults
from sandbox.wire import Request, Response


class Recorder:
    """Wraps the sandbox app: answers as it does and appends one line per Web API request to the log."""

    def __init__(self, app: Any, log: Path) -> None:
        self.app = app
        self.stream = log.open("a", buffering=1, encoding="utf-8")
        self.lock = threading.Lock()

    def __call__(self, request: Request) -> Response:
        received = time.time()
        response: Response = self.app(request)
        if request.path.startswith("/api/data/"):
            line = json.dumps({
                "received": round(received, 4), "answered": round(time.time(), 4),
                "method": request.method, "path": request.path, "query": request.query,
                "prefer": request.headers.get("Prefer", ""), "content_type": request.headers.get("Content-Type", ""),
                "body": base64.b64encode(request.body).decode() if request.body else "",
                "status": response.status,
            })
            with self.lock:
                self.stream.write(line + "\n")
        return response


def reset(sandbox: Sandbox) -> float:
    """Start a fresh service-protection window (each contender gets the default limits to itself, as if it ran
    alone); returns the server execution seconds the window held, i.e. the previous contender's."""
    protection = sandbox.protection
    with protection._lock:  # a bench-only reach into the sandbox: it has no public reset
        spent = sum(user.execution_ms for user in protection._users.values()) / 1000
        protection._users.clear()
    return round(spent, 1)


def main(argv: list[str]) -> None:
    state_dir, leads, seed, latency_ms, log = Path(argv[0]), int(argv[1]), int(argv[2]), int(argv[3]), Path(argv[4])
    options = SandboxOptions(faults=Faults(latency_ms=latency_ms, only_paths="/api/data/"))
    with Sandbox(state_dir, OrgState(seed=seed, leads=leads), options) as sandbox:
        assert sandbox.server is not None
        sandbox.server.app = Recorder(sandbox.app, log)
        print(json.dumps({"env": sandbox.env(), "ca": str(sandbox.tls.ca_path),
                          "simulate_seconds": round(sandbox.org.stats["simulate_seconds"], 1),
                          "audit_rows": sandbox.org.audits.height,
                          "rows": {name: frame.height for name, frame in sandbox.org.rows.items()}}), flush=True)
        for line in sys.stdin:  # commands from the bench; serve until it closes our stdin
            command, _, days = line.partition(" ")
            if command == "advance":
                state = sandbox.advance(float(days))
                print(json.dumps({"days": state.days, "audit_rows": sandbox.org.audits.height}), flush=True)
            elif command.strip() == "reset":
                print(json.dumps({"execution_s": reset(sandbox)}), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
