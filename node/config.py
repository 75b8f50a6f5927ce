"""Node configuration: one TOML file, loaded once into frozen, typed values.

Every check names the field path (``parent.region``) and what was expected, and unknown keys are
errors too, so a typo stops start-up instead of silently falling back to a default.
"""

from __future__ import annotations

import ipaddress
import os
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import tomli

from node.core.envelope import MAX_GRADE, MIN_GRADE
from node.core.policy import Clearance, Department, NegativeList
from node.core.topology import Topology, contains, is_region_code
from node.errors import ConfigError

T = TypeVar("T")
_MISSING = object()


class Secret:
    """A password read from an environment variable or a file; ``repr``/``str`` never show it."""

    __slots__ = ("value",)

    def __init__(self, value: str) -> None:
        self.value = value

    def __repr__(self) -> str:
        return "Secret('********')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other.value == self.value

    def __hash__(self) -> int:
        return hash(self.value)


PROTOCOLS = ("plaintext", "ssl", "sasl_plaintext", "sasl_ssl")
SASL_MECHANISMS = ("SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN")


@dataclass(frozen=True, slots=True)
class SecurityConfig:
    """How a link authenticates and encrypts: TLS, mutual TLS, SASL (secrets never in the file)."""

    protocol: str = "plaintext"
    """``plaintext``, ``ssl``, ``sasl_plaintext`` or ``sasl_ssl`` (Kafka's security.protocol)."""
    ca_file: Path | None = None
    """PEM file of the CAs that sign the brokers' certificates (default: the system's CAs)."""
    cert_file: Path | None = None
    """PEM client certificate chain for mutual TLS (with ``key_file``)."""
    key_file: Path | None = None
    """PEM private key of ``cert_file`` (mutual TLS)."""
    key_password_env: str = ""
    """Environment variable holding the password of an encrypted ``key_file``."""
    key_password_file: str = ""
    """File holding the password of an encrypted ``key_file`` (instead of ``key_password_env``)."""
    key_password: Secret | None = None
    """Never set here (refused: secrets stay out of this file); the node holds the key password it
    read at start-up from ``key_password_env`` or ``key_password_file``."""
    sasl_mechanism: str = "SCRAM-SHA-512"
    """``SCRAM-SHA-512``, ``SCRAM-SHA-256`` or ``PLAIN`` (SASL protocols only)."""
    username: str = ""
    """SASL user name (SASL protocols only)."""
    password_env: str = ""
    """Environment variable holding the SASL password (this or ``password_file``)."""
    password_file: str = ""
    """File holding the SASL password (one line; a trailing newline is dropped)."""
    password: Secret | None = None
    """Never set here (refused: secrets stay out of this file); the node holds the SASL password it
    read at start-up from ``password_env`` or ``password_file``."""

    @property
    def tls(self) -> bool:
        """Whether the link is encrypted."""
        return self.protocol in ("ssl", "sasl_ssl")

    @property
    def sasl(self) -> bool:
        """Whether the link authenticates with SASL."""
        return self.protocol.startswith("sasl_")

    def ssl_context(self) -> ssl.SSLContext | None:
        """Build the TLS context (CA, client certificate); None for an unencrypted link.

        Raises OSError or ssl.SSLError for unreadable or inconsistent files.
        """
        if not self.tls:
            return None
        context = ssl.create_default_context(cafile=self.ca_file)
        self.load_client_certificate(context)
        return context

    def load_client_certificate(self, context: ssl.SSLContext) -> None:
        """Load the certificate and key of mutual TLS into ``context``, if configured."""
        if self.cert_file is not None:
            password = self.key_password.value if self.key_password else None
            context.load_cert_chain(self.cert_file, self.key_file, password)


@dataclass(frozen=True, slots=True)
class ClusterConfig:
    """How to reach one Kafka cluster and which topic namespace this node uses there."""

    bootstrap: str
    """Kafka bootstrap servers, ``HOST:PORT[,HOST:PORT...]``."""
    topic_prefix: str = "cascade"
    """The namespace of this exchange's topics on that cluster (``PREFIX.inbox`` ...); two
    logical platforms can share one cluster under different prefixes."""
    security: SecurityConfig = SecurityConfig()
    """TLS and SASL settings of the link to this cluster (``[local.security]``)."""


@dataclass(frozen=True, slots=True)
class ParentConfig:
    """The parent link: the parent's cluster and region code."""

    cluster: ClusterConfig
    region: str
    """The parent node's region code (GB/T 2260)."""


@dataclass(frozen=True, slots=True)
class TopicConfig:
    """How the node creates the topics it owns."""

    create: bool = True
    """Create missing topics this node reads or writes when each loop starts (``exchange-node
    topics apply`` does it ahead of time, with ACLs)."""
    partitions: int = 3
    """Partitions of the topics the node creates (also the parallelism within a level)."""
    replication_factor: int = 1
    """Replicas of the topics the node creates (3 on a production cluster)."""


@dataclass(frozen=True, slots=True)
class FlowConfig:
    """Batching, retry and shutdown settings of the links."""

    max_batch: int = 2000
    """Most records fetched, decided and delivered as one batch."""
    fetch_timeout_ms: int = 200
    """How long a fetch waits for records before an empty round."""
    retry_backoff_s: float = 1.0
    """First delay before a failing loop is retried (doubled, jittered, up to max_backoff_s)."""
    shutdown_timeout_s: float = 30.0
    """Deadline of a stop: loops finish and commit, whatever is still running is then cut."""
    validate_ingress: bool = True
    """Check every fresh record's value against its resource's schema where it enters."""
    max_in_flight: int = 4
    """Batches of a link under way at once (committed strictly in order)."""
    batch_bytes: int = 1_000_000
    """Largest record batch produced (capped by each destination topic's max.message.bytes)."""
    delivery_timeout_s: float = 30.0
    """Deadline of one batch's produce and of one commit; past it the link is down and retries."""
    max_backoff_s: float = 30.0
    """Cap of the exponential backoff between retries of a failing loop."""
    max_in_flight_bytes: int = 64 * 1024 * 1024
    """Bytes of fetched records a link holds undelivered before it stops fetching."""
    on_gap: str = "earliest"
    """After records were lost at the source (retention, recreation): resume at the ``earliest``
    record still there, or skip to the ``latest``."""
    workers: int = 1
    """Processes running the links, in one consumer group: each owns some source partitions. The
    first is the node itself (admin API, heartbeats, statistics, audit trail); each other runs
    only the links and hands what it committed to the first (``node/workers.py``)."""


MAX_WORKERS = 16
"""Most link processes of one node (``flow.workers``)."""

ADMIN_ROLES = ("operator", "auditor", "admin")
"""Roles of the admin API, least first (what each may do: ``node/ops/access.py``)."""
ADMIN_OPEN = ("health", "metrics")
"""Route groups that can stay open without credentials: /livez /readyz /healthz, /metrics."""


@dataclass(frozen=True, slots=True)
class AdminUser:
    """One bearer token of the admin API: who holds it and their role, as a SHA-256."""

    name: str
    """Who holds the token (logged with the grant decisions they make)."""
    role: str
    """``operator``, ``auditor`` or ``admin``."""
    token_sha256: str
    """Lower-case hex SHA-256 of the token (the token itself is never configured)."""


@dataclass(frozen=True, slots=True)
class AdminCert:
    """A client certificate's subject CN (verified against ``admin.tls.client_ca_file``), a role."""

    subject_cn: str
    """The common name of the certificate's subject."""
    role: str
    """``operator``, ``auditor`` or ``admin``."""


@dataclass(frozen=True, slots=True)
class AdminTls:
    """HTTPS for the admin server, and which CAs sign the client certificates it accepts."""

    cert_file: Path
    """PEM certificate chain of the admin server."""
    key_file: Path
    """PEM private key of ``cert_file`` (unencrypted; keep the file readable by the node only)."""
    client_ca_file: Path | None = None
    """PEM CAs trusted to sign client certificates (asked for, optional: tokens still work)."""


@dataclass(frozen=True, slots=True)
class AdminConfig:
    """Where the admin HTTP server listens, over HTTP or HTTPS, and who may call it."""

    host: str = "127.0.0.1"
    """Address the admin server listens on (loopback unless a scraper needs more)."""
    port: int = 9100
    """Port of /metrics, /livez, /readyz, /cascade, the grants API and the gateway."""
    open: tuple[str, ...] = ADMIN_OPEN
    """Route groups served without credentials: ``health`` (/livez /readyz /healthz) and
    ``metrics`` (/metrics), for orchestrators and scrapers."""
    users: tuple[AdminUser, ...] = ()
    """Bearer tokens (``[[admin.users]]``); with no users and no certs the API is open, which is
    allowed on a loopback host only."""
    certs: tuple[AdminCert, ...] = ()
    """Client certificate CNs and their roles (``[[admin.certs]]``, needs ``[admin.tls]``)."""
    tls: AdminTls | None = None
    """HTTPS settings (``[admin.tls]``); plain HTTP without."""

    @property
    def credentials(self) -> bool:
        """Whether any credential is configured (else the API is open to whoever reaches it)."""
        return bool(self.users or self.certs)


@dataclass(frozen=True, slots=True)
class LogConfig:
    """Log output: ``json`` lines, ``console`` for people, or ``auto`` (console on a terminal)."""

    format: str = "auto"
    """``json`` lines, ``console`` for people, or ``auto`` (console on a terminal)."""
    level: str = "info"
    """Lowest level logged: debug, info, warning or error."""


@dataclass(frozen=True, slots=True)
class GrantsConfig:
    """How grants are kept and how fast a change must take effect."""

    max_staleness_s: float = 5.0
    """Grants not confirmed current for this long count as none (conditional sharing fails
    closed), and a revocation takes effect within it."""
    default_validity_days: int = 365
    """Validity of an approved grant when the approval names none."""


@dataclass(frozen=True, slots=True)
class ProvenanceConfig:
    """Signed provenance: this node signs what enters the exchange here, checks what others sent."""

    key_file: Path
    """This node's private key (PEM Ed25519, or an SM2 key file): ``exchange-node keys new``."""
    algorithm: str = "ed25519"
    """``ed25519``, or ``sm2`` (needs the optional extra ``sm``)."""
    require: bool = True
    """Refuse records from other nodes that carry no signature (a bad one is always refused)."""
    rotation_grace_s: float = 86400.0
    """How long this node's previous keys stay valid after it starts with a new one."""
    verified_root_cache: int = 4096
    """How many verified signed roots are remembered (each saves one signature check)."""


@dataclass(frozen=True, slots=True)
class MonitoringConfig:
    """Heartbeats, cross-hop completeness, metric label bounds and exchange statistics."""

    heartbeat_s: float = 5.0
    """Interval of the heartbeats sent up to the parent and down to every child."""
    completeness_bucket_s: int = 60
    """Width of the time buckets (by ``cx-created-ms``) in which records sent up are counted."""
    completeness_buckets: int = 30
    """How many recent buckets are kept and reported in heartbeats."""
    completeness_settle_s: float = 120.0
    """A bucket is compared only once it ended this long before the child's heartbeat."""
    resource_label_cap: int = 500
    """Largest catalog labelled per resource code; a larger one is labelled per source
    department, or per sharing type if even those exceed the cap."""
    stats_bucket_s: int = 3600
    """Width of the time buckets of the exchange statistics topic."""
    stats_flush_s: float = 30.0
    """How often the exchange statistics are written to their topic."""


@dataclass(frozen=True, slots=True)
class GatewayClient:
    """One bearer token of the HTTP gateway: the department it authenticates, as a SHA-256."""

    department: str
    token_sha256: str
    """Lower-case hex SHA-256 of the token (the token itself is never configured)."""
    max_batch: int = 500  # GATEWAY_MAX_BATCH
    """Most records one request of this client may publish."""


GATEWAY_MAX_BATCH = 500


@dataclass(frozen=True, slots=True)
class GatewayConfig:
    """The HTTP gateway for departments without Kafka (routes on the admin server)."""

    enabled: bool = False
    clients: tuple[GatewayClient, ...] = ()


@dataclass(frozen=True, slots=True)
class AuditConfig:
    """The tamper-evident audit trail: an entry per forwarded, delivered and refused record."""

    enabled: bool = True
    """Write the audit trail to ``PREFIX.audit.NODE_ID`` on the local cluster."""
    fail_closed: bool = False
    """Commit a batch only once its audit entries are written, and fetch no new batch while
    they cannot be (no entry is ever lost); false: keep forwarding, drop the oldest pending
    entries past ``max_pending`` and write a gap entry saying how many."""
    max_pending: int = 100_000
    """Entries held in memory while they cannot be written."""
    entries_per_record: int = 200
    """Entries packed into one Kafka record of the audit topic (1: one per record). Packed, the
    writer costs about a quarter of the CPU an entry (``benchmarks/bench_audit.py``)."""
    flush_s: float = 0.5
    """Longest an entry waits before it is written (sooner once a record's worth is queued)."""
    retention_days: int = 400
    """Retention of the audit topic the node creates."""
    readers: tuple[str, ...] = ()
    """Kafka principals (``User:NAME``) of auditors allowed to read the audit topic: READ ACLs
    planned by ``exchange-node topics``; other auditors use the ``/audit/`` HTTP routes."""


@dataclass(frozen=True, slots=True)
class NodeConfig:
    """Everything one node needs, checked."""

    node_id: str
    topology: Topology
    local: ClusterConfig
    parent: ParentConfig | None
    topics: TopicConfig
    flow: FlowConfig
    admin: AdminConfig
    log: LogConfig
    schema_dir: Path | None
    catalog_dir: Path | None
    negative: NegativeList
    clearance: Clearance
    departments: tuple[Department, ...] = ()
    grants: GrantsConfig = GrantsConfig()
    monitoring: MonitoringConfig = MonitoringConfig()
    gateway: GatewayConfig = GatewayConfig()
    provenance: ProvenanceConfig | None = None
    """None: records are neither signed nor checked."""
    audit: AuditConfig = AuditConfig()


class _Table:
    """A TOML table being read: typed field access with paths, unknown keys reported at the end."""

    def __init__(self, data: Any, path: str) -> None:
        if not isinstance(data, dict):
            raise ConfigError(path or "(top level)", f"expected a table, got {_kind(data)}")
        self.data: dict[str, Any] = data
        self.path = path
        self.seen: set[str] = set()

    def field_path(self, key: str) -> str:
        key = key or '""'  # TOML allows an empty quoted key: show it, not nothing
        return f"{self.path}.{key}" if self.path else key

    def get(self, key: str, kind: type[T], default: Any = _MISSING) -> T:
        self.seen.add(key)
        if key not in self.data:
            if default is _MISSING:
                raise ConfigError(self.field_path(key), f"missing (expected {kind.__name__})")
            return default  # type: ignore[no-any-return]
        value = self.data[key]
        accepted = (int, float) if kind is float else kind
        if not isinstance(value, accepted) or (kind is not bool and isinstance(value, bool)):
            raise ConfigError(
                self.field_path(key), f"expected {kind.__name__}, got {_kind(value)} {value!r}"
            )
        checked: Any = value
        try:
            return float(checked) if kind is float else checked  # type: ignore[return-value]
        except OverflowError:  # an integer past float range
            raise ConfigError(self.field_path(key), f"{value} is out of range") from None

    def check(self, key: str, ok: Callable[[Any], bool], expected: str, value: Any) -> None:
        if not ok(value):
            raise ConfigError(self.field_path(key), f"expected {expected}, got {value!r}")

    def table(self, key: str, *, required: bool = False) -> _Table | None:
        self.seen.add(key)
        if key not in self.data:
            if required:
                raise ConfigError(self.field_path(key), "missing table")
            return None
        return _Table(self.data[key], self.field_path(key))

    def done(self) -> None:
        unknown = sorted(set(self.data) - self.seen)
        if unknown:
            raise ConfigError(self.field_path(unknown[0]), "unknown key")


def _kind(value: Any) -> str:
    return {dict: "table", list: "array", str: "string", bool: "boolean"}.get(
        type(value), type(value).__name__
    )


def _bootstrap_ok(value: str) -> bool:
    for server in value.split(","):
        host, sep, port = server.strip().rpartition(":")
        digits = port.isascii() and port.isdigit() and len(port) <= 5
        if not (sep and host and digits and 0 < int(port) < 65536):
            return False
    return True


def _prefix_ok(value: str) -> bool:
    return 0 < len(value) <= 100 and all((c.isascii() and c.isalnum()) or c in "._-" for c in value)


def _cluster(table: _Table) -> ClusterConfig:
    bootstrap = table.get("bootstrap", str)
    table.check("bootstrap", _bootstrap_ok, "HOST:PORT[,HOST:PORT...]", bootstrap)
    prefix = table.get("topic_prefix", str, "cascade")
    table.check("topic_prefix", _prefix_ok, "1-100 characters of [A-Za-z0-9._-]", prefix)
    return ClusterConfig(bootstrap, prefix, _security(table.table("security")))


def _security(table: _Table | None) -> SecurityConfig:
    """Read a link's ``security`` table; read its secrets and load its TLS files to check them."""
    if table is None:
        return SecurityConfig()
    protocol = table.get("protocol", str, "plaintext")
    table.check("protocol", lambda p: p in PROTOCOLS, ", ".join(PROTOCOLS), protocol)
    tls, sasl = protocol in ("ssl", "sasl_ssl"), protocol.startswith("sasl_")
    ca_file = _pem(table, "ca_file", tls)
    cert_file = _pem(table, "cert_file", tls)
    key_file = _pem(table, "key_file", tls)
    if (key_file is None) != (cert_file is None):
        key = "key_file" if key_file is None else "cert_file"
        raise ConfigError(table.field_path(key), "cert_file and key_file go together (mutual TLS)")
    key_env, key_file_name, key_password = _secret(
        table, "key_password", "key_password_env", "key_password_file"
    )
    if key_password is not None and key_file is None:
        raise ConfigError(table.field_path("key_password_env"), "only with key_file")
    mechanism = table.get("sasl_mechanism", str, "SCRAM-SHA-512")
    mechanisms = ", ".join(SASL_MECHANISMS)
    table.check("sasl_mechanism", lambda m: m in SASL_MECHANISMS, mechanisms, mechanism)
    username = table.get("username", str, "")
    password_env, password_file, password = _secret(
        table, "password", "password_env", "password_file"
    )
    if not sasl:
        sasl_keys = {
            "sasl_mechanism": mechanism != "SCRAM-SHA-512",
            "username": username,
            "password_env": password_env,
            "password_file": password_file,
        }
        misplaced = [key for key, value in sasl_keys.items() if value]
        if misplaced:
            only = f"only with protocol sasl_ssl or sasl_plaintext, not {protocol}"
            raise ConfigError(table.field_path(misplaced[0]), only)
    else:
        table.check("username", bool, f"a SASL user name (protocol {protocol})", username)
        if password is None:
            needed = f"password_env or password_file is needed with protocol {protocol}"
            raise ConfigError(table.field_path("password_env"), needed)
    table.done()
    security = SecurityConfig(
        protocol, ca_file, cert_file, key_file, key_env, key_file_name, key_password, mechanism,
        username, password_env, password_file, password,
    )  # fmt: skip
    _load_tls(table, security)
    return security


def _pem(table: _Table, key: str, tls: bool) -> Path | None:
    """Read an optional PEM file name; it must be readable and belongs to ssl or sasl_ssl only."""
    name = table.get(key, str, "")
    table.check(key, lambda n: not n or tls, "no TLS file unless protocol is ssl or sasl_ssl", name)
    table.check(key, lambda n: not n or _readable_file(n), "a readable PEM file", name)
    return Path(name) if name else None


def _secret(table: _Table, key: str, env_key: str, file_key: str) -> tuple[str, str, Secret | None]:
    """Read secret ``key`` from the variable named by ``env_key`` or the file by ``file_key``.

    Returns both names and the secret (None when neither is given). The secret itself written
    under ``key`` is refused, and never repeated in the message.
    """
    if table.data.get(key, "") != "":
        raise ConfigError(
            table.field_path(key),
            f"secrets never go in the config file: name a variable ({env_key}) or a file "
            f"({file_key}) that holds it",
        )
    table.get(key, str, "")
    env = table.get(env_key, str, "")
    file = table.get(file_key, str, "")
    if env and file:
        raise ConfigError(table.field_path(file_key), f"either {env_key} or {file_key}, not both")
    if env:
        table.check(env_key, lambda n: bool(os.environ.get(n)), "a set environment variable", env)
        return env, file, Secret(os.environ[env])
    if not file:
        return env, file, None
    table.check(file_key, _readable_file, "a readable file", file)
    try:
        value = Path(file).read_text(encoding="utf-8").rstrip("\r\n")
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(table.field_path(file_key), f"cannot read {file}: {error}") from None
    if not value:
        raise ConfigError(table.field_path(file_key), f"{file} is empty")
    return env, file, Secret(value)


def _load_tls(table: _Table, security: SecurityConfig) -> None:
    """Load the CA and the client certificate and key as a link would; raise ConfigError."""
    if not security.tls:
        return
    try:
        context = ssl.create_default_context(cafile=security.ca_file)
    except (OSError, ssl.SSLError) as error:
        problem = f"no usable CA certificate: {error}"
        raise ConfigError(table.field_path("ca_file"), problem) from None
    try:
        security.load_client_certificate(context)
    except (OSError, ssl.SSLError) as error:
        raise ConfigError(
            table.field_path("key_file"),
            f"cannot load it with cert_file (a key that does not match, is encrypted without "
            f"key_password_env/key_password_file, or a wrong key password): {error}",
        ) from None


def parse_config(data: dict[str, Any]) -> NodeConfig:
    """Check a parsed TOML document and build the node's configuration; raise ConfigError."""
    root = _Table(data, "")
    node = root.table("node", required=True)
    assert node is not None
    node_id = node.get("id", str)
    node.check("id", _prefix_ok, "1-100 characters of [A-Za-z0-9._-]", node_id)
    level = node.get("level", str)
    node.check("level", _prefix_ok, "a level name such as county, city, province", level)
    region = node.get("region", str)
    node.check("region", is_region_code, "a six-digit region code (GB/T 2260)", region)
    children = node.get("children", list, [])
    for index, child in enumerate(children):
        path = f"children[{index}]"
        node.check(path, lambda c: isinstance(c, str) and is_region_code(c), "a region code", child)
        node.check(
            path, lambda c: c != region and contains(region, c), f"a region below {region}", child
        )
        node.check(path, lambda c, i=index: c not in children[:i], "no duplicates", child)  # type: ignore[misc]
        node.check(
            path,
            lambda c, i=index: not any(contains(o, c) or contains(c, o) for o in children[:i]),  # type: ignore[misc]
            "a region not nested in another child (each child is one subtree)",
            child,
        )
    schema_dir = node.get("schema_dir", str, "")
    catalog_dir = node.get("catalog_dir", str, "")
    node.done()

    local_table = root.table("local", required=True)
    assert local_table is not None
    local = _cluster(local_table)
    local_table.done()

    parent: ParentConfig | None = None
    parent_table = root.table("parent")
    if parent_table is not None:
        parent_region = parent_table.get("region", str)
        parent_table.check("region", is_region_code, "a six-digit region code", parent_region)
        parent_table.check(
            "region",
            lambda p: p != region,
            f"a region other than this node's {region}",
            parent_region,
        )
        parent = ParentConfig(_cluster(parent_table), parent_region)
        parent_table.done()

    topics = _topics(root.table("topics"))
    flow = _flow(root.table("flow"))
    admin = _admin(root.table("admin"))
    log = _log(root.table("log"))
    negative = _negative(root.table("negative_list"))
    clearance = _clearance(root.table("clearance"), children)
    departments = _departments(root)
    grants = _grants(root.table("grants"))
    monitoring = _monitoring(root.table("monitoring"))
    gateway = _gateway(root.table("gateway"))
    provenance = _provenance(root.table("provenance"))
    audit = _audit(root.table("audit"))
    if flow.workers > 1 and audit.fail_closed:
        raise ConfigError(
            "flow.workers", "must be 1 while audit.fail_closed is true (one process holds the gate)"
        )
    root.done()
    topology = Topology(region, level, parent.region if parent else None, tuple(children))
    return NodeConfig(
        node_id, topology, local, parent, topics, flow, admin, log,
        Path(schema_dir) if schema_dir else None, Path(catalog_dir) if catalog_dir else None,
        negative, clearance, departments, grants, monitoring, gateway, provenance=provenance,
        audit=audit,
    )  # fmt: skip


def _departments(root: _Table) -> tuple[Department, ...]:
    entries = root.get("departments", list, [])
    departments: list[Department] = []
    for index, entry in enumerate(entries):
        table = _Table(entry, f"departments[{index}]")
        code = table.get("code", str)
        table.check("code", _prefix_ok, "1-100 characters of [A-Za-z0-9._-]", code)
        table.check("code", lambda c: c not in {d.code for d in departments}, "a unique code", code)
        table.get("name", str, "")
        clearance = table.get("clearance", int)
        table.check("clearance", lambda g: MIN_GRADE <= g <= MAX_GRADE, "a grade 1-4", clearance)
        departments.append(Department(code, clearance, _strings(table, "subscribe")))
        table.done()
    return tuple(departments)


def _grants(table: _Table | None) -> GrantsConfig:
    if table is None:
        return GrantsConfig()
    default = GrantsConfig()
    staleness = table.get("max_staleness_s", float, default.max_staleness_s)
    table.check("max_staleness_s", lambda s: 0.5 <= s <= 600, "0.5-600 seconds", staleness)
    validity = table.get("default_validity_days", int, default.default_validity_days)
    table.check("default_validity_days", lambda d: 1 <= d <= 3650, "1-3650 days", validity)
    table.done()
    return GrantsConfig(staleness, validity)


def _monitoring(table: _Table | None) -> MonitoringConfig:
    if table is None:
        return MonitoringConfig()
    default = MonitoringConfig()

    def number(key: str, kind: type, low: float, high: float, unit: str) -> Any:
        value: Any = table.get(key, kind, getattr(default, key))
        table.check(key, lambda v: low <= v <= high, f"{low:g}-{high:g} {unit}", value)
        return value

    made = MonitoringConfig(
        heartbeat_s=number("heartbeat_s", float, 0.2, 300, "seconds"),
        completeness_bucket_s=number("completeness_bucket_s", int, 1, 86400, "seconds"),
        completeness_buckets=number("completeness_buckets", int, 3, 1000, "buckets"),
        completeness_settle_s=number("completeness_settle_s", float, 0, 86400, "seconds"),
        resource_label_cap=number("resource_label_cap", int, 1, 100_000, "labels"),
        stats_bucket_s=number("stats_bucket_s", int, 1, 31 * 86400, "seconds"),
        stats_flush_s=number("stats_flush_s", float, 0.2, 3600, "seconds"),
    )
    table.done()
    window = made.completeness_bucket_s * made.completeness_buckets
    if made.completeness_settle_s + made.completeness_bucket_s >= window:
        raise ConfigError(
            table.field_path("completeness_settle_s"),
            f"expected less than the window less one bucket ({window - made.completeness_bucket_s}"
            " s), or no bucket would ever be compared",
        )
    return made


def _gateway(table: _Table | None) -> GatewayConfig:
    if table is None:
        return GatewayConfig()
    enabled = table.get("enabled", bool, False)
    entries = table.get("clients", list, [])
    clients: list[GatewayClient] = []
    for index, entry in enumerate(entries):
        client = _Table(entry, table.field_path(f"clients[{index}]"))
        department = client.get("department", str)
        client.check("department", _prefix_ok, "1-100 characters of [A-Za-z0-9._-]", department)
        digest = client.get("token_sha256", str).lower()
        client.check(
            "token_sha256",
            lambda d: len(d) == 64 and all(c in "0123456789abcdef" for c in d),
            "the SHA-256 of the token as 64 hex digits",
            digest,
        )
        client.check(
            "token_sha256",
            lambda d: d not in {c.token_sha256 for c in clients},
            "a token hash no other client has",
            digest,
        )
        max_batch = client.get("max_batch", int, GATEWAY_MAX_BATCH)
        client.check("max_batch", lambda n: 1 <= n <= 10_000, "1-10000 records", max_batch)
        client.done()
        clients.append(GatewayClient(department, digest, max_batch))
    table.check("clients", lambda c: c or not enabled, "at least one client when enabled", clients)
    table.done()
    return GatewayConfig(enabled, tuple(clients))


def _audit(table: _Table | None) -> AuditConfig:
    if table is None:
        return AuditConfig()
    default = AuditConfig()
    enabled = table.get("enabled", bool, default.enabled)
    fail_closed = table.get("fail_closed", bool, default.fail_closed)
    pending = table.get("max_pending", int, default.max_pending)
    table.check("max_pending", lambda n: 1 <= n <= 10_000_000, "1-10000000 entries", pending)
    per_record = table.get("entries_per_record", int, default.entries_per_record)
    table.check("entries_per_record", lambda n: 1 <= n <= 10_000, "1-10000", per_record)
    flush = table.get("flush_s", float, default.flush_s)
    table.check("flush_s", lambda s: 0.01 <= s <= 60, "0.01-60 seconds", flush)
    retention = table.get("retention_days", int, default.retention_days)
    table.check("retention_days", lambda d: 1 <= d <= 36_500, "1-36500 days", retention)
    readers = table.get("readers", list, [])
    for index, reader in enumerate(readers):
        table.check(f"readers[{index}]", _principal, "a Kafka principal like User:NAME", reader)
    table.done()
    return AuditConfig(
        enabled, fail_closed, pending, per_record, flush, retention, tuple(sorted(set(readers)))
    )


def _principal(value: object) -> bool:
    """Tell whether ``value`` is a Kafka principal: ``TYPE:NAME``, no spaces."""
    if not isinstance(value, str) or any(c.isspace() for c in value):
        return False
    kind, _, name = value.partition(":")
    return kind.isalpha() and bool(name)


def _strings(table: _Table, key: str) -> frozenset[str]:
    values = table.get(key, list, [])
    for index, value in enumerate(values):
        table.check(f"{key}[{index}]", lambda v: isinstance(v, str) and bool(v), "a code", value)
    return frozenset(values)


def _negative(table: _Table | None) -> NegativeList:
    if table is None:
        return NegativeList()
    negative = NegativeList(_strings(table, "resources"), _strings(table, "departments"))
    table.done()
    return negative


def _grade(table: _Table, key: str) -> int:
    grade = table.get(key, int, MAX_GRADE)
    table.check(
        key, lambda g: MIN_GRADE <= g <= MAX_GRADE, f"a grade {MIN_GRADE}-{MAX_GRADE}", grade
    )
    return grade


def _clearance(table: _Table | None, children: list[str]) -> Clearance:
    if table is None:
        return Clearance()
    parent, default_child, local = (_grade(table, k) for k in ("parent", "children", "local"))
    per_child: dict[str, int] = {}
    child_table = table.table("child")
    if child_table is not None:
        for region in list(child_table.data):
            child_table.check(region, lambda r: r in children, "one of node.children", region)
            per_child[region] = _grade(child_table, region)
        child_table.done()
    table.done()
    return Clearance(parent, default_child, local, per_child)


def _topics(table: _Table | None) -> TopicConfig:
    if table is None:
        return TopicConfig()
    default = TopicConfig()
    create = table.get("create", bool, default.create)
    partitions = table.get("partitions", int, default.partitions)
    table.check("partitions", lambda n: 1 <= n <= 1000, "1-1000", partitions)
    replication = table.get("replication_factor", int, default.replication_factor)
    table.check("replication_factor", lambda n: 1 <= n <= 10, "1-10", replication)
    table.done()
    return TopicConfig(create, partitions, replication)


def _flow(table: _Table | None) -> FlowConfig:
    if table is None:
        return FlowConfig()
    default = FlowConfig()
    max_batch = table.get("max_batch", int, default.max_batch)
    table.check("max_batch", lambda n: 1 <= n <= 100_000, "1-100000 records", max_batch)
    fetch_timeout = table.get("fetch_timeout_ms", int, default.fetch_timeout_ms)
    table.check("fetch_timeout_ms", lambda n: 1 <= n <= 60_000, "1-60000 ms", fetch_timeout)
    backoff = table.get("retry_backoff_s", float, default.retry_backoff_s)
    table.check("retry_backoff_s", lambda s: 0 < s <= 300, "0 < seconds <= 300", backoff)
    shutdown = table.get("shutdown_timeout_s", float, default.shutdown_timeout_s)
    table.check("shutdown_timeout_s", lambda s: 0 < s <= 600, "0 < seconds <= 600", shutdown)
    validate = table.get("validate_ingress", bool, default.validate_ingress)
    in_flight = table.get("max_in_flight", int, default.max_in_flight)
    table.check("max_in_flight", lambda n: 1 <= n <= 16, "1-16 batches", in_flight)
    batch_bytes = table.get("batch_bytes", int, default.batch_bytes)
    table.check(
        "batch_bytes", lambda n: 16_384 <= n <= 16_777_216, "16384-16777216 bytes", batch_bytes
    )
    delivery = table.get("delivery_timeout_s", float, default.delivery_timeout_s)
    table.check("delivery_timeout_s", lambda s: 0 < s <= 3600, "0 < seconds <= 3600", delivery)
    max_backoff = table.get("max_backoff_s", float, default.max_backoff_s)
    table.check(
        "max_backoff_s", lambda s: backoff <= s <= 3600, "retry_backoff_s-3600 seconds", max_backoff
    )
    budget = table.get("max_in_flight_bytes", int, default.max_in_flight_bytes)
    table.check("max_in_flight_bytes", lambda n: 2**20 <= n <= 2**34, "1 MiB-16 GiB", budget)
    on_gap = table.get("on_gap", str, default.on_gap)
    table.check("on_gap", lambda v: v in ("earliest", "latest"), "earliest or latest", on_gap)
    workers = table.get("workers", int, default.workers)
    table.check("workers", lambda n: 1 <= n <= MAX_WORKERS, f"1-{MAX_WORKERS} processes", workers)
    table.done()
    return FlowConfig(
        max_batch, fetch_timeout, backoff, shutdown, validate, in_flight, batch_bytes,
        delivery, max_backoff, budget, on_gap, workers,
    )  # fmt: skip


def _admin(table: _Table | None) -> AdminConfig:
    if table is None:
        return AdminConfig()
    default = AdminConfig()
    host = table.get("host", str, default.host)
    table.check("host", bool, "a host name or address", host)
    port = table.get("port", int, default.port)
    table.check("port", lambda p: 0 <= p < 65536, "a TCP port 0-65535 (0: any free port)", port)
    opened = table.get("open", list, ["health", "metrics"])
    for index, group in enumerate(opened):
        table.check(f"open[{index}]", lambda g: g in ADMIN_OPEN, "health or metrics", group)
    users = _admin_users(table)
    certs = _admin_certs(table)
    tls = _admin_tls(table.table("tls"))
    table.check(
        "certs",
        lambda c: not c or (tls is not None and tls.client_ca_file is not None),
        "[admin.tls] with a client_ca_file to verify the certificates",
        certs,
    )
    if not (users or certs or _loopback(host)):
        raise ConfigError(
            table.field_path("users"),
            f"at least one user (or [[admin.certs]]) when host {host!r} is not a loopback"
            " address: without credentials the admin API would be open to anyone who reaches it",
        )
    table.done()
    return AdminConfig(host, port, tuple(dict.fromkeys(opened)), users, certs, tls)


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name: where it resolves is not known here, assume reachable


def _admin_users(table: _Table) -> tuple[AdminUser, ...]:
    users: list[AdminUser] = []
    for index, entry in enumerate(table.get("users", list, [])):
        user = _Table(entry, table.field_path(f"users[{index}]"))
        name = user.get("name", str)
        user.check(
            "name", lambda n: 0 < len(n) <= 100 and n.isprintable(), "1-100 characters", name
        )
        user.check("name", lambda n: n not in {u.name for u in users}, "a unique name", name)
        role = user.get("role", str)
        user.check("role", lambda r: r in ADMIN_ROLES, "operator, auditor or admin", role)
        digest = user.get("token_sha256", str).lower()
        user.check(
            "token_sha256",
            lambda d: len(d) == 64 and all(c in "0123456789abcdef" for c in d),
            "the SHA-256 of the token as 64 hex digits",
            digest,
        )
        user.check(
            "token_sha256",
            lambda d: d not in {u.token_sha256 for u in users},
            "a token hash no other user has",
            digest,
        )
        user.done()
        users.append(AdminUser(name, role, digest))
    return tuple(users)


def _admin_certs(table: _Table) -> tuple[AdminCert, ...]:
    certs: list[AdminCert] = []
    for index, entry in enumerate(table.get("certs", list, [])):
        cert = _Table(entry, table.field_path(f"certs[{index}]"))
        cn = cert.get("subject_cn", str)
        cert.check("subject_cn", lambda c: 0 < len(c) <= 64, "a common name of 1-64 characters", cn)
        cert.check(
            "subject_cn", lambda c: c not in {x.subject_cn for x in certs}, "a unique CN", cn
        )
        role = cert.get("role", str)
        cert.check("role", lambda r: r in ADMIN_ROLES, "operator, auditor or admin", role)
        cert.done()
        certs.append(AdminCert(cn, role))
    return tuple(certs)


def _admin_tls(table: _Table | None) -> AdminTls | None:
    if table is None:
        return None
    cert_file = table.get("cert_file", str)
    table.check("cert_file", _readable_file, "a readable PEM file", cert_file)
    key_file = table.get("key_file", str)
    table.check("key_file", _readable_file, "a readable PEM file", key_file)
    client_ca_file = table.get("client_ca_file", str, "")
    table.check(
        "client_ca_file",
        lambda f: not f or _readable_file(f),
        "a readable PEM file",
        client_ca_file,
    )
    table.done()
    return AdminTls(
        Path(cert_file), Path(key_file), Path(client_ca_file) if client_ca_file else None
    )


def _provenance(table: _Table | None) -> ProvenanceConfig | None:
    if table is None:
        return None
    key_file = table.get("key_file", str)
    table.check("key_file", _readable_file, "a readable private key file", key_file)
    algorithm = table.get("algorithm", str, "ed25519")
    table.check("algorithm", lambda a: a in ("ed25519", "sm2"), "ed25519 or sm2", algorithm)
    require = table.get("require", bool, True)
    grace = table.get("rotation_grace_s", float, 86400.0)
    table.check("rotation_grace_s", lambda g: 0 <= g <= 90 * 86400, "0-7776000 seconds", grace)
    cache = table.get("verified_root_cache", int, 4096)
    table.check("verified_root_cache", lambda c: 1 <= c <= 1_000_000, "1-1000000 roots", cache)
    table.done()
    return ProvenanceConfig(Path(key_file), algorithm, require, grace, cache)


def _readable_file(name: str) -> bool:
    return bool(name) and os.access(name, os.R_OK) and Path(name).is_file()


def _log(table: _Table | None) -> LogConfig:
    if table is None:
        return LogConfig()
    default = LogConfig()
    fmt = table.get("format", str, default.format)
    table.check("format", lambda f: f in ("auto", "json", "console"), "auto, json or console", fmt)
    level = table.get("level", str, default.level)
    levels = ("debug", "info", "warning", "error")
    table.check("level", lambda lv: lv in levels, ", ".join(levels), level)
    table.done()
    return LogConfig(fmt, level)


def load_config(path: Path) -> NodeConfig:
    """Read and check a TOML file; raise ConfigError naming the file or the bad field."""
    try:
        data = tomli.loads(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise ConfigError(str(path), f"cannot read: {error.strerror}") from error
    except (ValueError, RecursionError) as error:  # TOMLDecodeError, non-UTF-8, int, nesting
        raise ConfigError(str(path), f"not valid TOML: {error}") from error
    return parse_config(data)
