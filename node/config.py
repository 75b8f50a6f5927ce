"""Node configuration: one TOML file, loaded once into frozen, typed values.

Every check names the field path (``parent.region``) and what was expected, and unknown keys are
errors too, so a typo stops start-up instead of silently falling back to a default.
"""

from __future__ import annotations

import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from node.core.envelope import MAX_GRADE, MIN_GRADE
from node.core.policy import Clearance, Department, NegativeList
from node.core.topology import Topology, contains, is_region_code
from node.errors import ConfigError

T = TypeVar("T")
_MISSING = object()


@dataclass(frozen=True, slots=True)
class ClusterConfig:
    """How to reach one Kafka cluster and which topic namespace this node uses there."""

    bootstrap: str
    """Kafka bootstrap servers, ``HOST:PORT[,HOST:PORT...]``."""
    topic_prefix: str = "cascade"
    """The namespace of this exchange's topics on that cluster (``PREFIX.outbox`` ...); two
    logical platforms can share one cluster under different prefixes."""


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


@dataclass(frozen=True, slots=True)
class AdminConfig:
    """Where the admin HTTP server (/metrics, /healthz) listens."""

    host: str = "127.0.0.1"
    """Address the admin server listens on (loopback unless a scraper needs more)."""
    port: int = 9100
    """Port of /metrics, /livez, /readyz, /cascade, the grants API and the gateway."""


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


class _Table:
    """A TOML table being read: typed field access with paths, unknown keys reported at the end."""

    def __init__(self, data: Any, path: str) -> None:
        if not isinstance(data, dict):
            raise ConfigError(path or "(top level)", f"expected a table, got {_kind(data)}")
        self.data: dict[str, Any] = data
        self.path = path
        self.seen: set[str] = set()

    def field_path(self, key: str) -> str:
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
        return float(checked) if kind is float else checked  # type: ignore[return-value]

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
        if not (sep and host and port.isdigit() and 0 < int(port) < 65536):
            return False
    return True


def _prefix_ok(value: str) -> bool:
    return 0 < len(value) <= 100 and all((c.isascii() and c.isalnum()) or c in "._-" for c in value)


def _cluster(table: _Table) -> ClusterConfig:
    bootstrap = table.get("bootstrap", str)
    table.check("bootstrap", _bootstrap_ok, "HOST:PORT[,HOST:PORT...]", bootstrap)
    prefix = table.get("topic_prefix", str, "cascade")
    table.check("topic_prefix", _prefix_ok, "1-100 characters of [A-Za-z0-9._-]", prefix)
    return ClusterConfig(bootstrap, prefix)


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
    root.done()
    topology = Topology(region, level, parent.region if parent else None, tuple(children))
    return NodeConfig(
        node_id, topology, local, parent, topics, flow, admin, log,
        Path(schema_dir) if schema_dir else None, Path(catalog_dir) if catalog_dir else None,
        negative, clearance, departments, grants, monitoring, gateway,
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
    table.done()
    return FlowConfig(
        max_batch, fetch_timeout, backoff, shutdown, validate, in_flight, batch_bytes,
        delivery, max_backoff, budget, on_gap,
    )  # fmt: skip


def _admin(table: _Table | None) -> AdminConfig:
    if table is None:
        return AdminConfig()
    default = AdminConfig()
    host = table.get("host", str, default.host)
    table.check("host", bool, "a host name or address", host)
    port = table.get("port", int, default.port)
    table.check("port", lambda p: 0 <= p < 65536, "a TCP port 0-65535 (0: any free port)", port)
    table.done()
    return AdminConfig(host, port)


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
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise ConfigError(str(path), f"cannot read: {error.strerror}") from error
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(str(path), f"not valid TOML: {error}") from error
    return parse_config(data)
