"""Roles on the admin HTTP API: who may call what, with bearer tokens or client certificates."""

from __future__ import annotations

import argparse
import asyncio
import datetime
import hashlib
import ipaddress
import json
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import structlog
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from prometheus_client import CollectorRegistry
from structlog.testing import capture_logs

from node import grants_cli
from node.catalog_files import load_catalog, packaged_catalog_dir
from node.codec import load_schemas, packaged_schema_dir
from node.config import AdminCert, AdminConfig, AdminTls, AdminUser, parse_config
from node.core.grants import Grant, GrantStatus
from node.core.policy import Department
from node.errors import ConfigError
from node.grant_desk import GrantDesk
from node.ops.access import MATRIX, UNLISTED, Access, Role, rule_for, server_tls
from node.ops.http import admin_app, start_admin
from node.supervisor import Health
from tests.memory_transport import MemoryCluster, MemorySink

CATALOG = load_catalog(packaged_catalog_dir(), load_schemas(packaged_schema_dir()))
REGION = "410100"
RESOURCE = "410100-PSB-00001"  # provided by 410100: decisions about it are made here
TOKENS = {"operator": "op-token-1", "auditor": "au-token-2", "admin": "ad-token-3"}
USERS = tuple(
    AdminUser(f"{role}-user", role, hashlib.sha256(token.encode()).hexdigest())
    for role, token in TOKENS.items()
)
Client = TestClient[web.Request, web.Application]


def requested(grant_id: str) -> Grant:
    """A grant of RESOURCE requested by HRSS of 410102, awaiting a decision."""
    return Grant(
        grant_id, RESOURCE, "HRSS", "410102", (), 0, GrantStatus.REQUESTED, 1, "", "410102"
    )


def build_app(access: Access) -> web.Application:
    """The admin app as the node builds it, with a grant to decide and a stand-in audit route."""
    grants = {f"g{i}": requested(f"g{i}") for i in range(5)}
    desk = GrantDesk(
        REGION, CATALOG, (Department("HRSS", 3, frozenset()),), lambda: grants,
        MemorySink(MemoryCluster()), "cascade.grants", default_validity_days=30,
    )  # fmt: skip
    health = Health()
    health.register("link:local")
    health.up("link:local")
    app = admin_app(
        CollectorRegistry(), health, "city", desk, page=lambda: {"node": "city"}, access=access
    )

    async def chain(_: web.Request) -> web.Response:  # what the AUDIT engineer mounts here
        return web.json_response({"entries": 0})

    async def gateway(_: web.Request) -> web.Response:  # the gateway judges its own callers
        return web.json_response({"gateway": True})

    app.router.add_get("/audit/chain", chain)
    app.router.add_get("/gateway/v1/health", gateway)
    return app


@pytest.fixture
async def client() -> AsyncIterator[Client]:
    """A client of the admin app with one user per role, health and metrics left open."""
    async with TestClient(TestServer(build_app(Access(USERS)), host="127.0.0.1")) as test_client:
        yield test_client


def bearer(role: str) -> dict[str, str]:
    """The Authorization header of ``role``'s user."""
    return {"Authorization": f"Bearer {TOKENS[role]}"}


ALLOWED = [
    ("operator", "GET", "/grants", 200),
    ("operator", "GET", "/grants/g0", 200),
    ("operator", "GET", "/cascade.json", 200),
    ("auditor", "GET", "/audit/chain", 200),
    ("auditor", "GET", "/grants", 200),
    ("admin", "POST", "/grants/g1/approve", 200),
    ("admin", "POST", "/grants/g2/reject", 200),
    ("admin", "GET", "/audit/chain", 200),
]
DENIED = [
    ("operator", "GET", "/audit/chain", "role operator may not GET /audit/chain"),
    ("operator", "POST", "/grants/g0/approve", "role operator may not POST /grants/{grant_id}/"),
    ("auditor", "POST", "/grants/g0/reject", "role auditor may not POST /grants/{grant_id}/"),
    ("auditor", "POST", "/grants", "role auditor may not POST /grants (needs admin"),
]


@pytest.mark.parametrize(("role", "method", "path", "status"), ALLOWED)
async def test_each_role_may_make_its_requests(
    client: Client, role: str, method: str, path: str, status: int
) -> None:
    """A role's own requests succeed: operators read, auditors read the audit trail, admins decide."""
    response = await client.request(method, path, headers=bearer(role), json={})
    assert response.status == status, await response.text()


@pytest.mark.parametrize(("role", "method", "path", "message"), DENIED)
async def test_a_role_too_low_gets_403_saying_what(
    client: Client, role: str, method: str, path: str, message: str
) -> None:
    """A request above the caller's role is answered 403 with a JSON error naming role and route."""
    response = await client.request(method, path, headers=bearer(role), json={})
    assert response.status == 403
    assert message in (await response.json())["error"]
    assert "WWW-Authenticate" not in response.headers


async def test_a_denied_decision_changes_nothing(client: Client) -> None:
    """An operator's refused approval leaves the grant as it was; the admin's then succeeds."""
    assert (await client.post("/grants/g3/approve", headers=bearer("operator"))).status == 403
    assert (await (await client.get("/grants/g3", headers=bearer("operator"))).json())[
        "status"
    ] == "requested"
    response = await client.post("/grants/g3/approve", headers=bearer("admin"), json={})
    assert (await response.json())["status"] == "approved"


@pytest.mark.parametrize(
    ("headers", "message"),
    [
        ({}, "credentials required"),
        ({"Authorization": "Bearer not-a-token"}, "unknown token"),
        ({"Authorization": f"Bearer {TOKENS['admin']}x"}, "unknown token"),
        ({"Authorization": f"Basic {TOKENS['admin']}"}, "must be 'Bearer TOKEN'"),
        ({"Authorization": "Bearer "}, "must be 'Bearer TOKEN'"),
    ],
)
async def test_no_or_unknown_credentials_get_401(
    client: Client, headers: dict[str, str], message: str
) -> None:
    """Without a token, or with one nobody holds, every protected route answers 401 JSON."""
    for method, path in (("GET", "/grants"), ("POST", "/grants/g0/approve"), ("GET", "/")):
        response = await client.request(method, path, headers=headers)
        assert response.status == 401
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
        assert message in (await response.json())["error"]


async def test_health_and_metrics_are_open_by_default(client: Client) -> None:
    """Orchestrators and scrapers need no token for /livez, /readyz, /healthz and /metrics."""
    for path in ("/livez", "/readyz", "/healthz", "/metrics"):
        assert (await client.get(path)).status == 200, path


@pytest.mark.parametrize("opened", [[], ["health"], ["metrics"]])
async def test_health_and_metrics_can_be_protected(opened: list[str]) -> None:
    """A group left out of ``admin.open`` needs an operator token; the other stays open."""
    access = Access(USERS, open_groups=opened)
    async with TestClient(TestServer(build_app(access), host="127.0.0.1")) as test_client:
        for group, path in (("health", "/livez"), ("health", "/readyz"), ("metrics", "/metrics")):
            anonymous = await test_client.get(path)
            assert anonymous.status == (200 if group in opened else 401), path
            assert (await test_client.get(path, headers=bearer("operator"))).status == 200


async def test_the_gateway_keeps_its_own_authentication(client: Client) -> None:
    """The middleware leaves /gateway/v1/ alone: its department tokens are checked there."""
    response = await client.get("/gateway/v1/health")
    assert response.status == 200
    assert await response.json() == {"gateway": True}


async def test_without_credentials_configured_the_api_is_open() -> None:
    """No users and no certificates: the loopback-only open mode lets every caller act as admin."""
    async with TestClient(TestServer(build_app(Access()), host="127.0.0.1")) as test_client:
        assert (await test_client.get("/grants")).status == 200
        assert (await test_client.get("/audit/chain")).status == 200
        assert (await test_client.post("/grants/g0/approve", json={})).status == 200


async def test_decisions_are_logged_with_who_made_them_never_the_token() -> None:
    """Each asked change is an admin_action event: user, role, route, grant, answer."""
    with capture_logs() as logs:
        access = Access(USERS, log=structlog.get_logger("t"))
        async with TestClient(TestServer(build_app(access), host="127.0.0.1")) as test_client:
            await test_client.post("/grants/g4/approve", headers=bearer("operator"))
            await test_client.post("/grants/g4/approve", headers=bearer("admin"), json={})
            await test_client.post("/grants/g4/revoke")
            await test_client.get("/grants", headers=bearer("admin"))
    actions = [entry for entry in logs if entry["event"] == "admin_action"]
    assert [(a["user"], a["role"], a["route"], a["target"], a["status"]) for a in actions] == [
        ("operator-user", "operator", "/grants/{grant_id}/approve", "g4", 403),
        ("admin-user", "admin", "/grants/{grant_id}/approve", "g4", 200),
        ("", "", "/grants/{grant_id}/revoke", "g4", 401),
    ]
    assert not any(token in repr(logs) for token in TOKENS.values())


def test_every_route_of_the_admin_app_has_a_rule() -> None:
    """No route the node serves falls to the unlisted default: the matrix names each one."""
    app = build_app(Access())
    for route in app.router.routes():
        if route.method == "HEAD" or route.resource is None:
            continue
        rule = rule_for(route.resource.canonical, route.method)
        assert rule is not UNLISTED, f"{route.method} {route.resource.canonical}"


def test_the_matrix_grades_routes_as_documented() -> None:
    """Reads need operator, the audit trail auditor, changes admin, unknown routes admin."""
    assert rule_for("/grants", "GET").least is Role.OPERATOR
    assert rule_for("/feedback/{report_id}", "GET").least is Role.OPERATOR
    assert rule_for("/audit/entries/{n}", "GET").least is Role.AUDITOR
    assert rule_for("/audit/verify", "POST").least is Role.ADMIN
    assert rule_for("/grants/{grant_id}/revoke", "POST").least is Role.ADMIN
    assert rule_for("/grantsx", "GET") is UNLISTED
    assert rule_for("/somewhere", "GET").least is Role.ADMIN
    assert rule_for("/gateway/v1/resources/{code}/records", "POST").least is None
    assert {rule.open_as for rule in MATRIX} == {None, "health", "metrics"}


# --- TLS with client certificates, on a real loopback port ------------------------------------


@dataclass(frozen=True)
class Pki:
    """Files of a test PKI: a CA, the server's certificate, trusted and untrusted client certs."""

    ca: Path
    server_cert: Path
    server_key: Path
    auditor_cert: Path
    auditor_key: Path
    stranger_cert: Path
    stranger_key: Path
    rogue_cert: Path
    rogue_key: Path


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _issue(
    subject: str, key: ec.EllipticCurvePrivateKey, issuer: tuple[x509.Name, Any] | None,
    *, ca: bool = False, ip: str | None = None,
) -> x509.Certificate:  # fmt: skip
    """A certificate for ``subject`` signed by ``issuer`` (name, key), or self-signed."""
    now = datetime.datetime.now(datetime.UTC)
    issuer_name, issuer_key = issuer or (_name(subject), key)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if ca:
        builder = builder.add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
                encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )  # fmt: skip
        builder = builder.add_extension(
            x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False
        )
    else:
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()),
            critical=False,
        )
    if ip is not None:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(ip))]),
            critical=False,
        )
    return builder.sign(issuer_key, hashes.SHA256())


def _write(directory: Path, stem: str, cert: x509.Certificate, key: Any) -> tuple[Path, Path]:
    cert_path, key_path = directory / f"{stem}.crt", directory / f"{stem}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """A CA with a server certificate for 127.0.0.1 and two clients; a rogue CA with one client."""
    directory = tmp_path_factory.mktemp("pki")
    ca_key, rogue_ca_key = (
        ec.generate_private_key(ec.SECP256R1()),
        ec.generate_private_key(ec.SECP256R1()),
    )
    ca = _issue("Test Admin CA", ca_key, None, ca=True)
    rogue_ca = _issue("Rogue CA", rogue_ca_key, None, ca=True)
    ca_path, _ = _write(directory, "ca", ca, ca_key)
    keys = {name: ec.generate_private_key(ec.SECP256R1()) for name in ("srv", "aud", "str", "rog")}
    issuer = (ca.subject, ca_key)
    server = _write(
        directory, "server", _issue("127.0.0.1", keys["srv"], issuer, ip="127.0.0.1"), keys["srv"]
    )
    auditor = _write(directory, "auditor", _issue("audit-bot", keys["aud"], issuer), keys["aud"])
    stranger = _write(directory, "stranger", _issue("stranger", keys["str"], issuer), keys["str"])
    rogue = _write(
        directory, "rogue", _issue("audit-bot", keys["rog"], (rogue_ca.subject, rogue_ca_key)),
        keys["rog"],
    )  # fmt: skip
    return Pki(ca_path, *server, *auditor, *stranger, *rogue)


def _client_tls(pki: Pki, cert: Path | None = None, key: Path | None = None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=pki.ca)
    if cert is not None:
        context.load_cert_chain(cert, key)
    return context


@pytest.fixture
async def tls_server(pki: Pki) -> AsyncIterator[str]:
    """The admin app over HTTPS on a free loopback port; CN audit-bot is an auditor."""
    tls = server_tls(AdminTls(pki.server_cert, pki.server_key, pki.ca))
    access = Access(USERS, (AdminCert("audit-bot", "auditor"),))
    runner, port = await start_admin(build_app(access), "127.0.0.1", 0, tls=tls)
    try:
        yield f"https://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


async def _call(
    url: str, context: ssl.SSLContext, method: str = "GET", headers: dict[str, str] | None = None
) -> tuple[int, Any]:
    timeout = aiohttp.ClientTimeout(total=10)
    async with (
        aiohttp.ClientSession(timeout=timeout) as session,
        session.request(method, url, ssl=context, headers=headers, json={}) as response,
    ):
        return response.status, await response.json()


async def test_a_client_certificate_gets_the_role_of_its_cn(tls_server: str, pki: Pki) -> None:
    """Over real TLS, CN audit-bot (signed by the client CA) reads the audit trail, cannot decide."""
    context = _client_tls(pki, pki.auditor_cert, pki.auditor_key)
    assert await _call(f"{tls_server}/audit/chain", context) == (200, {"entries": 0})
    status, body = await _call(f"{tls_server}/grants/g0/approve", context, "POST")
    assert status == 403
    assert body["error"].startswith("role auditor may not POST")


async def test_tokens_still_work_over_tls_without_a_certificate(tls_server: str, pki: Pki) -> None:
    """Client certificates are asked for, not required: a token client decides over HTTPS."""
    context = _client_tls(pki)
    status, body = await _call(f"{tls_server}/grants/g1/approve", context, "POST", bearer("admin"))
    assert (status, body["status"]) == (200, "approved")
    assert (await _call(f"{tls_server}/grants", context))[0] == 401
    assert (await _call(f"{tls_server}/livez", context))[0] == 200


async def test_a_verified_certificate_without_a_role_gets_401(tls_server: str, pki: Pki) -> None:
    """A certificate from the trusted CA whose CN maps to no role is not a credential here."""
    context = _client_tls(pki, pki.stranger_cert, pki.stranger_key)
    status, body = await _call(f"{tls_server}/grants", context)
    assert status == 401
    assert "CN='stranger'" in body["error"]


async def test_a_certificate_from_an_untrusted_ca_is_rejected(tls_server: str, pki: Pki) -> None:
    """A client certificate with the right CN but signed by another CA fails the handshake."""
    context = _client_tls(pki, pki.rogue_cert, pki.rogue_key)
    with pytest.raises((aiohttp.ClientError, ssl.SSLError, ConnectionError)):
        await asyncio.wait_for(_call(f"{tls_server}/audit/chain", context), 15)


def test_unusable_tls_files_are_config_errors(pki: Pki, tmp_path: Path) -> None:
    """A key that does not match its certificate, or a CA file that is no PEM, names the field."""
    with pytest.raises(ConfigError) as mismatch:
        server_tls(AdminTls(pki.server_cert, pki.auditor_key))
    assert mismatch.value.path == "admin.tls.cert_file"
    garbage = tmp_path / "ca.pem"
    garbage.write_text("not a certificate")
    with pytest.raises(ConfigError) as bad_ca:
        server_tls(AdminTls(pki.server_cert, pki.server_key, garbage))
    assert bad_ca.value.path == "admin.tls.client_ca_file"


# --- configuration -----------------------------------------------------------------------------

MINIMAL: dict[str, Any] = {
    "node": {"id": "city", "level": "city", "region": REGION},
    "local": {"bootstrap": "127.0.0.1:19092"},
}
DIGEST = "0f" * 32


def admin_config(admin: dict[str, Any]) -> AdminConfig:
    """Parse a node config whose [admin] table is ``admin``."""
    return parse_config({**MINIMAL, "admin": admin}).admin


def config_error(admin: dict[str, Any]) -> ConfigError:
    """The error parsing ``admin`` raises."""
    with pytest.raises(ConfigError) as caught:
        admin_config(admin)
    return caught.value


def test_users_certs_tls_and_open_groups_are_read(pki: Pki) -> None:
    """Every [admin] access key lands in AdminConfig; hashes are kept in lower case."""
    config = admin_config({
        "host": "0.0.0.0", "open": ["health"],
        "users": [{"name": "ana", "role": "admin", "token_sha256": DIGEST.upper()}],
        "certs": [{"subject_cn": "audit-bot", "role": "auditor"}],
        "tls": {"cert_file": str(pki.server_cert), "key_file": str(pki.server_key),
                "client_ca_file": str(pki.ca)},
    })  # fmt: skip
    assert config.users == (AdminUser("ana", "admin", DIGEST),)
    assert config.certs == (AdminCert("audit-bot", "auditor"),)
    assert config.tls == AdminTls(pki.server_cert, pki.server_key, pki.ca)
    assert config.open == ("health",)
    assert config.credentials


def test_defaults_leave_health_and_metrics_open_on_loopback() -> None:
    """Without [admin] the API is on 127.0.0.1, open (no credentials), health and metrics open."""
    config = parse_config(MINIMAL).admin
    assert (config.host, config.open, config.credentials, config.tls) == (
        "127.0.0.1", ("health", "metrics"), False, None,
    )  # fmt: skip


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2", "::1", "localhost"])
def test_an_open_api_is_allowed_on_loopback(host: str) -> None:
    """No credentials on a loopback host: allowed (the node warns admin_api_open at start)."""
    assert not admin_config({"host": host}).credentials


@pytest.mark.parametrize("host", ["0.0.0.0", "10.1.2.3", "::", "admin.example.gov.cn"])
def test_an_open_api_on_another_host_is_refused(host: str) -> None:
    """No credentials on a reachable host stops start-up, naming admin.users."""
    error = config_error({"host": host})
    assert error.path == "admin.users"
    assert "loopback" in str(error)


@pytest.mark.parametrize(
    ("admin", "field", "words"),
    [
        ({"users": [{"name": "a", "role": "root", "token_sha256": DIGEST}]},
         "admin.users[0].role", "operator, auditor or admin"),
        ({"users": [{"name": "a", "role": "admin", "token_sha256": "xyz"}]},
         "admin.users[0].token_sha256", "64 hex digits"),
        ({"users": [{"name": "a", "role": "admin", "token_sha256": "g" * 64}]},
         "admin.users[0].token_sha256", "64 hex digits"),
        ({"users": [{"name": "a", "role": "admin", "token_sha256": DIGEST},
                    {"name": "b", "role": "operator", "token_sha256": DIGEST}]},
         "admin.users[1].token_sha256", "no other user has"),
        ({"users": [{"name": "a", "role": "admin", "token_sha256": DIGEST},
                    {"name": "a", "role": "operator", "token_sha256": "1" * 64}]},
         "admin.users[1].name", "unique"),
        ({"users": [{"name": "a", "role": "admin", "token_sha256": DIGEST, "token": "s3"}]},
         "admin.users[0].token", "unknown key"),
        ({"users": [{"name": "a", "role": "admin"}]}, "admin.users[0].token_sha256", "missing"),
        ({"certs": [{"subject_cn": "x", "role": "boss"}]}, "admin.certs[0].role", "operator"),
        ({"certs": [{"subject_cn": "x", "role": "admin"}]}, "admin.certs", "client_ca_file"),
        ({"open": ["health", "grants"]}, "admin.open[1]", "health or metrics"),
        ({"tls": {"cert_file": "/nonexistent/server.crt", "key_file": "/nonexistent/k"}},
         "admin.tls.cert_file", "readable PEM file"),
        ({"tls": {"key_file": "/nonexistent/k"}}, "admin.tls.cert_file", "missing"),
    ],
)  # fmt: skip
def test_each_access_mistake_names_its_field(admin: dict[str, Any], field: str, words: str) -> None:
    """A bad role, bad hex, duplicate token or name, unknown key, missing file: a ConfigError."""
    error = config_error(admin)
    assert (error.path, words in str(error)) == (field, True), str(error)


def test_missing_key_and_client_ca_files_are_named(pki: Pki) -> None:
    """Each TLS file is checked where it is named."""
    tls = {"cert_file": str(pki.server_cert), "key_file": str(pki.server_key)}
    assert config_error({"tls": {**tls, "key_file": "/nope"}}).path == "admin.tls.key_file"
    error = config_error({"tls": {**tls, "client_ca_file": "/nope/ca.pem"}})
    assert error.path == "admin.tls.client_ca_file"


# --- the grants CLI ----------------------------------------------------------------------------


def cli_args(admin: str, *rest: str, token_file: str | None = None) -> argparse.Namespace:
    """The parsed arguments of ``exchange-node grants --admin ADMIN [--token-file F] REST``."""
    parser = argparse.ArgumentParser()
    grants_cli.add_parser(parser.add_subparsers(dest="command"))
    extra = ["--token-file", token_file] if token_file else []
    return parser.parse_args(["grants", "--admin", admin, *extra, *rest])


async def run_cli(
    args: argparse.Namespace, capsys: pytest.CaptureFixture[str]
) -> tuple[int, str, str]:
    """Run the CLI (blocking urllib) in a thread; its exit code, stdout and stderr."""
    code = await asyncio.wait_for(asyncio.to_thread(grants_cli.run, args), 30)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


async def test_the_cli_sends_the_token_from_a_file_or_the_environment(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """--token-file, else EXCHANGE_NODE_TOKEN; 401 and 403 say what to do about it."""
    with capture_logs():  # the server's admin_action events stay out of the CLI's stdout
        runner, port = await start_admin(build_app(Access(USERS)), "127.0.0.1", 0)
        try:
            await cli_calls(f"http://127.0.0.1:{port}", tmp_path, capsys, monkeypatch)
        finally:
            await runner.cleanup()


async def cli_calls(
    admin: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Call ``admin`` with no token, an operator's token file, the admin's token in the env."""
    monkeypatch.delenv(grants_cli.TOKEN_ENV, raising=False)
    code, _, err = await run_cli(cli_args(admin, "list"), capsys)
    assert code == grants_cli.EXIT_REFUSED
    assert "credentials required: a bearer token or a client certificate (HTTP 401)" in err
    assert "give a token with --token-file PATH or $EXCHANGE_NODE_TOKEN" in err

    token_file = tmp_path / "token"
    token_file.write_text(TOKENS["operator"] + "\n")
    code, out, _ = await run_cli(cli_args(admin, "list", token_file=str(token_file)), capsys)
    assert code == 0
    assert {g["grant_id"] for g in json.loads(out)} == {f"g{i}" for i in range(5)}
    code, _, err = await run_cli(
        cli_args(admin, "approve", "g0", token_file=str(token_file)), capsys
    )
    assert code == grants_cli.EXIT_REFUSED
    assert "role operator may not POST /grants/{grant_id}/approve" in err
    assert "(HTTP 403); reading grants needs the operator role" in err

    monkeypatch.setenv(grants_cli.TOKEN_ENV, TOKENS["admin"])
    code, out, _ = await run_cli(cli_args(admin, "approve", "g0"), capsys)
    assert (code, json.loads(out)["status"]) == (0, "approved")


def test_an_unreadable_token_file_is_named(tmp_path: Path) -> None:
    """A missing or empty token file is reported, never silently ignored."""
    with pytest.raises(grants_cli.CredentialsUnreadable, match="cannot read --token-file"):
        grants_cli.bearer_token(str(tmp_path / "absent"))
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(grants_cli.CredentialsUnreadable, match="is empty"):
        grants_cli.bearer_token(str(tmp_path / "empty"))
    assert grants_cli.bearer_token(None, {grants_cli.TOKEN_ENV: " t0k "}) == "t0k"
    assert grants_cli.bearer_token(None, {}) is None


# --- the node wires it: run_node with an unreachable cluster -----------------------------------


async def run_until_listening(config: dict[str, Any], check: Any) -> None:
    """Start a node whose cluster nobody serves, run ``check(port)``, stop it (timeouts on each)."""
    from node.app import Running, run_node  # noqa: PLC0415 - the composition root, only here

    stop = asyncio.Event()
    running: asyncio.Future[Running] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(run_node(parse_config(config), stop, on_running=running.set_result))
    try:
        await check((await asyncio.wait_for(running, 30)).admin_port)
    finally:
        stop.set()
        await asyncio.wait_for(task, 60)


async def test_the_node_serves_its_admin_api_over_tls_with_roles(pki: Pki) -> None:
    """A node configured with users and [admin.tls] answers HTTPS, with 401/403/200 by role."""
    config = {
        "node": {"id": "city", "level": "city", "region": REGION},
        "local": {"bootstrap": "127.0.0.1:9"},  # discard port: the loops are down, the API is up
        "flow": {"shutdown_timeout_s": 5},
        "admin": {
            "port": 0, "open": ["health"],
            "users": [{"name": u.name, "role": u.role, "token_sha256": u.token_sha256}
                      for u in USERS],
            "tls": {"cert_file": str(pki.server_cert), "key_file": str(pki.server_key)},
        },
    }  # fmt: skip

    async def check(port: int) -> None:
        base, context = f"https://127.0.0.1:{port}", _client_tls(pki)
        assert (await _call(f"{base}/livez", context))[0] == 200
        assert (await _call(f"{base}/metrics", context))[0] == 401
        assert (await _call(f"{base}/grants", context, headers=bearer("operator")))[0] == 200
        status, body = await _call(f"{base}/grants/x/revoke", context, "POST", bearer("auditor"))
        assert status == 403
        assert body["error"].startswith("role auditor may not POST")

    with capture_logs() as logs:
        await run_until_listening(config, check)
    assert "admin_api_open" not in {entry["event"] for entry in logs}


async def test_a_node_without_credentials_warns_that_its_api_is_open() -> None:
    """No users or certificates on loopback: the node serves everyone and logs admin_api_open."""
    config = {**MINIMAL, "local": {"bootstrap": "127.0.0.1:9"}, "admin": {"port": 0},
              "flow": {"shutdown_timeout_s": 5}}  # fmt: skip

    async def check(port: int) -> None:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session,
            session.get(f"http://127.0.0.1:{port}/grants") as response,
        ):
            assert response.status == 200

    with capture_logs() as logs:
        await run_until_listening(config, check)
    warnings = [entry for entry in logs if entry["event"] == "admin_api_open"]
    assert [(w["host"], w["log_level"]) for w in warnings] == [("127.0.0.1", "warning")]
