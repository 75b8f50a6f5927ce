"""``exchange-node topics plan|apply`` run as an operator runs it, against real brokers.

On the session's clusters (no authorizer) it creates and repairs topics and reports ACLs as not
enforced; on a broker of its own with KRaft's StandardAuthorizer it creates exactly the planned ACLs,
read back with Kafka's own AclCommand. The city runs with provenance and the audit trail (with an
auditor principal), so the trust and audit topics and their ACLs are planned too.
"""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
import time
from pathlib import Path

import localkafka
import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from node.app import feedback_departments, load_reference
from node.config import load_config
from node.core.provisioning import (
    DATA_RETENTION_MS,
    REFUSED_RETENTION_MS,
    Acl,
    Operation,
    Pattern,
    Permission,
    Resource,
    desired_local,
)
from node.kafka.provision import layout_of
from node.signing import write_new_key
from tests.integration.conftest import free_port

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

EXE = str(Path(sys.executable).with_name("exchange-node"))
CLI_TIMEOUT_S = 90.0
AUTHORIZER = (
    ("authorizer.class.name", "org.apache.kafka.metadata.authorizer.StandardAuthorizer"),
    ("super.users", "User:ANONYMOUS"),  # the PLAINTEXT admin (everyone here) may manage ACLs
    ("allow.everyone.if.no.acl.found", "false"),
)


AUDIT_DAYS = 90
AUDITOR = "User:auditor"


def write_city(path: Path, prefix: str, local: str, parent: str | None) -> Path:
    """A city node's config: one child county, one department, two partitions per topic.

    With provenance (a fresh key next to the file) and an audit trail of ``AUDIT_DAYS`` days that
    ``AUDITOR`` may read.
    """
    parent_table = (
        f'[parent]\nbootstrap = "{parent}"\nregion = "410000"\ntopic_prefix = "{prefix}p"\n'
        if parent
        else ""
    )
    key = path.with_suffix(".key")
    if not key.exists():
        write_new_key(key, "ed25519")
    path.write_text(
        f"""
[node]
id = "{prefix}-city"
level = "city"
region = "410100"
children = ["410102"]

[local]
bootstrap = "{local}"
topic_prefix = "{prefix}"

{parent_table}
[topics]
partitions = 2

[[departments]]
code = "HRSS"
clearance = 3

[provenance]
key_file = "{key}"

[audit]
retention_days = {AUDIT_DAYS}
readers = ["{AUDITOR}"]
""",
        encoding="utf-8",
    )
    return path


async def topics(*args: str) -> tuple[int, str, str]:
    """Run ``exchange-node topics ARGS``; return its exit code, stdout and stderr."""
    process = await asyncio.create_subprocess_exec(
        EXE, "topics", *args, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        out, err = await asyncio.wait_for(process.communicate(), CLI_TIMEOUT_S)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def describe(bootstrap: str, names: list[str]) -> dict[str, tuple[int, dict[str, str]]]:
    """Each topic's partition count and effective configs, read with a plain admin client."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=20_000)
    await asyncio.wait_for(admin.start(), 30)
    try:
        described = await asyncio.wait_for(admin.describe_topics(names), 30)
        resources = [ConfigResource(ConfigResourceType.TOPIC, name) for name in names]
        responses = await asyncio.wait_for(admin.describe_configs(resources), 30)
    finally:
        await asyncio.wait_for(admin.close(), 10)
    configs = {
        name: {entry[0]: entry[1] for entry in entries}
        for response in responses
        for _, _, _, name, entries in response.resources
    }
    return {t["topic"]: (len(t["partitions"]), configs[t["topic"]]) for t in described}


async def create_topic(bootstrap: str, name: str, partitions: int, configs: dict[str, str]) -> None:
    """Create one topic the way an operator might have by hand."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=20_000)
    await asyncio.wait_for(admin.start(), 30)
    try:
        topic = NewTopic(name, partitions, 1, topic_configs=configs)
        response = await asyncio.wait_for(admin.create_topics([topic]), 30)
        assert not any(entry[1] for entry in response.topic_errors), response
    finally:
        await asyncio.wait_for(admin.close(), 10)


def kafka_acls(bootstrap: str) -> set[Acl]:
    """Every ACL of the cluster, as Kafka's own AclCommand lists them."""
    command = [
        localkafka.check_java(), *localkafka.TOOL_FLAGS,
        f"-Dlog4j2.configurationFile={localkafka.LOG4J_CONFIG}",
        "-cp", f"{localkafka.ensure_jars()}/*", "org.apache.kafka.tools.AclCommand",
        "--bootstrap-server", bootstrap, "--list",
    ]  # fmt: skip
    result = subprocess.run(  # noqa: S603 - our java, Kafka's tool, arguments built here
        command, capture_output=True, text=True, timeout=90, check=True
    )
    found: set[Acl] = set()
    resource: tuple[str, str, str] | None = None
    for line in result.stdout.splitlines():
        head = re.search(r"resourceType=(\w+), name=(.*), patternType=(\w+)\)", line)
        if head:
            resource = (head[1], head[2], head[3])
            continue
        entry = re.search(
            r"principal=(.*), host=(.*), operation=(\w+), permissionType=(\w+)\)", line
        )
        if entry:
            assert resource is not None, result.stdout
            found.add(Acl(
                entry[1], Resource(resource[0]), Pattern(resource[2]), resource[1],
                Operation(entry[3]), Permission(entry[4]), entry[2],
            ))  # fmt: skip
    return found


async def test_plan_then_apply_on_clusters_without_an_authorizer(
    clusters: dict[str, str], prefix: str, tmp_path: Path
) -> None:
    """Plan lists what is missing, apply creates and repairs it, a second apply does nothing."""
    config = write_city(tmp_path / "city.toml", prefix, clusters["city"], clusters["province"])
    week, month = str(DATA_RETENTION_MS), str(REFUSED_RETENTION_MS)
    # a department's outbox made by hand: too few partitions, short retention, its own override
    outbox = f"{prefix}.outbox.HRSS"
    hand_made = {"retention.ms": "60000", "max.message.bytes": "123456"}
    await create_topic(clusters["city"], outbox, 1, hand_made)

    code, out, err = await topics("plan", "--config", str(config), "--format", "json")
    assert code == 0, err
    local, parent = json.loads(out)["clusters"]
    assert (local["cluster"], parent["cluster"]) == ("local", "parent")
    created = {a["topic"] for a in local["actions"] if a["action"] == "create_topic"}
    assert created == {
        f"{prefix}.{name}"
        for name in ("outbox.PSB", "outbox.SAMR", "outbox.DSB", "up.410102", "inbox", "refused",
                     "down.410102", "deliver.HRSS", "grants", "grants.from.410102", "stats",
                     "quality", "feedback", "feedback.HRSS", "feedback.PSB", "feedback.SAMR", "feedback.DSB", "trust",
                     "trust.from.410102", f"audit.{prefix}-city")
    }  # fmt: skip
    others = [a for a in local["actions"] if a["action"] != "create_topic"]
    assert others == [
        {"action": "add_partitions", "topic": outbox, "from": 1, "to": 2},
        {
            "action": "alter_configs", "topic": outbox,
            "changes": [{"key": "retention.ms", "from": "60000", "to": week}],
        },
    ]  # fmt: skip
    assert [a["topic"] for a in parent["actions"]] == [
        f"{prefix}p.up.410100", f"{prefix}p.down.410100", f"{prefix}p.grants",
        f"{prefix}p.grants.from.410100", f"{prefix}p.trust", f"{prefix}p.trust.from.410100",
    ]  # fmt: skip
    assert not local["acls"]["enforced"]
    assert not parent["acls"]["enforced"]
    assert (await describe(clusters["city"], [outbox]))[outbox][0] == 1  # plan changed nothing

    code, out, err = await topics("apply", "--config", str(config))
    assert code == 0, err
    assert "ACLs: not enforced on this cluster (no authorizer)" in out
    assert f"~ added partitions of {outbox}: 1 -> 2" in out
    wanted = [f"{prefix}.{name}" for name in ("outbox.HRSS", "up.410102", "inbox", "refused",
                                              "down.410102", "deliver.HRSS", "grants", "stats",
                                              "quality", "feedback", "feedback.HRSS", "trust",
                                              "trust.from.410102", "grants.from.410102")]  # fmt: skip
    deadline = time.monotonic() + 15  # a broker's metadata follows the controller's a moment later
    while True:
        local_topics = await describe(clusters["city"], wanted)
        changed = local_topics[outbox][0] == 2 and local_topics[outbox][1]["retention.ms"] == week
        if changed or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.2)
    for name, (partitions, configs) in local_topics.items():
        assert partitions == 2, name
        kind = name.removeprefix(f"{prefix}.")
        compacted = ("grants", "grants.from.410102", "stats", "quality", "feedback", "trust")
        if kind in (*compacted, "trust.from.410102"):
            assert configs["cleanup.policy"] == "compact", name
        else:
            assert configs["cleanup.policy"] == "delete", name
            assert configs["retention.ms"] == (month if kind == "refused" else week), name
    assert local_topics[outbox][1]["max.message.bytes"] == "123456"  # its own override is kept
    audit = f"{prefix}.audit.{prefix}-city"
    [(partitions, configs)] = (await describe(clusters["city"], [audit])).values()
    assert partitions == 1
    assert configs["cleanup.policy"] == "delete"
    assert configs["retention.ms"] == str(AUDIT_DAYS * 24 * 3600 * 1000)
    parent_topics = await describe(
        clusters["province"],
        [f"{prefix}p.up.410100", f"{prefix}p.down.410100", f"{prefix}p.grants",
         f"{prefix}p.grants.from.410100", f"{prefix}p.trust", f"{prefix}p.trust.from.410100"],
    )  # fmt: skip
    for state in ("grants", "grants.from.410100", "trust", "trust.from.410100"):
        assert parent_topics[f"{prefix}p.{state}"][1]["cleanup.policy"] == "compact", state
    assert {partitions for partitions, _ in parent_topics.values()} == {2}

    code, out, err = await topics("apply", "--config", str(config))
    assert code == 0, err
    assert out.count("nothing to do") == 2, out
    assert "created" not in out


async def test_apply_creates_exactly_the_planned_acls_under_an_authorizer(
    prefix: str, tmp_path: Path
) -> None:
    """With StandardAuthorizer, apply creates the plan's ACLs (as Kafka lists them); again: no-op."""
    spec = localkafka.ClusterSpec(
        "authorized", free_port(), free_port(), heap_mb=384, properties=AUTHORIZER
    )
    started = await asyncio.to_thread(localkafka.start_clusters, [spec], tmp_path / "kafka", 90.0)
    try:
        bootstrap = started[0].bootstrap
        config = write_city(tmp_path / "city.toml", prefix, bootstrap, None)
        loaded = load_config(config)
        reporters = feedback_departments(loaded, load_reference(loaded).catalog)
        wanted = desired_local(layout_of(loaded, reporters)).acls
        assert await asyncio.to_thread(kafka_acls, bootstrap) == set()

        code, out, err = await topics("plan", "--config", str(config), "--format", "json")
        assert code == 0, err
        [local] = json.loads(out)["clusters"]
        assert local["acls"]["enforced"]
        planned = [a for a in local["actions"] if a["action"] == "create_acl"]
        # 6 the node's, 9 the child's (WRITE, DESCRIBE_CONFIGS on up.410102, grants.from.410102
        # and trust.from.410102, READ on down.410102, grants and trust), 3 HRSS's as a consumer, 4 per department (DSB, HRSS, PSB, SAMR): WRITE and
        # DESCRIBE_CONFIGS on its own outbox, READ and DESCRIBE on its feedback topic; and the
        # auditor's READ and DESCRIBE on the audit topic
        assert len(planned) == len(wanted) == 36
        audit = f"{prefix}.audit.{prefix}-city"
        assert {(a["principal"], a["name"], a["operation"]) for a in planned} >= {
            ("User:node-410102", f"{prefix}.trust.from.410102", "WRITE"),
            ("User:node-410102", f"{prefix}.trust", "READ"),
            ("User:node-410102", f"{prefix}.grants.from.410102", "WRITE"),
            ("User:node-410102", f"{prefix}.grants", "READ"),
            (AUDITOR, audit, "READ"),
        }
        child_writes = {
            a["name"] for a in planned
            if a["principal"] == "User:node-410102" and a["operation"] == "WRITE"
        }  # fmt: skip
        assert f"{prefix}.grants" not in child_writes

        code, out, err = await topics("apply", "--config", str(config))
        assert code == 0, err
        assert f"ACLs: {len(wanted)} wanted, 0 in place" in out
        assert await asyncio.to_thread(kafka_acls, bootstrap) == wanted

        code, out, err = await topics("apply", "--config", str(config))
        assert code == 0, err
        assert f"ACLs: {len(wanted)} wanted, {len(wanted)} in place" in out
        assert "nothing to do" in out
        assert await asyncio.to_thread(kafka_acls, bootstrap) == wanted
    finally:
        await asyncio.to_thread(localkafka.stop_clusters, started)


async def test_exit_codes_for_bad_configuration_and_unreachable_clusters(tmp_path: Path) -> None:
    """2 for a bad config or a parent the node does not have, 1 when the cluster does not answer."""
    nowhere = f"127.0.0.1:{free_port()}"
    root = write_city(tmp_path / "root.toml", "t", nowhere, None)
    broken = tmp_path / "broken.toml"
    broken.write_text(root.read_text() + "\n[topics.oops]\n", encoding="utf-8")

    code, _, err = await topics("plan", "--config", str(broken))
    assert (code, "topics.oops: unknown key" in err) == (2, True), err
    code, _, err = await topics("plan", "--config", str(root), "--cluster", "parent")
    assert (code, "has no [parent]" in err) == (2, True)
    code, out, err = await topics("apply", "--config", str(root), "--timeout", "5")
    assert code == 1
    assert f"local cluster {nowhere}" in err
    assert "FAILED" in out
