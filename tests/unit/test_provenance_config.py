"""``[provenance]`` configuration and key files: every problem is a ConfigError naming its field."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ec import SECP256R1, generate_private_key

from node.config import parse_config
from node.errors import ConfigError
from node.keys_cli import add_parser, run
from node.signing import load_signer, sm2_available, write_new_key


def config(**provenance: Any) -> dict[str, Any]:
    """A minimal node configuration with a ``[provenance]`` table."""
    return {
        "node": {"id": "n", "level": "county", "region": "410102"},
        "local": {"bootstrap": "127.0.0.1:9092"},
        "provenance": provenance,
    }


def test_a_configured_key_is_read_with_its_defaults(tmp_path: Path) -> None:
    """key_file alone: Ed25519, require, a day of grace, 4096 cached roots."""
    write_new_key(tmp_path / "k.pem", "ed25519")
    settings = parse_config(config(key_file=str(tmp_path / "k.pem"))).provenance
    assert settings is not None
    assert (settings.algorithm, settings.require, settings.rotation_grace_s) == (
        "ed25519", True, 86400.0,
    )  # fmt: skip
    assert settings.verified_root_cache == 4096
    assert parse_config({k: v for k, v in config().items() if k != "provenance"}).provenance is None


@pytest.mark.parametrize(
    ("table", "field"),
    [
        ({"key_file": "/nonexistent/key.pem"}, "provenance.key_file"),
        ({}, "provenance.key_file"),
        ({"key_file": "KEY", "algorithm": "rsa"}, "provenance.algorithm"),
        ({"key_file": "KEY", "require": "yes"}, "provenance.require"),
        ({"key_file": "KEY", "rotation_grace_s": -1}, "provenance.rotation_grace_s"),
        ({"key_file": "KEY", "verified_root_cache": 0}, "provenance.verified_root_cache"),
        ({"key_file": "KEY", "other": 1}, "provenance.other"),
    ],
)
def test_a_bad_provenance_table_names_the_field(
    tmp_path: Path, table: dict[str, Any], field: str
) -> None:
    """Each bad value is a ConfigError whose path is the field."""
    write_new_key(tmp_path / "k.pem", "ed25519")
    if table.get("key_file") == "KEY":
        table["key_file"] = str(tmp_path / "k.pem")
    with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
        parse_config(config(**table))


def test_a_key_file_that_is_not_an_ed25519_key_names_the_field(tmp_path: Path) -> None:
    """Garbage, an EC key, or an SM2 file read as Ed25519: ConfigError on provenance.key_file."""
    (tmp_path / "garbage.pem").write_text("not a key")
    ec = generate_private_key(SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    (tmp_path / "ec.pem").write_bytes(ec)
    for name in ("garbage.pem", "ec.pem", "missing.pem"):
        with pytest.raises(ConfigError, match=r"provenance\.key_file"):
            load_signer(tmp_path / name, "ed25519")


def test_keys_new_writes_a_private_file_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The key file is mode 0600, loads back with the printed key id, and is never overwritten."""
    parser = argparse.ArgumentParser()
    add_parser(parser.add_subparsers(dest="command"))
    out = tmp_path / "node.pem"
    assert run(parser.parse_args(["keys", "new", "--out", str(out)])) == 0
    assert out.stat().st_mode & 0o777 == 0o600
    assert load_signer(out, "ed25519").key_id in capsys.readouterr().out
    assert run(parser.parse_args(["keys", "new", "--out", str(out)])) == 2


@pytest.mark.skipif(not sm2_available(), reason="the optional extra sm (gmssl) is not installed")
def test_an_sm2_key_file_loads_only_as_sm2(tmp_path: Path) -> None:
    """An SM2 key file loads under algorithm sm2 and is refused as an Ed25519 key."""
    made = write_new_key(tmp_path / "sm2.key", "sm2")
    assert load_signer(tmp_path / "sm2.key", "sm2").public_key == made.public_key
    with pytest.raises(ConfigError, match=r"provenance\.key_file"):
        load_signer(tmp_path / "sm2.key", "ed25519")
