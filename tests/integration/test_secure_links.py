"""Links over TLS, SASL/SCRAM-SHA-512 and mutual TLS, against a real broker configured for them.

One broker for the module, with three client listeners: PLAINTEXT (the test's own publisher and
reader), SASL_SSL with SCRAM-SHA-512 users made when its storage is formatted, and SSL requiring
a client certificate. Its certificates come from a CA the test makes; a second CA plays a stranger.
A county (410102) and its city (410100) share the broker as two logical platforms (two topic
prefixes): the county's local link uses mutual TLS, its parent link and the city's local link
SASL_SSL. Refusals must stop start-up as a ConfigError naming the link, and no secret may
appear in any log line or error message.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import sys
import time
import uuid
from collections.abc import Iterator, MutableMapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import localkafka  # deploy/local, put on the path by conftest
import pytest
import structlog
from department_client import publish, read_topic
from prometheus_client import CollectorRegistry
from sample_records import PERSON, sample

from node.app import Running, run_node
from node.codec import load_schemas, packaged_schema_dir
from node.errors import ConfigError
from node.kafka.topics import TopicNames
from tests.integration.certs import Authority, Issued
from tests.integration.conftest import free_port, node_config, start_node

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

SCHEMAS = load_schemas(packaged_schema_dir())
CITY, COUNTY = "410100", "410102"
WAIT_S = 60.0
SCRAM = "org.apache.kafka.common.security.scram.ScramLoginModule required;"


@dataclass(frozen=True)
class SecureKafka:
    """The broker's listeners, its CA, a stranger CA, and the credentials it knows."""

    plain: str
    sasl: str
    mtls: str
    ca: Authority
    stranger: Authority
    county_cert: Issued
    passwords: dict[str, str]
    secrets_dir: Path


@pytest.fixture(scope="module")
def secure_kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecureKafka]:
    """Start one broker with PLAINTEXT, SASL_SSL (SCRAM-SHA-512) and mutual-TLS listeners."""
    base = tmp_path_factory.mktemp("secure-kafka")
    ca = Authority.create(base / "pki", "links-ca")
    stranger = Authority.create(base / "pki", "stranger-ca")
    broker = ca.issue("broker", server=True)  # Kafka's PEM key store: an unencrypted key
    county_cert = ca.issue("county-410102", key_password=secrets.token_urlsafe(12))
    passwords = {user: secrets.token_urlsafe(16) for user in ("county", "city")}
    plain, controller, sasl, mtls = (free_port() for _ in range(4))
    properties = {
        "listeners": f"PLAINTEXT://127.0.0.1:{plain},CONTROLLER://127.0.0.1:{controller},"
        f"SECURE://127.0.0.1:{sasl},MTLS://127.0.0.1:{mtls}",
        "advertised.listeners": f"PLAINTEXT://127.0.0.1:{plain},SECURE://127.0.0.1:{sasl},"
        f"MTLS://127.0.0.1:{mtls}",
        "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT,"
        "SECURE:SASL_SSL,MTLS:SSL",
        "listener.name.secure.sasl.enabled.mechanisms": "SCRAM-SHA-512",
        "listener.name.secure.scram-sha-512.sasl.jaas.config": SCRAM,
        "listener.name.mtls.ssl.client.auth": "required",
        "ssl.keystore.type": "PEM",
        "ssl.keystore.location": str(broker.bundle),
        "ssl.truststore.type": "PEM",
        "ssl.truststore.location": str(ca.cert),
    }
    users = [
        arg
        for user, password in passwords.items()
        for arg in ("--add-scram", f"SCRAM-SHA-512=[name={user},password={password}]")
    ]
    spec = localkafka.ClusterSpec(
        "secure", plain, controller, properties=tuple(properties.items()), format_args=tuple(users)
    )
    started = localkafka.start_clusters([spec], base)
    try:
        yield SecureKafka(
            f"127.0.0.1:{plain}", f"127.0.0.1:{sasl}", f"127.0.0.1:{mtls}", ca, stranger,
            county_cert, passwords, base / "secrets",
        )  # fmt: skip
    finally:
        localkafka.stop_clusters(started)


def sasl_security(kafka: SecureKafka, user: str, password_file: Path) -> dict[str, Any]:
    """A ``[*.security]`` table for SASL_SSL as ``user``, the password read from a file."""
    return {
        "protocol": "sasl_ssl", "ca_file": str(kafka.ca.cert), "sasl_mechanism": "SCRAM-SHA-512",
        "username": user, "password_file": str(password_file),
    }  # fmt: skip


def mtls_security(kafka: SecureKafka, cert: Issued, key_password_env: str) -> dict[str, Any]:
    """A ``[*.security]`` table for mutual TLS with ``cert``, its key password from the env."""
    return {
        "protocol": "ssl", "ca_file": str(kafka.ca.cert), "cert_file": str(cert.cert),
        "key_file": str(cert.key), "key_password_env": key_password_env,
    }  # fmt: skip


def secret_file(kafka: SecureKafka, text: str) -> Path:
    """Write ``text`` to a fresh file readable by its owner only; return its path."""
    kafka.secrets_dir.mkdir(exist_ok=True)
    path = kafka.secrets_dir / uuid.uuid4().hex
    path.write_text(text + "\n")
    path.chmod(0o600)
    return path


class Captured:
    """Every log line (structlog events and stdlib records, aiokafka's included) so far."""

    def __init__(self) -> None:
        self.records: list[str] = []
        self.events: list[MutableMapping[str, Any]] = []

    @property
    def lines(self) -> list[str]:
        """Each captured line or event, as text."""
        return [*self.records, *map(repr, self.events)]


class _Collect(logging.Handler):
    def __init__(self, captured: Captured) -> None:
        super().__init__(logging.DEBUG)
        self.captured = captured

    def emit(self, record: logging.LogRecord) -> None:
        self.captured.records.append(f"{record.name} {record.levelname} {record.getMessage()}")


@pytest.fixture
def captured() -> Iterator[Captured]:
    """Capture every log line of the test, stdlib (aiokafka at DEBUG) and structlog alike."""
    found = Captured()
    handler = _Collect(found)
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        with structlog.testing.capture_logs() as events:
            found.events = events
            yield found
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


def assert_no_secret(
    kafka: SecureKafka, captured: Captured, messages: tuple[str, ...] = (), *more_secrets: str
) -> None:
    """No password or key password appears in the captured logs or in ``messages``."""
    assert captured.lines, "nothing was captured: the check would prove nothing"
    text = "\n".join([*captured.lines, *messages])
    for value in [*kafka.passwords.values(), kafka.county_cert.key_password or "", *more_secrets]:
        assert value
        assert value not in text


async def test_records_cross_sasl_ssl_and_mutual_tls_links(
    secure_kafka: SecureKafka, prefix: str, nodes: Any, captured: Captured,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    """County -> city over mutual TLS (county local) and SCRAM-SHA-512 (parent, city local)."""
    kafka = secure_kafka
    city_prefix, county_prefix = f"{prefix}-city", f"{prefix}-county"
    monkeypatch.setenv("COUNTY_KEY_PASSWORD", kafka.county_cert.key_password or "")
    monkeypatch.setenv("CITY_KAFKA_PASSWORD", kafka.passwords["city"])
    city_sasl = {
        "protocol": "sasl_ssl", "ca_file": str(kafka.ca.cert), "username": "city",
        "password_env": "CITY_KAFKA_PASSWORD",
    }  # fmt: skip
    city = node_config(
        CITY, "city", kafka.sasl, city_prefix, children=(COUNTY,), security=(city_sasl, {})
    )
    county = node_config(
        COUNTY, "county", kafka.mtls, county_prefix, parent=(kafka.sasl, CITY, city_prefix),
        security=(
            mtls_security(kafka, kafka.county_cert, "COUNTY_KEY_PASSWORD"),
            sasl_security(kafka, "county", secret_file(kafka, kafka.passwords["county"])),
        ),
    )  # fmt: skip
    await nodes(city)
    await nodes(county)
    now = int(time.time() * 1000)
    sent = [
        sample(SCHEMAS, PERSON, COUNTY, f"region:{CITY}", seed=seed, created_ms=now)
        for seed in range(40)
    ]
    await publish(kafka.plain, TopicNames(county_prefix).outbox("PSB"), sent)

    ids = {record.envelope.record_id for record in sent}
    got = await read_topic(
        kafka.plain, TopicNames(city_prefix).inbox,
        until=lambda got: ids <= {r.record_id for r in got}, timeout_s=WAIT_S,
    )  # fmt: skip

    arrived = [r.record_id for r in got if r.record_id in ids]
    print(f"sent {len(ids)}, arrived at the city {len(set(arrived))} ({len(arrived)} copies)")
    assert set(arrived) == ids
    assert_no_secret(kafka, captured)


async def test_a_wrong_sasl_password_stops_start_up_naming_the_link(
    secure_kafka: SecureKafka, prefix: str, captured: Captured
) -> None:
    """The parent link's SCRAM password is wrong: ConfigError for ``parent``, no endless retry."""
    kafka = secure_kafka
    wrong = secrets.token_urlsafe(16)
    county = node_config(
        COUNTY, "county", kafka.plain, prefix, parent=(kafka.sasl, CITY, f"{prefix}-city"),
        security=({}, sasl_security(kafka, "county", secret_file(kafka, wrong))),
    )  # fmt: skip
    started = time.monotonic()
    with pytest.raises(ConfigError) as failure:
        await start_node(county)
    message = str(failure.value)
    print(f"refused in {time.monotonic() - started:.2f} s: {message}")
    assert failure.value.path == "parent.security"
    assert "parent cluster" in message
    assert "SASL authentication failed" in message
    assert "county" in message  # the user, never the password
    assert_no_secret(kafka, captured, (message,), wrong)


async def test_an_untrusted_server_certificate_stops_start_up_naming_the_link(
    secure_kafka: SecureKafka, prefix: str, captured: Captured
) -> None:
    """The local broker's certificate is not signed by the CA the link trusts: ConfigError."""
    kafka = secure_kafka
    password = secret_file(kafka, kafka.passwords["county"])
    untrusting = sasl_security(kafka, "county", password) | {"ca_file": str(kafka.stranger.cert)}
    county = node_config(COUNTY, "county", kafka.sasl, prefix, security=(untrusting, {}))
    with pytest.raises(ConfigError) as failure:
        await start_node(county)
    message = str(failure.value)
    print(message)
    assert failure.value.path == "local.security"
    assert "local cluster" in message
    assert "server certificate not trusted" in message
    assert str(kafka.stranger.cert) in message
    assert_no_secret(kafka, captured, (message,))


@pytest.mark.parametrize("offered", ["stranger", "none"])
async def test_a_rejected_client_certificate_stops_start_up_naming_the_link(
    secure_kafka: SecureKafka, prefix: str, captured: Captured, offered: str
) -> None:
    """The mutual-TLS listener refuses a certificate of another CA, or none: ConfigError."""
    kafka = secure_kafka
    security: dict[str, Any] = {"protocol": "ssl", "ca_file": str(kafka.ca.cert)}
    if offered == "stranger":
        cert = kafka.stranger.issue(f"intruder-{uuid.uuid4().hex[:6]}")
        security |= {"cert_file": str(cert.cert), "key_file": str(cert.key)}
    county = node_config(COUNTY, "county", kafka.mtls, prefix, security=(security, {}))
    with pytest.raises(ConfigError) as failure:
        await start_node(county)
    message = str(failure.value)
    print(message)
    assert failure.value.path == "local.security"
    assert "client certificate rejected" in message
    assert_no_secret(kafka, captured, (message,))


async def test_an_unreachable_secure_cluster_is_retried_not_refused(
    secure_kafka: SecureKafka, prefix: str
) -> None:
    """A parent that does not answer is a link down that retries, not a configuration error."""
    kafka = secure_kafka
    county = node_config(
        COUNTY, "county", kafka.plain, prefix,
        parent=(f"127.0.0.1:{free_port()}", CITY, f"{prefix}-city"),
        security=({}, sasl_security(kafka, "county", secret_file(kafka, "whatever"))),
    )  # fmt: skip
    registry, stop = CollectorRegistry(), asyncio.Event()
    running: asyncio.Future[Running] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(
        run_node(county, stop, registry=registry, on_running=running.set_result)
    )
    try:
        await asyncio.wait_for(asyncio.shield(running), WAIT_S)
        url = f"http://127.0.0.1:{running.result().admin_port}/livez"
        parent: dict[str, Any] = {}
        async with aiohttp.ClientSession() as session:
            for _ in range(int(WAIT_S / 0.2)):
                async with session.get(url) as response:
                    parent = (await response.json())["loops"]["parent"]
                if parent["retries"] >= 2:
                    break
                await asyncio.sleep(0.2)
        print(f"parent link: {parent}")
        assert parent["up"] is False
        assert parent["retries"] >= 2
        assert parent["reason"]
        assert not task.done()
    finally:
        stop.set()
        await asyncio.wait_for(task, WAIT_S)


async def test_the_node_process_exits_as_misconfigured_and_logs_no_secret(
    secure_kafka: SecureKafka, prefix: str, tmp_path: Path
) -> None:
    """``exchange-node run`` with a wrong password exits 2, saying which link; its logs lack it."""
    kafka = secure_kafka
    wrong = secrets.token_urlsafe(16)
    config = tmp_path / "county.toml"
    config.write_text(
        f'[node]\nid = "{prefix}-county"\nlevel = "county"\nregion = "{COUNTY}"\n'
        f'[local]\nbootstrap = "{kafka.plain}"\ntopic_prefix = "{prefix}"\n'
        f'[parent]\nbootstrap = "{kafka.sasl}"\nregion = "{CITY}"\ntopic_prefix = "{prefix}-city"\n'
        f'[parent.security]\nprotocol = "sasl_ssl"\nca_file = "{kafka.ca.cert}"\n'
        f'username = "county"\npassword_env = "LINKS_PARENT_PASSWORD"\n'
        f'[admin]\nport = 0\n[log]\nformat = "json"\nlevel = "debug"\n'
    )
    environment = {**os.environ, "LINKS_PARENT_PASSWORD": wrong}
    process = await asyncio.create_subprocess_exec(
        str(Path(sys.executable).with_name("exchange-node")), "run", "--config", str(config),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, env=environment,
    )  # fmt: skip
    try:
        output, _ = await asyncio.wait_for(process.communicate(), WAIT_S)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    text = output.decode()
    print(text[-600:])
    assert process.returncode == 2
    assert "parent.security" in text
    assert "SASL authentication failed" in text
    assert wrong not in text
    assert wrong not in config.read_text()
    for password in kafka.passwords.values():
        assert password not in text
