"""How long `.env` takes to read, by its length (issue 24; `make bench`, never in CI).

Each size is read by `load_settings()` in a fresh interpreter (import time subtracted: the same interpreter with an
empty `.env`). Linear: seconds per 10k lines stay the same from 10k to 150k lines (a 150k-line file is ~12.5 MB).
Before: python-dotenv resolved `${VAR}` by copying every value read so far for each line, and pydantic-settings'
own .env source walked every field for each unknown name: 4.7 s for 10k lines, 13 s for 20k, 45 s for 40k.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.bench

READ = "from config.settings import load_settings; assert load_settings().page_size == 123"


def seconds_to_read(folder: Path, lines: int) -> float:
    body = "".join(f"SOME_VARIABLE_{i}=value-{i}-{'x' * 50}\n" for i in range(lines))
    (folder / ".env").write_text(body + "L2C_PAGE_SIZE=123\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DATAVERSE_", "AZURE_", "L2C_"))}
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", READ], cwd=folder, env=env, check=True, timeout=900)
    return time.perf_counter() - started


def test_env_file_read_time_grows_linearly(tmp_path: Path) -> None:
    base = seconds_to_read(tmp_path, 0)
    figures = {lines: round(seconds_to_read(tmp_path, lines) - base, 2) for lines in (10_000, 50_000, 150_000)}
    per_10k = {lines: round(s / lines * 10_000, 3) for lines, s in figures.items()}
    print(json.dumps({"import seconds": round(base, 2), "seconds by lines": figures, "seconds per 10k lines": per_10k},
                     indent=2))
    assert per_10k[150_000] < 3 * per_10k[10_000] + 0.1  # linear, give or take the noise of a shared machine
