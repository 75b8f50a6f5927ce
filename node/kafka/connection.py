"""How every Kafka client of the node reaches one cluster: bootstrap servers plus link security.

A ``Connection`` turns a cluster's configuration into the keyword options aiokafka's producers,
consumers and admin clients take (``**connection.options()``). It builds the TLS context once,
when it is made, so unreadable or mismatched certificate files stop start-up as a ConfigError
naming the field. ``str(connection)`` is the bootstrap, for messages; no secret is ever in it.

``check_access`` is the start-up probe: one connection per cluster, which turns a refusal
(wrong SASL password, untrusted server certificate, rejected client certificate) into a
ConfigError, because retrying cannot fix it. aiokafka's own clients only log such a refusal
and raise a bare "Unable to bootstrap", so it is classified here, where the cause is still known.

What it must not do: log, or say anything about an unreachable cluster (the loops report it).
"""

from __future__ import annotations

import asyncio
import ssl
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.conn import create_conn
from aiokafka.errors import (
    IllegalSaslStateError,
    KafkaConnectionError,
    SaslAuthenticationFailed,
    UnsupportedSaslMechanismError,
)

from node.config import ClusterConfig, SecurityConfig
from node.errors import ConfigError, TransportError

PLAINTEXT = SecurityConfig()
"""An unencrypted, unauthenticated link (the default)."""


@dataclass(frozen=True, slots=True)
class Connection:
    """The bootstrap servers and security of one cluster (``link`` names it: local, parent)."""

    bootstrap: str
    security: SecurityConfig = PLAINTEXT
    link: str = "local"
    _context: ssl.SSLContext | None = field(default=None, init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        try:
            object.__setattr__(self, "_context", self.security.ssl_context())
        except (OSError, ssl.SSLError) as error:
            field_name = "cert_file" if self.security.cert_file else "ca_file"
            raise ConfigError(
                f"{self.link}.security.{field_name}", f"unusable TLS material: {error}"
            ) from error

    @classmethod
    def to(cls, cluster: ClusterConfig, link: str) -> Connection:
        """Make the connection to ``cluster`` for link ``link``; raise ConfigError (TLS files)."""
        return cls(cluster.bootstrap, cluster.security, link)

    def options(self) -> dict[str, Any]:
        """Keyword options for AIOKafkaProducer, AIOKafkaConsumer and AIOKafkaAdminClient."""
        security = self.security
        options: dict[str, Any] = {
            "bootstrap_servers": self.bootstrap,
            "security_protocol": security.protocol.upper(),
        }
        if self._context is not None:
            options["ssl_context"] = self._context
        if security.sasl:
            options["sasl_mechanism"] = security.sasl_mechanism
            options["sasl_plain_username"] = security.username
            options["sasl_plain_password"] = security.password.value if security.password else ""
        return options

    def __str__(self) -> str:
        return self.bootstrap


def client_options(cluster: Connection | str) -> dict[str, Any]:
    """Return the aiokafka options for ``cluster``; a bare bootstrap string is plaintext."""
    return (cluster if isinstance(cluster, Connection) else Connection(cluster)).options()


def state_reader(cluster: Connection | str, **options: Any) -> AIOKafkaConsumer:
    """Make a consumer without offsets of its own that reads assigned topics from their start."""
    return AIOKafkaConsumer(
        **client_options(cluster),
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        **options,
    )


async def topic_partitions(
    consumer: AIOKafkaConsumer, topic: str, missing: str
) -> list[TopicPartition]:
    """Return ``topic``'s partitions, refreshing metadata up to 5 s; or TransportError(missing)."""
    for _ in range(50):
        found = consumer.partitions_for_topic(topic)
        if found:
            return [TopicPartition(topic, p) for p in sorted(found)]
        await consumer._client.force_metadata_update()  # aiokafka has no public refresh
        await asyncio.sleep(0.1)
    raise TransportError(missing)


PROBE_TIMEOUT_S = 10.0
"""Longest the start-up probe waits for one cluster (an unreachable one delays start-up so long)."""
_REJECTED_ALERTS = ("ALERT_BAD_CERTIFICATE", "ALERT_CERTIFICATE", "ALERT_UNKNOWN_CA")


async def check_access(connection: Connection, *, timeout_s: float = PROBE_TIMEOUT_S) -> None:
    """Connect to ``connection``'s cluster once, with its security, and disconnect.

    Returns when a bootstrap server accepted the node, and also when none answered within
    ``timeout_s`` (an unreachable cluster is the loops' business: they are down and retry).
    Raises ConfigError (path ``LINK.security``) when a server answered but refused the node.
    """
    options = connection.options()
    del options["bootstrap_servers"]
    for host, port in _servers(connection.bootstrap):
        try:
            conn = await asyncio.wait_for(
                create_conn(
                    host, port, client_id="exchange-node-probe",
                    request_timeout_ms=int(timeout_s * 1000), **options,
                ),
                timeout_s,
            )  # fmt: skip
        except Exception as error:  # noqa: BLE001 - every failure is classified or passed over
            problem = refusal(error, connection.security)
            if problem is not None:
                where = f"{connection.link} cluster {connection.bootstrap} refused this node"
                raise ConfigError(f"{connection.link}.security", f"{where}: {problem}") from None
            continue
        conn.close()
        return


def refusal(error: BaseException, security: SecurityConfig) -> str | None:
    """Say why a cluster refused a connection for good, or None if retrying may help.

    Never includes a secret: the SASL messages name the user and the mechanism only.
    """
    user = f"user {security.username!r}, {security.sasl_mechanism}"
    if isinstance(error, SaslAuthenticationFailed):
        return f"SASL authentication failed ({user}): {error.args[0] if error.args else error}"
    if isinstance(error, UnsupportedSaslMechanismError):
        return f"SASL authentication failed: the broker does not offer {security.sasl_mechanism}"
    if isinstance(error, IllegalSaslStateError):
        return "SASL authentication failed: this listener takes no SASL (protocol ssl?)"
    if isinstance(error, ssl.SSLCertVerificationError):
        trusted = f"CAs of {security.ca_file}" if security.ca_file else "the system's CAs"
        return f"server certificate not trusted: {error.verify_message} (trusting {trusted})"
    cause = error.__cause__ if isinstance(error, KafkaConnectionError) else error
    reason = getattr(cause, "reason", None)
    if isinstance(cause, ssl.SSLError) and any(a in str(reason) for a in _REJECTED_ALERTS):
        offered = f"certificate {security.cert_file}" if security.cert_file else "no certificate"
        return f"client certificate rejected by the broker ({reason}; offered {offered})"
    return None


def _servers(bootstrap: str) -> list[tuple[str, int]]:
    servers = []
    for server in bootstrap.split(","):
        host, _, port = server.strip().rpartition(":")
        servers.append((host.strip("[]"), int(port)))
    return servers
