"""Link security: the ``[local.security]``/``[parent.security]`` tables, Connection, refusals."""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any

import pytest
from aiokafka.errors import (
    IllegalSaslStateError,
    KafkaConnectionError,
    SaslAuthenticationFailed,
    UnsupportedSaslMechanismError,
)

from node.config import Secret, SecurityConfig, parse_config
from node.errors import ConfigError
from node.kafka.connection import Connection, client_options, refusal
from tests.integration.certs import Authority, Issued

PASSWORD = "s3cret-Pa55word"  # noqa: S105 - a test value, the one that must never show
KEY_PASSWORD = "key-Pa55word"  # noqa: S105 - a test value


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> tuple[Authority, Issued]:
    """A CA and a client certificate whose key is encrypted with KEY_PASSWORD."""
    ca = Authority.create(tmp_path_factory.mktemp("pki"), "unit-ca")
    return ca, ca.issue("county-410102", key_password=KEY_PASSWORD)


def config(local: dict[str, Any] | None = None, parent: dict[str, Any] | None = None) -> Any:
    """Parse a minimal county config with the given security tables."""
    data: dict[str, Any] = {
        "node": {"id": "n", "level": "county", "region": "410102"},
        "local": {"bootstrap": "127.0.0.1:9092"},
        "parent": {"bootstrap": "10.0.0.1:9093", "region": "410100"},
    }
    if local is not None:
        data["local"]["security"] = local
    if parent is not None:
        data["parent"]["security"] = parent
    return parse_config(data)


def fails(path: str, text: str, **tables: dict[str, Any]) -> None:
    """Parsing fails with a ConfigError naming ``path`` and saying ``text``."""
    with pytest.raises(ConfigError) as failure:
        config(**tables)
    assert failure.value.path == path
    assert text in failure.value.problem


def secret_file(tmp_path: Path, text: str) -> str:
    """Write ``text`` to a file; return its name."""
    path = tmp_path / "secret"
    path.write_text(text)
    return str(path)


def test_no_security_table_is_plaintext() -> None:
    """Without ``[local.security]`` the link is plaintext, and aiokafka gets no TLS or SASL."""
    loaded = config()
    assert loaded.local.security == SecurityConfig()
    options = Connection.to(loaded.local, "local").options()
    assert options == {"bootstrap_servers": "127.0.0.1:9092", "security_protocol": "PLAINTEXT"}


def test_sasl_ssl_with_a_password_from_the_environment(
    pki: tuple[Authority, Issued], monkeypatch: pytest.MonkeyPatch
) -> None:
    """SCRAM-SHA-512 over TLS: the password is read from the env into a Secret, at load time."""
    ca, _ = pki
    monkeypatch.setenv("KAFKA_PW", PASSWORD)
    loaded = config(parent={
        "protocol": "sasl_ssl", "ca_file": str(ca.cert), "username": "county",
        "password_env": "KAFKA_PW",
    })  # fmt: skip
    security = loaded.parent.cluster.security
    assert security.password == Secret(PASSWORD)
    assert security.sasl_mechanism == "SCRAM-SHA-512"
    connection = Connection.to(loaded.parent.cluster, "parent")
    options = connection.options()
    assert options["security_protocol"] == "SASL_SSL"
    assert options["sasl_mechanism"] == "SCRAM-SHA-512"
    assert options["sasl_plain_username"] == "county"
    assert options["sasl_plain_password"] == PASSWORD
    assert isinstance(options["ssl_context"], ssl.SSLContext)
    assert str(connection) == "10.0.0.1:9093"
    for shown in (repr(loaded), str(security), repr(connection), str(connection)):
        assert PASSWORD not in shown


def test_mutual_tls_with_an_encrypted_key_and_a_password_file(
    pki: tuple[Authority, Issued], tmp_path: Path
) -> None:
    """Mutual TLS: the encrypted key's password comes from a file (its newline dropped)."""
    ca, client = pki
    loaded = config(local={
        "protocol": "ssl", "ca_file": str(ca.cert), "cert_file": str(client.cert),
        "key_file": str(client.key), "key_password_file": secret_file(tmp_path, KEY_PASSWORD + "\n"),
    })  # fmt: skip
    assert loaded.local.security.key_password == Secret(KEY_PASSWORD)
    options = Connection.to(loaded.local, "local").options()
    assert options["security_protocol"] == "SSL"
    assert "sasl_mechanism" not in options
    assert KEY_PASSWORD not in repr(loaded)


def test_a_bare_bootstrap_string_is_a_plaintext_link() -> None:
    """Callers that pass a bootstrap string (tools, tests) get plaintext options."""
    assert client_options("127.0.0.1:1") == {
        "bootstrap_servers": "127.0.0.1:1", "security_protocol": "PLAINTEXT",
    }  # fmt: skip


def test_secret_never_shows_its_value() -> None:
    """A Secret's repr and str hide the value; equality still compares it."""
    secret = Secret(PASSWORD)
    assert PASSWORD not in repr(secret)
    assert PASSWORD not in str(secret)
    assert secret != Secret("other")


@pytest.mark.parametrize(
    ("table", "path", "text"),
    [
        ({"protocol": "tls"}, "local.security.protocol", "plaintext, ssl, sasl_plaintext"),
        ({"ca_file": "/etc/hosts"}, "local.security.ca_file", "unless protocol is ssl"),
        ({"protocol": "ssl", "ca_file": "/no/such.pem"}, "local.security.ca_file", "readable"),
        ({"protocol": "ssl", "ca_file": __file__}, "local.security.ca_file", "no usable CA"),
        ({"username": "u"}, "local.security.username", "only with protocol sasl"),
        ({"protocol": "ssl", "sasl_mechanism": "PLAIN"}, "local.security.sasl_mechanism", "only"),
        ({"protocol": "sasl_ssl", "password_env": "HOME"}, "local.security.username", "SASL user"),
        ({"protocol": "sasl_ssl", "username": "u"}, "local.security.password_env", "password_file"),
        (
            {"protocol": "sasl_ssl", "username": "u", "password_env": "LINKS_UNSET_VARIABLE"},
            "local.security.password_env", "a set environment variable",
        ),
        (
            {"protocol": "sasl_ssl", "username": "u", "password_env": "HOME", "sasl_mechanism": "GSSAPI"},
            "local.security.sasl_mechanism", "SCRAM-SHA-512, SCRAM-SHA-256, PLAIN",
        ),
        (
            {"protocol": "sasl_ssl", "username": "u", "password_file": "/no/such/file"},
            "local.security.password_file", "readable",
        ),
        ({"secret": "x"}, "local.security.secret", "unknown key"),
    ],
)  # fmt: skip
def test_each_inconsistent_table_names_its_field(
    table: dict[str, Any], path: str, text: str
) -> None:
    """Bad protocols, misplaced keys, missing users or passwords, unset variables: each named."""
    fails(path, text, local=table)


@pytest.mark.parametrize("key", ["password", "key_password"])
def test_a_secret_written_in_the_file_is_refused_without_repeating_it(key: str) -> None:
    """``password = "..."`` in the TOML stops loading, and the message does not echo it."""
    table = {"protocol": "sasl_ssl", "username": "u", "password_env": "HOME", key: PASSWORD}
    with pytest.raises(ConfigError) as failure:
        config(parent=table)
    assert failure.value.path == f"parent.security.{key}"
    assert "secrets never go in the config file" in failure.value.problem
    assert PASSWORD not in str(failure.value)


def test_both_password_sources_are_refused(tmp_path: Path) -> None:
    """password_env and password_file together: which one wins would be a guess."""
    table = {
        "protocol": "sasl_plaintext", "username": "u", "password_env": "HOME",
        "password_file": secret_file(tmp_path, PASSWORD),
    }  # fmt: skip
    fails("parent.security.password_file", "not both", parent=table)


def test_an_empty_password_file_is_refused(tmp_path: Path) -> None:
    """A password file holding nothing (a newline) is an error, not an empty password."""
    table = {
        "protocol": "sasl_ssl", "username": "u", "password_file": secret_file(tmp_path, "\n"),
    }  # fmt: skip
    fails("parent.security.password_file", "is empty", parent=table)


def test_client_certificate_needs_its_key(pki: tuple[Authority, Issued]) -> None:
    """cert_file without key_file (or the reverse) is refused."""
    ca, client = pki
    fails(
        "local.security.key_file", "go together",
        local={"protocol": "ssl", "ca_file": str(ca.cert), "cert_file": str(client.cert)},
    )  # fmt: skip
    fails(
        "local.security.cert_file", "go together",
        local={"protocol": "ssl", "ca_file": str(ca.cert), "key_file": str(client.key)},
    )  # fmt: skip


def test_a_key_password_needs_a_key(monkeypatch: pytest.MonkeyPatch) -> None:
    """key_password_env without key_file is refused."""
    monkeypatch.setenv("KEY_PW", KEY_PASSWORD)
    fails("local.security.key_password_env", "only with key_file",
          local={"protocol": "ssl", "key_password_env": "KEY_PW"})  # fmt: skip


@pytest.mark.parametrize("given", ["wrong", "none"])
def test_an_encrypted_key_needs_its_password(
    pki: tuple[Authority, Issued], monkeypatch: pytest.MonkeyPatch, given: str
) -> None:
    """A wrong or missing key password stops loading, naming key_file and never the password."""
    ca, client = pki
    table = {
        "protocol": "ssl", "ca_file": str(ca.cert), "cert_file": str(client.cert),
        "key_file": str(client.key),
    }  # fmt: skip
    if given == "wrong":
        monkeypatch.setenv("KEY_PW", "not-" + KEY_PASSWORD)
        table["key_password_env"] = "KEY_PW"  # noqa: S105 - the name of a variable
    with pytest.raises(ConfigError) as failure:
        config(local=table)
    assert failure.value.path == "local.security.key_file"
    assert "key password" in failure.value.problem
    assert KEY_PASSWORD not in str(failure.value)


SECURITY = SecurityConfig(
    "sasl_ssl", Path("/etc/ca.pem"), username="county", password=Secret(PASSWORD)
)


def _ssl_error(kind: type[ssl.SSLError], **attributes: str) -> ssl.SSLError:
    error = kind(1, "handshake failed")
    for name, value in attributes.items():
        setattr(error, name, value)
    return error


def _closed_by(cause: BaseException) -> KafkaConnectionError:
    error = KafkaConnectionError("Connection at 127.0.0.1:9093 closed")
    error.__cause__ = cause
    return error


@pytest.mark.parametrize(
    ("error", "text"),
    [
        (SaslAuthenticationFailed("invalid credentials"), "SASL authentication failed (user 'county', SCRAM-SHA-512)"),
        (UnsupportedSaslMechanismError(), "does not offer SCRAM-SHA-512"),
        (IllegalSaslStateError(), "takes no SASL"),
        (
            _ssl_error(ssl.SSLCertVerificationError, verify_message="unable to get local issuer"),
            "server certificate not trusted: unable to get local issuer (trusting CAs of /etc/ca.pem)",
        ),
        (
            _closed_by(_ssl_error(ssl.SSLError, reason="TLSV13_ALERT_CERTIFICATE_REQUIRED")),
            "client certificate rejected by the broker (TLSV13_ALERT_CERTIFICATE_REQUIRED; offered no certificate)",
        ),
        (_ssl_error(ssl.SSLError, reason="TLSV1_ALERT_UNKNOWN_CA"), "client certificate rejected"),
    ],
)  # fmt: skip
def test_refusals_are_named(error: BaseException, text: str) -> None:
    """Each way a broker refuses the node is said plainly, with the user but not the password."""
    said = refusal(error, SECURITY)
    assert said is not None
    assert text in said
    assert PASSWORD not in said


@pytest.mark.parametrize(
    "error",
    [
        ConnectionRefusedError(111, "Connect call failed"),
        TimeoutError(),
        KafkaConnectionError("Unable to bootstrap"),
        _closed_by(ConnectionResetError()),
        _ssl_error(ssl.SSLError, reason="WRONG_VERSION_NUMBER"),
    ],
)
def test_unreachable_is_not_a_refusal(error: BaseException) -> None:
    """A cluster that is down or cut off is left to the loops to retry."""
    assert refusal(error, SECURITY) is None
