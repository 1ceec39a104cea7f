"""What the benchmarks share: org sizes, the sandbox process, contender processes and the results file.

Sizes: 10k and 100k leads by default; L2C_BENCH_1M=1 adds 1M (the sandbox: 8.6 GB, 3 minutes to simulate);
L2C_BENCH_SIZES=10000 (comma-separated) picks sizes explicitly.
L2C_MAX_CONCURRENCY (default 8) is every contender's concurrency; L2C_BENCH_LATENCY_MS (default 100) the
latency the sandbox adds to each Web API request, under Dataverse's default service-protection limits.
Each measurement prints one Markdown table row and is appended as one JSON line (with the load average at
the time) to L2C_BENCH_RESULTS (default /tmp/l2c-bench/results.jsonl), from which BENCHMARKS.md is written.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import IO, Any

import certifi

REPO = Path(__file__).resolve().parents[2]
SEED = 7
CONCURRENCY = int(os.environ.get("L2C_MAX_CONCURRENCY", "8"))
LATENCY_MS = int(os.environ.get("L2C_BENCH_LATENCY_MS", "100"))
PAGE_SIZE = 5000
RESULTS = Path(os.environ.get("L2C_BENCH_RESULTS", "/tmp/l2c-bench/results.jsonl"))
SIZES = ([int(n) for n in os.environ["L2C_BENCH_SIZES"].split(",")] if os.environ.get("L2C_BENCH_SIZES")
         else [10_000, 100_000] + ([1_000_000] if os.environ.get("L2C_BENCH_1M") == "1" else []))
# Variables of this machine or shell that would point a contender elsewhere; the bench sets its own.
SCRUBBED = ("DATAVERSE_", "AZURE_", "L2C_", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "SSL_CERT_FILE")


class Org:
    """A sandbox org of `leads` leads served by tests/bench/serve.py in its own process."""

    def __init__(self, leads: int, work: Path) -> None:
        self.leads, self.work = leads, work
        self.log = work / "requests.jsonl"
        self.log.touch()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.bench.serve", str(work / "sandbox"), str(leads), str(SEED),
             str(LATENCY_MS), str(self.log)],
            cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=clean_env())
        self.info = json.loads(self._stdout().readline())
        bundle = work / "certifi-and-sandbox.pem"  # for the SDK, whose session trusts REQUESTS_CA_BUNDLE
        bundle.write_bytes(Path(certifi.where()).read_bytes() + b"\n" + Path(self.info["ca"]).read_bytes())
        self.sdk_bundle = bundle
        self.data_dir = work / "data"

    def _stdout(self) -> IO[str]:
        assert self.process.stdout is not None
        return self.process.stdout

    def mark(self) -> int:
        """How many Web API requests the sandbox has logged so far. serve.Recorder writes (line-buffered) each
        request's line before its answer leaves the server, so every answered request is already counted."""
        with self.log.open() as stream:
            return sum(1 for _ in stream)

    def advance(self, days: float) -> dict[str, Any]:
        assert self.process.stdin is not None
        self.process.stdin.write(f"advance {days}\n")
        self.process.stdin.flush()
        return json.loads(self._stdout().readline())  # type: ignore[no-any-return]

    def reset(self) -> float:
        """A fresh service-protection window for the next contender; the server seconds the last one used
        (sandbox-side execution time, pruned to the last 300 s)."""
        assert self.process.stdin is not None
        self.process.stdin.write("reset\n")
        self.process.stdin.flush()
        return float(json.loads(self._stdout().readline())["execution_s"])

    def env(self, **extra: str) -> dict[str, str]:
        return {**clean_env(), **self.info["env"], "L2C_DATA_DIR": str(self.data_dir),
                "L2C_MAX_CONCURRENCY": str(CONCURRENCY), "L2C_PAGE_SIZE": str(PAGE_SIZE), **extra}

    def stop(self) -> None:
        if self.process.stdin is not None:
            self.process.stdin.close()
        self.process.wait(timeout=600)  # the sandbox saves its org state on the way out (minutes at 1M leads)


def clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(SCRUBBED)}


def run(name: str, env: dict[str, str], **args: Any) -> dict[str, Any]:
    """One contender in a fresh process; its JSON result with the load average before it started."""
    load = Path("/proc/loadavg").read_text().split()[0]
    done = subprocess.run([sys.executable, "-m", "tests.bench.contenders", name, json.dumps(args, default=str)],
                          cwd=REPO, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise AssertionError(f"{name} failed:\n{done.stderr[-4000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    result["loadavg"] = float(load)
    return result


def record(bench: str, leads: int, **numbers: Any) -> None:
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    entry = {"bench": bench, "leads": leads, "at": time.strftime("%Y-%m-%dT%H:%M:%S"),
             "concurrency": CONCURRENCY, "latency_ms": LATENCY_MS, **numbers}
    with RESULTS.open("a") as stream:
        stream.write(json.dumps(entry, default=str) + "\n")


def row(*cells: Any) -> str:
    line = "| " + " | ".join(str(c) for c in cells) + " |"
    print(line)
    return line


def per_100k(requests: float, rows: int) -> float:
    return round(requests / rows * 100_000, 1) if rows else 0.0
