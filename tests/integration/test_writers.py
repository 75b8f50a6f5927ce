"""Writers who cannot lie, on a real broker with KRaft's StandardAuthorizer.

The broker has two listeners: PLAINTEXT, whose ANONYMOUS principal is a super user (the node
itself, and this test's admin reads), and SASL_PLAINTEXT with SASL/PLAIN users for two
departments of the city 410100 (PSB, HRSS) and for the node of its child county 410102.
``exchange-node topics apply`` provisions the topics and ACLs (with provenance and the audit
trail on, so the trust and audit topics too); then producers authenticated as each principal show
what Kafka lets them write, and a running node refuses, with reason ``forged``, what a principal
writes in its own topic while claiming to be someone else.
"""

from __future__ import annotations

import asyncio
import dataclasses
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import localkafka
import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError, TopicAuthorizationFailedError
from department_client import Published, Received, read_topic
from sample_records import PERSON, sample

from node.codec import load_schemas, packaged_schema_dir
from node.config import load_config
from node.core.envelope import HOPS, SOURCE_DEPT, SOURCE_REGION
from node.kafka.topics import TopicNames
from node.signing import write_new_key
from tests.integration.conftest import free_port

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

EXE = str(Path(sys.executable).with_name("exchange-node"))
SCHEMAS = load_schemas(packaged_schema_dir())
CITY, COUNTY, SIBLING = "410100", "410102", "410103"
WAIT_S = 60.0
SEND_TIMEOUT_S = 20.0
PASSWORDS = {"PSB": "psb-pw", "HRSS": "hrss-pw", f"node-{COUNTY}": "county-pw"}
"""SASL/PLAIN users of the broker: two departments of the city and the county's node."""


def broker(tmp_path: Path) -> tuple[localkafka.ClusterSpec, int]:
    """A broker with the authorizer, a PLAINTEXT listener (super user) and a SASL one."""
    port, sasl_port, controller = free_port(), free_port(), free_port()
    users = " ".join(f'user_{name}="{password}"' for name, password in PASSWORDS.items())
    jaas = f"org.apache.kafka.common.security.plain.PlainLoginModule required {users};"
    host = "127.0.0.1"
    properties = (
        ("listeners", f"PLAINTEXT://{host}:{port},CONTROLLER://{host}:{controller},"
                      f"SASL_PLAINTEXT://{host}:{sasl_port}"),
        ("advertised.listeners", f"PLAINTEXT://{host}:{port},SASL_PLAINTEXT://{host}:{sasl_port}"),
        ("listener.security.protocol.map",
         "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT,SASL_PLAINTEXT:SASL_PLAINTEXT"),
        ("sasl.enabled.mechanisms", "PLAIN"),
        ("listener.name.sasl_plaintext.sasl.enabled.mechanisms", "PLAIN"),
        ("listener.name.sasl_plaintext.plain.sasl.jaas.config", jaas),
        ("authorizer.class.name", "org.apache.kafka.metadata.authorizer.StandardAuthorizer"),
        ("super.users", "User:ANONYMOUS"),  # PLAINTEXT: the node itself, and this test's reads
        ("allow.everyone.if.no.acl.found", "false"),
    )  # fmt: skip
    spec = localkafka.ClusterSpec("writers", port, controller, heap_mb=384, properties=properties)
    return spec, sasl_port


def write_city(path: Path, prefix: str, bootstrap: str) -> Path:
    """The city's config: the root here, one child county, HRSS besides the catalog's sources.

    Provenance is on (its trust topics are planned) but not required: the county's records
    here are unsigned.
    """
    key = path.with_suffix(".key")
    write_new_key(key, "ed25519")
    path.write_text(
        f"""
[node]
id = "{prefix}-city"
level = "city"
region = "{CITY}"
children = ["{COUNTY}"]

[local]
bootstrap = "{bootstrap}"
topic_prefix = "{prefix}"

[topics]
partitions = 1

[flow]
fetch_timeout_ms = 100
retry_backoff_s = 0.2
shutdown_timeout_s = 20

[admin]
port = 0

[log]
format = "json"
level = "warning"

[[departments]]
code = "HRSS"
clearance = 3

[provenance]
key_file = "{key}"
require = false
""",
        encoding="utf-8",
    )
    return path


async def topics_apply(config: Path) -> str:
    """Run ``exchange-node topics apply``; return what it printed (it must succeed)."""
    process = await asyncio.create_subprocess_exec(
        EXE, "topics", "apply", "--config", str(config),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        out, err = await asyncio.wait_for(process.communicate(), 90)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise
    assert process.returncode == 0, err.decode()
    return out.decode()


class Principal:
    """A producer authenticated over SASL/PLAIN as ``user``."""

    def __init__(self, bootstrap: str, user: str) -> None:
        self.user = user
        self._producer = AIOKafkaProducer(
            bootstrap_servers=bootstrap, security_protocol="SASL_PLAINTEXT",
            sasl_mechanism="PLAIN", sasl_plain_username=user,
            sasl_plain_password=PASSWORDS[user], acks="all", request_timeout_ms=10_000,
            metadata_max_age_ms=2_000,
        )  # fmt: skip

    async def __aenter__(self) -> Principal:
        await asyncio.wait_for(self._producer.start(), SEND_TIMEOUT_S)
        return self

    async def __aexit__(self, *_: object) -> None:
        await asyncio.wait_for(self._producer.stop(), SEND_TIMEOUT_S)

    async def write(self, topic: str, records: Sequence[tuple[Published, list[Any]]]) -> None:
        """Write each record with its headers to ``topic``; raise what Kafka answers."""
        for published, headers in records:
            await asyncio.wait_for(
                self._producer.send_and_wait(
                    topic, published.value, key=published.envelope.record_id.encode(),
                    headers=headers,
                ),
                SEND_TIMEOUT_S,
            )  # fmt: skip

    async def refused_on(self, topic: str) -> KafkaError:
        """Write one record to ``topic`` and return the error Kafka answers with."""
        record = person(CITY, 900)
        with pytest.raises(TopicAuthorizationFailedError) as raised:
            await self.write(topic, [(record, record.envelope.to_headers())])
        return raised.value


def person(source: str, seed: int) -> Published:
    """A person record of ``source`` for the city itself, created now."""
    return sample(
        SCHEMAS, PERSON, source, f"region:{CITY}", seed=seed, created_ms=int(time.time() * 1000)
    )


def with_headers(published: Published, **changes: bytes) -> tuple[Published, list[Any]]:
    """The record with some envelope headers set to other values (names with dashes)."""
    wanted = {name.replace("_", "-"): value for name, value in changes.items()}
    headers = [(n, wanted.get(n, v)) for n, v in published.envelope.to_headers()]
    return published, headers


def handed_up(seed: int, *, hops: bytes = f"{COUNTY}^".encode(), source: str = COUNTY) -> Any:
    """A record the county's node hands up (source region ``source``, hop path ``hops``)."""
    made = person(COUNTY, seed)
    envelope = dataclasses.replace(made.envelope, source_region=source)
    made = Published(envelope, made.value)
    return with_headers(made, cx_hops=hops)


async def test_each_principal_writes_only_its_own_topic_and_cannot_lie_there(
    prefix: str, nodes: Any, tmp_path: Path
) -> None:
    """ACLs keep each writer to its topic; a running node refuses what lies about its writer."""
    spec, sasl_port = broker(tmp_path)
    started = await asyncio.to_thread(localkafka.start_clusters, [spec], tmp_path / "kafka", 90.0)
    try:
        plain, sasl = started[0].bootstrap, f"127.0.0.1:{sasl_port}"
        config = write_city(tmp_path / "city.toml", prefix, plain)
        applied = await topics_apply(config)
        assert "ACLs: " in applied
        assert "not enforced" not in applied
        names = TopicNames(prefix)
        for made in (names.trust, names.trust_from(COUNTY), names.audit(f"{prefix}-city")):
            assert f"created topic {made} (" in applied, applied  # refused below, though there

        async with Principal(sasl, "PSB") as psb, Principal(sasl, f"node-{COUNTY}") as county:
            for writer, topic in (
                (psb, names.outbox("HRSS")),  # another department's topic
                (psb, names.up(COUNTY)),  # a child's hand-up topic
                (psb, names.inbox),  # the node's own topics
                (county, names.outbox("PSB")),  # a child's node posing as a department
                (county, names.up(SIBLING)),  # no such child: not created, never granted
                (psb, names.trust),  # the node's trust store: only the node writes it
                (psb, names.trust_from(COUNTY)),  # a child's keys: only that child's node
                (psb, names.audit(f"{prefix}-city")),  # the audit trail: only the node
                (county, names.trust),  # a child reads the node's keys, never writes them
                (county, names.audit(f"{prefix}-city")),
            ):
                error = await writer.refused_on(topic)
                print(f"{writer.user} -> {topic}: {error!r}")

            honest = [person(CITY, seed) for seed in range(1, 4)]
            forged = {
                "another department": with_headers(person(CITY, 11), cx_source_dept=b"HRSS"),
                "a hop path to skip ingress": with_headers(person(CITY, 12), cx_hops=b"410102^"),
                "another region": with_headers(person(CITY, 13), cx_source_region=b"410102"),
            }
            await psb.write(
                names.outbox("PSB"),
                [(p, p.envelope.to_headers()) for p in honest[:2]] + list(forged.values())
                + [(honest[2], honest[2].envelope.to_headers())],
            )  # fmt: skip
            from_child = [handed_up(seed) for seed in range(21, 23)]
            forged_up = {
                "a source outside the child's subtree": handed_up(31, source=SIBLING),
                "a hop path the child did not end": handed_up(32, hops=b"410103^"),
                "no hop path (posing as fresh)": handed_up(33, hops=b""),
            }
            await county.write(names.up(COUNTY), [*from_child, *forged_up.values()])

        node = await nodes(load_config(config))
        lies = {**forged, **forged_up}
        lie_ids = {record.envelope.record_id: why for why, (record, _) in lies.items()}
        honest_ids = {p.envelope.record_id for p in honest} | {
            p.envelope.record_id for p, _ in from_child
        }

        def has(ids: set[str]) -> Any:
            return lambda got: ids <= {r.record_id for r in got}

        refused = await read_topic(plain, names.refused, until=has(set(lie_ids)), timeout_s=WAIT_S)
        inbox = await read_topic(plain, names.inbox, until=has(honest_ids), timeout_s=WAIT_S)

        counted = count_ids(refused)
        print("refused by id:", {lie_ids.get(i, i): n for i, n in counted.items()})
        assert counted == dict.fromkeys(lie_ids, 1)
        reasons = {r.record_id: r.headers["cx-refusal-reason"] for r in refused}
        assert set(reasons.values()) == {"forged"}
        said = {lie_ids[r.record_id]: r.headers["cx-refusal-message"] for r in refused}
        outbox, up = names.outbox("PSB"), names.up(COUNTY)
        assert said["another department"].startswith(f"topic {outbox} is department PSB's")
        assert f"header {SOURCE_DEPT} is 'HRSS'" in said["another department"]
        assert f"header {HOPS} is '410102^'" in said["a hop path to skip ingress"]
        assert f"header {SOURCE_REGION} is '410102'" in said["another region"]
        assert said["a source outside the child's subtree"].startswith(f"topic {up} is")
        assert (
            f"header {SOURCE_REGION} is '{SIBLING}'" in said["a source outside the child's subtree"]
        )
        assert f"header {HOPS} is '410103^'" in said["a hop path the child did not end"]
        assert f"header {HOPS} is ''" in said["no hop path (posing as fresh)"]

        assert count_ids(inbox) == dict.fromkeys(honest_ids, 1)
        assert (
            await node.settled("exchange_records_refused_total", 6, link="local", reason="forged")
            == 6
        )
        await node.stop()  # before its broker goes
    finally:
        await asyncio.to_thread(localkafka.stop_clusters, started)


def count_ids(records: list[Received]) -> dict[str, int]:
    """How many times each record id was read."""
    counted: dict[str, int] = {}
    for record in records:
        counted[record.record_id] = counted.get(record.record_id, 0) + 1
    return counted
