"""Where the transform's outputs live under the data directory: the one place the transform, the database load
(sql/load.py) and the exports agree on, so the exports can find the outputs without the code that reads the lake.
"""

from __future__ import annotations

from pathlib import Path

EVENT_LOG = "event_log.parquet"
CASES = "cases.parquet"
DATABASE = "l2c.duckdb"  # written by sql/load.py from the outputs of a build
OBJECTS = "objects-"  # state/transform/objects-<type>.parquet: every version of an OCEL object type's records


def state_dir(data_dir: Path) -> Path:
    """The transform's own folder: its state file and the frames of its generations."""
    return data_dir / "state" / "transform"


def object_versions_paths(data_dir: Path) -> dict[str, Path]:
    """OCEL object type -> the file of its versions, as the last `transforms.build.object_versions` wrote them."""
    return {path.stem.removeprefix(OBJECTS): path for path in sorted(state_dir(data_dir).glob(f"{OBJECTS}*.parquet"))}
