"""``exchange-node check-config FILE``: exit 0 for a valid file, 2 naming what is wrong otherwise."""

from __future__ import annotations

from pathlib import Path

import pytest

from node.cli import main
from tests.unit.test_config import CITY_TOML

REPO = Path(__file__).resolve().parents[2]
VALID = (
    CITY_TOML
    + """
[[departments]]
code = "HEALTH"
name = "市卫生健康委员会"
clearance = 3
subscribe = ["410100-PSB-00001"]
"""
)


def write(tmp_path: Path, text: str) -> Path:
    """Write ``text`` as a TOML file in ``tmp_path`` and return its path."""
    path = tmp_path / "node.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_a_valid_file_exits_0_and_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A valid file is reported valid on stdout with the node id and region, and nothing on stderr."""
    path = write(tmp_path, VALID)
    assert main(["check-config", str(path)]) == 0
    out, err = capsys.readouterr()
    assert out.strip() == f"{path}: valid (zz-city, region 410100)"
    assert err == ""


@pytest.mark.parametrize(
    ("old", "new", "named"),
    [('bootstrap = "127.0.0.1:29092"', 'bootstrap = "kafka"', "local.bootstrap"),
     ('region = "410100"', 'region = "4101"', "node.region"),
     ('children = ["410102", "410103"]', 'children = ["410102", "420100"]', "node.children[1]"),
     ('bootstrap = "127.0.0.1:19092"', 'bootstrap = "127.0.0.1:99999"', "parent.bootstrap"),
     ('bootstrap = "127.0.0.1:29092"', 'bootstrap = "127.0.0.1:29092"\nbootstrapp = "127.0.0.1:29093"', "local.bootstrapp"),
     ("clearance = 3", "clearance = 7", "departments[0].clearance"),
     ('subscribe = ["410100-PSB-00001"]', 'subscribe = ["410100-PSB-99999"]', "departments[0].subscribe")],
)  # fmt: skip
def test_a_bad_field_exits_2_naming_it_on_stderr(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], old: str, new: str, named: str
) -> None:
    """A wrong field (or a subscription to no catalogued resource) exits 2 with its path on stderr only."""
    assert old in VALID
    path = write(tmp_path, VALID.replace(old, new, 1))
    assert main(["check-config", str(path)]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith("exchange-node: invalid configuration: ")
    assert f"{named}: " in err


def test_a_missing_file_exits_2_naming_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A file that does not exist is reported with its path and exit code 2."""
    path = tmp_path / "absent.toml"
    assert main(["check-config", str(path)]) == 2
    assert f"{path}: cannot read" in capsys.readouterr().err


def test_invalid_toml_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Malformed TOML is reported as such, with exit code 2."""
    path = write(tmp_path, "[node\n")
    assert main(["check-config", str(path)]) == 2
    assert "not valid TOML" in capsys.readouterr().err


def test_a_missing_schema_folder_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A configured schema folder that does not exist is a configuration error too."""
    absent = tmp_path / "no-schemas"
    path = write(
        tmp_path,
        VALID.replace('region = "410100"', f'region = "410100"\nschema_dir = "{absent}"', 1),
    )
    assert main(["check-config", str(path)]) == 2
    assert str(absent) in capsys.readouterr().err


@pytest.mark.parametrize("name", ["province", "city", "county", "county-b"])
def test_the_shipped_demo_configs_are_valid(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    """check-config accepts every demo config in deploy/local/demo (exit 0)."""
    assert main(["check-config", str(REPO / "deploy" / "local" / "demo" / f"{name}.toml")]) == 0
    assert "valid" in capsys.readouterr().out


def test_check_config_needs_a_file(capsys: pytest.CaptureFixture[str]) -> None:
    """Without a file argument argparse exits 2 with a usage message."""
    with pytest.raises(SystemExit) as caught:
        main(["check-config"])
    assert caught.value.code == 2
    assert "usage:" in capsys.readouterr().err
