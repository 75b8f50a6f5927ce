"""Configuration: checked at start-up, every error naming its field."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from node.cli import main
from node.config import load_config, parse_config
from node.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]
VALID: dict[str, Any] = {
    "node": {
        "id": "zz-city",
        "level": "city",
        "region": "410100",
        "children": ["410102", "410103"],
    },
    "local": {"bootstrap": "127.0.0.1:29092"},
    "parent": {"bootstrap": "127.0.0.1:19092", "region": "410000", "topic_prefix": "henan"},
    "flow": {"max_batch": 500, "retry_backoff_s": 2},
    "admin": {"port": 9411},
}


def with_change(path: str, value: Any) -> dict[str, Any]:
    """VALID with one field (``table.key``) replaced, or removed when value is ...."""
    data = copy.deepcopy(VALID)
    table, key = path.split(".")
    if value is ...:
        del data[table][key]
    else:
        data.setdefault(table, {})[key] = value
    return data


def test_a_full_config_loads_into_typed_values() -> None:
    """A valid document yields the topology, the links and the defaults."""
    config = parse_config(VALID)
    assert config.topology.children == ("410102", "410103")
    assert config.topology.parent == "410000"
    assert config.parent is not None
    assert config.parent.cluster.topic_prefix == "henan"
    assert config.local.topic_prefix == "cascade"
    assert config.flow.max_batch == 500
    assert config.flow.retry_backoff_s == 2.0
    assert config.admin.host == "127.0.0.1"


def test_the_root_has_no_parent() -> None:
    """Leaving out [parent] makes the node the root of its cascade."""
    data = copy.deepcopy(VALID)
    del data["parent"]
    assert parse_config(data).parent is None


@pytest.mark.parametrize(
    ("path", "value", "named", "says"),
    [
        ("node.region", "4101", "node.region", "six-digit"),
        ("node.region", 410100, "node.region", "expected str"),
        ("node.id", ..., "node.id", "missing"),
        ("node.children", ["410102", "420100"], "node.children[1]", "below 410100"),
        ("node.children", ["410102", "410102"], "node.children[1]", "no duplicates"),
        ("local.bootstrap", "kafka", "local.bootstrap", "HOST:PORT"),
        ("local.bootstrapp", "127.0.0.1:1", "local.bootstrapp", "unknown key"),
        ("parent.region", "410100", "parent.region", "other than"),
        ("parent.bootstrap", "127.0.0.1:99999", "parent.bootstrap", "HOST:PORT"),
        ("flow.max_batch", 0, "flow.max_batch", "1-100000"),
        ("flow.validate_ingress", "yes", "flow.validate_ingress", "expected bool"),
        ("topics.partitions", True, "topics.partitions", "expected int"),
        ("admin.port", 70000, "admin.port", "TCP port"),
        ("log.format", "xml", "log.format", "auto, json or console"),
    ],
)
def test_each_wrong_field_is_named(path: str, value: Any, named: str, says: str) -> None:
    """A wrong or unknown field raises ConfigError with its path and what was expected."""
    with pytest.raises(ConfigError, match=says) as caught:
        parse_config(with_change(path, value))
    assert caught.value.path == named


def test_a_missing_table_is_named() -> None:
    """A config without [local] says so."""
    data = copy.deepcopy(VALID)
    del data["local"]
    with pytest.raises(ConfigError) as caught:
        parse_config(data)
    assert caught.value.path == "local"


def test_unreadable_and_malformed_files_are_reported(tmp_path: Path) -> None:
    """A missing file and invalid TOML both stop start-up with the file name."""
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "absent.toml")
    broken = tmp_path / "broken.toml"
    broken.write_text("[node\nid = 1\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(broken)


@pytest.mark.parametrize("name", ["province", "city", "county", "county-b"])
def test_the_demo_configs_are_valid(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    """check-config accepts every shipped demo config (exit 0)."""
    assert main(["check-config", str(REPO / "deploy" / "local" / "demo" / f"{name}.toml")]) == 0
    assert "valid" in capsys.readouterr().out


def test_check_config_exits_2_naming_the_field(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """check-config rejects a bad file with exit code 2 and the field path on stderr."""
    bad = tmp_path / "bad.toml"
    bad.write_text(
        '[node]\nid = "a"\nlevel = "county"\nregion = "410102"\n[local]\nbootstrap = "x"\n'
    )
    assert main(["check-config", str(bad)]) == 2
    assert "local.bootstrap" in capsys.readouterr().err
