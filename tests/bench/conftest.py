"""The sandbox org of each benchmarked size, one at a time, shared by the extract and transform benches."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.bench.harness import SIZES, Org


@pytest.fixture(scope="session", params=SIZES, ids=lambda n: f"{n // 1000}k")
def org(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Org]:
    served = Org(request.param, tmp_path_factory.mktemp(f"bench-{request.param}-"))
    try:
        yield served
    finally:
        served.stop()
