"""The node as an operator runs it: ``exchange-node run`` in its own process, stopped by SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time
from pathlib import Path

import aiohttp
import pytest
from department_client import publish, read_topic
from sample_records import PERSON, sample

from node.codec import load_schemas, packaged_schema_dir
from node.kafka.topics import TopicNames
from tests.integration.conftest import free_port

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

EXE = str(Path(sys.executable).with_name("exchange-node"))


def write_config(path: Path, clusters: dict[str, str], prefix: str, admin_port: int) -> None:
    """A county node config whose parent is the city cluster."""
    path.write_text(
        f"""
[node]
id = "{prefix}-cli"
level = "county"
region = "410102"

[local]
bootstrap = "{clusters["county"]}"
topic_prefix = "{prefix}"

[parent]
bootstrap = "{clusters["city"]}"
region = "410100"
topic_prefix = "{prefix}"

[topics]
partitions = 1

[admin]
port = {admin_port}

[log]
format = "json"
""",
        encoding="utf-8",
    )


async def get(url: str) -> tuple[int, str]:
    """GET ``url``; (status, body), or (0, error) if nothing answers."""
    try:
        async with aiohttp.ClientSession() as session, session.get(url) as response:
            return response.status, await response.text()
    except aiohttp.ClientError as error:
        return 0, str(error)


async def test_run_serves_health_and_metrics_and_stops_cleanly_on_sigterm(
    clusters: dict[str, str], prefix: str, tmp_path: Path
) -> None:
    """The CLI node becomes healthy, forwards a record, counts it, and exits 0 on SIGTERM."""
    admin_port = free_port()
    config = tmp_path / "county.toml"
    write_config(config, clusters, prefix, admin_port)
    log = (tmp_path / "node.log").open("wb")
    process = await asyncio.create_subprocess_exec(
        EXE, "run", "--config", str(config), stdout=log, stderr=asyncio.subprocess.STDOUT
    )
    try:
        deadline = time.monotonic() + 60
        status = 0
        while status != 200 and time.monotonic() < deadline and process.returncode is None:
            status, _ = await get(f"http://127.0.0.1:{admin_port}/healthz")
            await asyncio.sleep(0.2)
        assert status == 200, (tmp_path / "node.log").read_text()

        schemas = load_schemas(packaged_schema_dir())
        published = sample(
            schemas, PERSON, "410102", "region:410100", seed=7, created_ms=int(time.time() * 1000)
        )
        await publish(clusters["county"], TopicNames(prefix).outbox("PSB"), [published])
        got = await read_topic(
            clusters["city"], TopicNames(prefix).up("410102"),
            until=lambda rs: len(rs) >= 1, timeout_s=60,
        )  # fmt: skip
        assert [r.record_id for r in got] == [published.envelope.record_id]

        counted = 'exchange_records_out_total{direction="up",link="local"} 1.0'
        for _ in range(100):  # counters move when the batch is committed, a moment later
            status, metrics = await get(f"http://127.0.0.1:{admin_port}/metrics")
            if counted in metrics:
                break
            await asyncio.sleep(0.1)
        assert status == 200
        assert counted in metrics
        assert 'exchange_link_up{link="parent"} 1.0' in metrics
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(process.wait(), timeout=60)
        log.close()
    lines = (tmp_path / "node.log").read_text()
    assert code == 0, lines
    assert '"event": "node_stopped"' in lines
    assert '"event": "batch"' in lines


async def test_check_config_names_the_wrong_field(tmp_path: Path) -> None:
    """check-config exits 2 and names the field path for a bad region code."""
    config = tmp_path / "bad.toml"
    config.write_text(
        '[node]\nid = "x"\nlevel = "county"\nregion = "41010"\n[local]\nbootstrap = "127.0.0.1:1"\n'
    )
    process = await asyncio.create_subprocess_exec(
        EXE, "check-config", str(config), stderr=asyncio.subprocess.PIPE
    )
    _, stderr = await asyncio.wait_for(process.communicate(), timeout=30)
    assert process.returncode == 2
    assert "node.region" in stderr.decode()
    assert "six-digit region code" in stderr.decode()


def children_of(pid: int) -> list[int]:
    """Process ids of ``pid``'s children, from /proc."""
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        with contextlib.suppress(OSError):
            found += [int(child) for child in (task / "children").read_text().split()]
    return found


def running(pid: int) -> bool:
    """Whether ``pid`` exists and is not a zombie."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


async def test_workers_end_with_their_lead_stopped_or_killed(
    clusters: dict[str, str], prefix: str, tmp_path: Path
) -> None:
    """With two workers, no worker outlives its lead, stopped or killed.

    SIGTERM to the lead, or Ctrl-C (SIGINT to the whole process group), exits 0 and takes the
    worker along without a traceback; after SIGKILL to the lead the worker stops by itself.
    """
    for how, group in ((signal.SIGTERM, False), (signal.SIGINT, True), (signal.SIGKILL, False)):
        admin_port = free_port()
        config = tmp_path / f"county-{how.name}.toml"
        write_config(config, clusters, f"{prefix}{how.name.lower()}", admin_port)
        config.write_text(
            config.read_text(encoding="utf-8").replace("partitions = 1", "partitions = 2")
            + "\n[flow]\nworkers = 2\nshutdown_timeout_s = 15\n",
            encoding="utf-8",
        )
        log = (tmp_path / f"node-{how.name}.log").open("wb")
        workers: list[int] = []
        process = await asyncio.create_subprocess_exec(
            EXE, "run", "--config", str(config), stdout=log, stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,  # a group of its own, as a terminal gives it
        )  # fmt: skip
        try:
            deadline = time.monotonic() + 90
            status, body = 0, ""
            while status != 200 and time.monotonic() < deadline and process.returncode is None:
                status, body = await get(f"http://127.0.0.1:{admin_port}/healthz")
                await asyncio.sleep(0.2)
            assert status == 200, (tmp_path / f"node-{how.name}.log").read_text()
            assert '"worker-1"' in body
            workers = [pid for pid in children_of(process.pid) if running(pid)]
            assert workers, "no worker process found"
            if group:
                os.killpg(process.pid, how)
            else:
                process.send_signal(how)
            code = await asyncio.wait_for(process.wait(), timeout=60)
            assert code == (-signal.SIGKILL if how is signal.SIGKILL else 0)
            for _ in range(300):  # the worker sees its pipe close, stops its links, exits
                if not any(running(pid) for pid in workers):
                    break
                await asyncio.sleep(0.1)
            assert not any(running(pid) for pid in workers), workers
            lines = (tmp_path / f"node-{how.name}.log").read_text()
            assert "Traceback" not in lines, lines
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()
            for pid in filter(running, workers):  # left behind only if the test failed
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            log.close()
