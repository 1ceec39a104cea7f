"""`l2c sandbox export-link` end to end through the installed console script: export, advance, export again."""

from __future__ import annotations

from pathlib import Path

from deltalake import DeltaTable

LEADS = {"L2C_SANDBOX_LEADS": "120", "L2C_SANDBOX_SEED": "7"}


def test_export_advance_export_continues_the_link(l2c, tmp_path: Path) -> None:  # noqa: ANN001
    out = tmp_path / "lake"
    first = l2c("sandbox", "export-link", "--format", "csv", "--out", str(out), **LEADS)
    assert first.returncode == 0, first.stderr
    assert "wrote the csv Link export" in first.stdout and "seed 7, 120 leads" in first.stdout
    leads = (out / "lead" / "2025.csv").read_bytes()
    assert l2c("sandbox", "advance", "--days", "30", **LEADS).returncode == 0
    again = l2c("sandbox", "export-link", "--format", "csv", "--out", str(out), **LEADS)
    assert again.returncode == 0, again.stderr
    assert (out / "lead" / "2025.csv").read_bytes().startswith(leads)
    assert (out / "lead" / "2026.csv").stat().st_size > 0  # leads of the advanced days
    same = l2c("sandbox", "export-link", "--format", "csv", "--out", str(out), **LEADS)
    assert same.returncode == 0 and "nothing to add" in same.stdout
    other = l2c("sandbox", "export-link", "--format", "delta", "--out", str(out), **LEADS)
    assert other.returncode == 2 and "Traceback" not in other.stderr
    assert other.stderr.count("\n") == 1 and "holds another sandbox Link export" in other.stderr
    delta = l2c("sandbox", "export-link", "--format", "delta", "--out", str(tmp_path / "delta"), **LEADS)
    assert delta.returncode == 0, delta.stderr
    assert DeltaTable(str(tmp_path / "delta" / "deltalake" / "audit_partitioned")).version() == 0
    folders = l2c("sandbox", "export-link", "--format", "csv", "--incremental-folders", "--mode", "in-place",
                  "--out", str(tmp_path / "bad"), **LEADS)
    assert folders.returncode == 2 and "append-only" in folders.stderr
