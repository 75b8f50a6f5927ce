"""Configuration: checked at start-up into typed values, every error naming its field."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from node.config import (
    AdminConfig,
    AdminUser,
    FlowConfig,
    GrantsConfig,
    LogConfig,
    TopicConfig,
    load_config,
    parse_config,
)  # fmt: skip
from node.core.policy import Department
from node.core.topology import Topology
from node.errors import ConfigError, NodeError

FULL: dict[str, Any] = {
    "node": {
        "id": "zz-city", "level": "city", "region": "410100", "children": ["410102", "410103"],
        "schema_dir": "/etc/exchange/schemas", "catalog_dir": "/etc/exchange/catalog",
    },
    "local": {"bootstrap": "10.0.0.1:9092,10.0.0.2:9092", "topic_prefix": "zz.city"},
    "parent": {"bootstrap": "kafka.henan.gov.cn:19092", "region": "410000", "topic_prefix": "henan"},
    "topics": {"create": False, "partitions": 6, "replication_factor": 3},
    "flow": {"max_batch": 500, "fetch_timeout_ms": 50, "retry_backoff_s": 2, "shutdown_timeout_s": 12.5,
             "validate_ingress": False, "max_in_flight": 3, "batch_bytes": 500_000},
    "admin": {"host": "0.0.0.0", "port": 9411,  # not loopback: needs a credential
              "users": [{"name": "ops", "role": "operator", "token_sha256": "ab" * 32}]},
    "log": {"format": "json", "level": "debug"},
    "negative_list": {"resources": ["410100-PSB-00009"], "departments": ["TAX"]},
    "clearance": {"parent": 3, "children": 2, "local": 4, "child": {"410103": 1}},
    "departments": [{"code": "HEALTH", "name": "市卫生健康委员会", "clearance": 3, "subscribe": ["410100-PSB-00001"]},
                    {"code": "CIVIL", "clearance": 1}],
    "grants": {"max_staleness_s": 1.5, "default_validity_days": 90},
}  # fmt: skip
MINIMAL: dict[str, Any] = {
    "node": {"id": "henan", "level": "province", "region": "410000"},
    "local": {"bootstrap": "127.0.0.1:19092"},
}


def with_change(path: str, value: Any, base: dict[str, Any] = FULL) -> dict[str, Any]:
    """``base`` with one field (dotted path, ``[i]`` for array entries) set, or removed when value is ``...``."""
    data = copy.deepcopy(base)
    *tables, key = path.split(".")
    table: Any = data
    for step in tables:
        name, _, index = step.partition("[")
        table = table.setdefault(name, {})
        if index:
            table = table[int(index.rstrip("]"))]
    if value is ...:
        del table[key]
    else:
        table[key] = value
    return data


def test_a_full_config_loads_into_typed_values() -> None:
    """Every table of a complete document ends up in the frozen configuration, typed."""
    config = parse_config(FULL)
    assert config.node_id == "zz-city"
    assert config.topology == Topology("410100", "city", "410000", ("410102", "410103"))
    assert config.local.bootstrap == "10.0.0.1:9092,10.0.0.2:9092"
    assert config.local.topic_prefix == "zz.city"
    assert config.parent is not None
    assert config.parent.region == "410000"
    assert config.parent.cluster.bootstrap == "kafka.henan.gov.cn:19092"
    assert config.parent.cluster.topic_prefix == "henan"
    assert config.topics == TopicConfig(create=False, partitions=6, replication_factor=3)
    assert config.flow == FlowConfig(
        500, 50, 2.0, 12.5, validate_ingress=False, max_in_flight=3, batch_bytes=500_000
    )
    assert isinstance(config.flow.retry_backoff_s, float)
    assert config.admin == AdminConfig(
        "0.0.0.0", 9411, users=(AdminUser("ops", "operator", "ab" * 32),)
    )
    assert config.log == LogConfig("json", "debug")
    assert config.schema_dir == Path("/etc/exchange/schemas")
    assert config.catalog_dir == Path("/etc/exchange/catalog")
    assert config.negative.resources == frozenset({"410100-PSB-00009"})
    assert config.negative.departments == frozenset({"TAX"})
    assert (config.clearance.parent, config.clearance.children, config.clearance.local) == (3, 2, 4)
    assert dict(config.clearance.child) == {"410103": 1}
    assert config.departments == (
        Department("HEALTH", 3, frozenset({"410100-PSB-00001"})), Department("CIVIL", 1, frozenset()),
    )  # fmt: skip
    assert config.grants == GrantsConfig(1.5, 90)


def test_a_minimal_config_gets_the_defaults() -> None:
    """With only [node] and [local], the node is a root with default settings."""
    config = parse_config(MINIMAL)
    assert config.parent is None
    assert config.topology == Topology("410000", "province", None, ())
    assert config.local.topic_prefix == "cascade"
    assert config.topics == TopicConfig()
    assert config.flow == FlowConfig()
    assert config.admin == AdminConfig("127.0.0.1", 9100)
    assert config.log == LogConfig("auto", "info")
    assert config.schema_dir is None
    assert config.catalog_dir is None
    assert config.departments == ()
    assert config.grants == GrantsConfig()


def test_a_municipality_under_the_national_node_is_configured_like_any_node() -> None:
    """Chongqing: districts directly below a province-level node, whose parent is national."""
    data = copy.deepcopy(MINIMAL)
    data["node"] = {
        "id": "cq",
        "level": "municipality",
        "region": "500000",
        "children": ["500101", "500103"],
    }
    data["parent"] = {"bootstrap": "[::1]:9092", "region": "000000"}
    config = parse_config(data)
    assert config.topology == Topology("500000", "municipality", "000000", ("500101", "500103"))


def test_parsing_does_not_change_the_document() -> None:
    """parse_config reads its input without mutating it."""
    data = copy.deepcopy(FULL)
    parse_config(data)
    assert data == FULL


@pytest.mark.parametrize(
    ("path", "value", "named", "says"),
    [
        ("node.region", "4101", "node.region", "six-digit"),
        ("node.region", "41010x", "node.region", "six-digit"),
        ("node.region", 410100, "node.region", "expected str"),
        ("node.region", ..., "node.region", "missing"),
        ("node.id", ..., "node.id", "missing"),
        ("node.id", "zz city", "node.id", "1-100 characters"),
        ("node.id", "", "node.id", "1-100 characters"),
        ("node.level", "city level", "node.level", "level name"),
        ("node.children", "410102", "node.children", "expected list"),
        ("node.children", ["410102", "420100"], "node.children[1]", "below 410100"),
        ("node.children", ["410102", "410102"], "node.children[1]", "no duplicates"),
        ("node.children", ["410102", "410103", 410104], "node.children[2]", "a region code"),
        ("node.children", ["410100"], "node.children[0]", "below 410100"),
        ("node.children", ["410000"], "node.children[0]", "below 410100"),
        ("node.children", ["4101"], "node.children[0]", "a region code"),
        ("node.schema_dir", 1, "node.schema_dir", "expected str"),
        ("node.childs", [], "node.childs", "unknown key"),
        ("local.bootstrap", "kafka", "local.bootstrap", "HOST:PORT"),
        ("local.bootstrap", "kafka:", "local.bootstrap", "HOST:PORT"),
        ("local.bootstrap", ":9092", "local.bootstrap", "HOST:PORT"),
        ("local.bootstrap", "kafka:0", "local.bootstrap", "HOST:PORT"),
        ("local.bootstrap", "a:9092,", "local.bootstrap", "HOST:PORT"),
        ("local.bootstrap", ..., "local.bootstrap", "missing"),
        ("local.topic_prefix", "zz city", "local.topic_prefix", "1-100 characters"),
        ("local.bootstrapp", "127.0.0.1:1", "local.bootstrapp", "unknown key"),
        ("parent.region", "410100", "parent.region", "other than"),
        ("parent.region", "41", "parent.region", "six-digit"),
        ("parent.region", ..., "parent.region", "missing"),
        ("parent.bootstrap", "127.0.0.1:99999", "parent.bootstrap", "HOST:PORT"),
        ("parent.bootstrap", ["127.0.0.1:9092"], "parent.bootstrap", "expected str"),
        ("parent.topic_prefix", "", "parent.topic_prefix", "1-100 characters"),
        ("parent.cluster", "x", "parent.cluster", "unknown key"),
        ("topics.partitions", True, "topics.partitions", "expected int"),
        ("topics.partitions", 0, "topics.partitions", "1-1000"),
        ("topics.replication_factor", 11, "topics.replication_factor", "1-10"),
        ("topics.create", "yes", "topics.create", "expected bool"),
        ("flow.max_batch", 0, "flow.max_batch", "1-100000"),
        ("flow.max_batch", 100_001, "flow.max_batch", "1-100000"),
        ("flow.max_batch", 1.5, "flow.max_batch", "expected int"),
        ("flow.fetch_timeout_ms", 0, "flow.fetch_timeout_ms", "1-60000"),
        ("flow.retry_backoff_s", 0, "flow.retry_backoff_s", "seconds <= 300"),
        ("flow.retry_backoff_s", True, "flow.retry_backoff_s", "expected float"),
        ("flow.retry_backoff_s", float("nan"), "flow.retry_backoff_s", "seconds <= 300"),
        ("flow.shutdown_timeout_s", float("inf"), "flow.shutdown_timeout_s", "seconds <= 600"),
        ("flow.validate_ingress", "yes", "flow.validate_ingress", "expected bool"),
        ("flow.max_in_flight", 0, "flow.max_in_flight", "1-16"),
        ("flow.batch_bytes", 1024, "flow.batch_bytes", "16384-16777216"),
        ("flow.batch_bytes", 2**24 + 1, "flow.batch_bytes", "16384-16777216"),
        ("flow.delivery_timeout_s", 0, "flow.delivery_timeout_s", "seconds <= 3600"),
        ("flow.delivery_timeout_s", "30", "flow.delivery_timeout_s", "expected float"),
        ("flow.max_backoff_s", 0.5, "flow.max_backoff_s", "retry_backoff_s-3600"),
        ("flow.max_in_flight_bytes", 1024, "flow.max_in_flight_bytes", "1 MiB-16 GiB"),
        ("flow.on_gap", "skip", "flow.on_gap", "earliest or latest"),
        ("flow.workers", 0, "flow.workers", "1-16 processes"),
        ("flow.workers", 17, "flow.workers", "1-16 processes"),
        ("flow.workers", "2", "flow.workers", "expected int"),
        ("flow.max_batchs", 1, "flow.max_batchs", "unknown key"),
        ("admin.port", 70000, "admin.port", "TCP port"),
        ("admin.port", -1, "admin.port", "TCP port"),
        ("admin.host", "", "admin.host", "host name"),
        ("log.format", "xml", "log.format", "auto, json or console"),
        ("log.level", "trace", "log.level", "debug, info, warning, error"),
        ("negative_list.resources", ["ok", ""], "negative_list.resources[1]", "a code"),
        ("negative_list.departments", [1], "negative_list.departments[0]", "a code"),
        ("clearance.parent", 5, "clearance.parent", "grade 1-4"),
        ("clearance.local", 0, "clearance.local", "grade 1-4"),
        ("clearance.child", {"410199": 2}, "clearance.child.410199", "one of node.children"),
        ("clearance.child", {"410103": 9}, "clearance.child.410103", "grade 1-4"),
        ("clearance.childs", {}, "clearance.childs", "unknown key"),
        ("departments[0].clearance", 5, "departments[0].clearance", "grade 1-4"),
        ("departments[1].code", "HEALTH", "departments[1].code", "a unique code"),
        ("departments[1].code", ..., "departments[1].code", "missing"),
        (
            "departments[0].subscribe",
            "410100-PSB-00001",
            "departments[0].subscribe",
            "expected list",
        ),
        ("departments[1].subscribes", [], "departments[1].subscribes", "unknown key"),
        ("grants.max_staleness_s", 0.1, "grants.max_staleness_s", "0.5-600"),
        ("grants.default_validity_days", 0, "grants.default_validity_days", "1-3650"),
        ("nodes.id", "x", "nodes", "unknown key"),
    ],
)
def test_each_wrong_field_is_named(path: str, value: Any, named: str, says: str) -> None:
    """A wrong, missing or unknown field raises ConfigError whose path names it and says what was expected."""
    with pytest.raises(ConfigError, match=says) as caught:
        parse_config(with_change(path, value))
    assert caught.value.path == named
    assert str(caught.value).startswith(f"{named}: ")


@pytest.mark.parametrize(
    "path", ["node.id", "local.topic_prefix", "parent.topic_prefix", "departments[0].code"]
)
@pytest.mark.parametrize("value", ["郑州", "\uff5a\uff5a", "zz\u00e9"])
def test_names_used_in_kafka_must_be_ascii(path: str, value: str) -> None:
    """Ids, topic prefixes and department codes end up in topic and group names, so only ASCII passes."""
    with pytest.raises(ConfigError, match="A-Za-z0-9") as caught:
        parse_config(with_change(path, value))
    assert caught.value.path == path


@pytest.mark.parametrize(("table", "path"), [("node", "node"), ("local", "local")])
def test_a_missing_required_table_is_named(table: str, path: str) -> None:
    """A config without [node] or [local] says which table is missing."""
    data = copy.deepcopy(FULL)
    del data[table]
    with pytest.raises(ConfigError, match="missing table") as caught:
        parse_config(data)
    assert caught.value.path == path


@pytest.mark.parametrize(
    ("table", "path"), [("flow", "flow"), ("parent", "parent"), ("departments", "departments")]
)
def test_a_table_of_the_wrong_type_is_named(table: str, path: str) -> None:
    """A key that should hold a table (or array of tables) but holds a string is named."""
    with pytest.raises(ConfigError, match="expected") as caught:
        parse_config({**copy.deepcopy(FULL), table: "oops"})
    assert caught.value.path == path


def test_a_department_entry_that_is_not_a_table_is_named() -> None:
    """An array entry of [[departments]] that is a string names its index."""
    data = {**copy.deepcopy(FULL), "departments": ["HEALTH"]}
    with pytest.raises(ConfigError, match="expected a table") as caught:
        parse_config(data)
    assert caught.value.path == "departments[0]"


def test_children_nested_in_one_another_are_refused() -> None:
    """A child lying below another child would get every subtree broadcast twice, so it is refused."""
    data = copy.deepcopy(MINIMAL)
    data["node"] = {
        "id": "cn",
        "level": "national",
        "region": "000000",
        "children": ["410000", "410100"],
    }
    with pytest.raises(ConfigError) as caught:
        parse_config(data)
    assert caught.value.path == "node.children[1]"


def test_config_errors_are_node_errors_and_not_retriable() -> None:
    """A bad configuration stops start-up for good."""
    error = ConfigError("node.region", "missing")
    assert isinstance(error, NodeError)
    assert error.retriable is False
    assert (error.path, error.problem) == ("node.region", "missing")


# ---- files ---------------------------------------------------------------------------------

CITY_TOML = """\
[node]
id = "zz-city"
level = "city"
region = "410100"
children = ["410102", "410103"]

[local]
bootstrap = "127.0.0.1:29092"

[parent]
bootstrap = "127.0.0.1:19092"
region = "410000"
"""
"""A city node with a parent and two children, as an operator would write it."""
VALID_TOML = CITY_TOML + "\n[flow]\nmax_batch = 500\n"


def test_load_config_reads_a_toml_file(tmp_path: Path) -> None:
    """A valid file loads into the same configuration its parsed document gives."""
    path = tmp_path / "city.toml"
    path.write_text(VALID_TOML, encoding="utf-8")
    config = load_config(path)
    assert config.topology == Topology("410100", "city", "410000", ("410102", "410103"))
    assert config.flow.max_batch == 500


def test_a_missing_file_is_reported_with_its_name(tmp_path: Path) -> None:
    """A file that cannot be read stops start-up naming the file."""
    path = tmp_path / "absent.toml"
    with pytest.raises(ConfigError, match="cannot read") as caught:
        load_config(path)
    assert caught.value.path == str(path)


@pytest.mark.parametrize(
    "text", ["[node\nid = 1\n", 'id = "a"\nid = "b"\n', "x = \n", "[node]\nregion = 410100x\n"]
)
def test_invalid_toml_is_reported_with_the_file_name(tmp_path: Path, text: str) -> None:
    """Malformed TOML stops start-up naming the file and saying it is not valid TOML."""
    path = tmp_path / "broken.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError, match="not valid TOML") as caught:
        load_config(path)
    assert caught.value.path == str(path)


def test_a_field_error_in_a_file_names_the_field(tmp_path: Path) -> None:
    """A readable file with a bad field is reported by field path, not file name."""
    path = tmp_path / "city.toml"
    path.write_text(VALID_TOML.replace("max_batch = 500", "max_batch = 0"), encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert caught.value.path == "flow.max_batch"


def test_workers_and_a_fail_closed_audit_trail_do_not_mix() -> None:
    """One process holds a fail-closed trail's gate: several workers stop start-up, naming why."""
    data = with_change("flow.workers", 2)
    data["audit"] = {"fail_closed": True}
    with pytest.raises(ConfigError, match=r"audit\.fail_closed") as caught:
        parse_config(data)
    assert caught.value.path == "flow.workers"
    data["flow"]["workers"] = 1
    assert parse_config(data).audit.fail_closed
