"""Fixtures of the fault suite: its own county and city clusters, one cascade per scenario, the table.

The clusters are the suite's own (scenarios stop and restart them), on free loopback ports, for
this module only. The table of figures is printed at the end of the run and written to
.local/faults.json.
"""

from __future__ import annotations

import shutil
import uuid
from collections.abc import AsyncIterator, Iterator

import pytest

from tests.faults.harness import (
    RESULTS_JSON,
    WORK_DIR,
    Cascade,
    FaultClusters,
    FaultTable,
    durations,
)

TABLE = pytest.StashKey[FaultTable]()


@pytest.fixture(scope="module")
def fault_clusters(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FaultClusters]:
    """Start the county and city clusters; stop them (by pid) after the module."""
    clusters = FaultClusters.start(tmp_path_factory.mktemp("fault-kafka"))
    try:
        yield clusters
    finally:
        clusters.stop_all()


@pytest.fixture(scope="session")
def fault_table(request: pytest.FixtureRequest) -> Iterator[FaultTable]:
    """The table every scenario adds its row to; written to .local/faults.json at the end."""
    table = FaultTable(durations().full)
    request.config.stash[TABLE] = table
    yield table
    if table.rows:
        table.write_json(RESULTS_JSON)


@pytest.fixture
async def cascade(
    fault_clusters: FaultClusters, request: pytest.FixtureRequest
) -> AsyncIterator[Cascade]:
    """A cascade with a fresh topic prefix; its nodes are stopped (by pid) afterwards."""
    await fault_clusters.ensure_up()
    directory = WORK_DIR / request.node.name
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)
    scenario = Cascade(fault_clusters, f"f{uuid.uuid4().hex[:10]}", directory)
    try:
        yield scenario
    finally:
        scenario.stop_nodes()
        await fault_clusters.ensure_up()


def pytest_terminal_summary(
    terminalreporter: pytest.TerminalReporter, config: pytest.Config
) -> None:
    """Print the table of every scenario run, with where its JSON went."""
    table = config.stash.get(TABLE, None)
    if table is None or not table.rows:
        return
    terminalreporter.write_sep("=", "fault scenarios")
    terminalreporter.write_line(table.render())
    terminalreporter.write_line(f"(written to {RESULTS_JSON})")
