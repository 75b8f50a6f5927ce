"""Who may call the admin HTTP API: roles, credentials, and the aiohttp middleware enforcing them.

Roles, least first: ``operator`` < ``auditor`` < ``admin``; each may do what the ones below it may.
Every request is matched by its route *template* (``/grants/{grant_id}/approve``: the route aiohttp
resolved, so an odd spelling of a path cannot reach one route while being judged as another) and
its method against ``MATRIX``; the first rule that matches names the least role, and a request no
rule matches needs ``admin`` (a route added without a rule fails closed)::

    route                              method   least role  open without credentials when
    /livez /readyz /healthz            GET      operator    admin.open has "health" (default)
    /metrics                           GET      operator    admin.open has "metrics" (default)
    / /cascade /cascade.json /static/  GET      operator
    /grants /grants/{id}               GET      operator
    /feedback/{id}                     GET      operator
    /audit /audit/...                  GET      auditor
    /grants /grants/{id}/{action}      POST     admin
    /gateway/v1/...                    any      (the gateway's own department tokens)
    anything else                      any      admin

Credentials: ``Authorization: Bearer TOKEN``, whose SHA-256 is compared (``hmac.compare_digest``,
against every configured hash) with ``[[admin.users]]``; or, over HTTPS, a client certificate the
TLS handshake verified against ``admin.tls.client_ca_file`` whose subject CN is in
``[[admin.certs]]``. A token, when sent, decides (a wrong token is not rescued by a certificate).
With no users and no certificates configured the API is open (the config allows that on a
loopback host only) and every caller acts as ``admin``.

Answers: 401 ``{"error": ...}`` with ``WWW-Authenticate: Bearer`` when no credential or an unknown
one was presented; 403 ``{"error": "role operator may not POST /grants/{grant_id}/approve ..."}``
when the role is too low. Every request that may change something (not GET or HEAD) is logged as
an ``admin_action`` event: who, the route template, the answer. Tokens are never logged.

What it must not do: touch the gateway's routes (``node/ops/gateway.py`` authenticates them), read
bodies, or log credentials.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import ssl
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

import structlog
from aiohttp import web

from node.config import AdminCert, AdminConfig, AdminTls, AdminUser
from node.errors import ConfigError
from node.ops.events import AdminAction, emit


class Role(enum.IntEnum):
    """A role of the admin API; a higher one may do everything a lower one may."""

    OPERATOR = 1
    AUDITOR = 2
    ADMIN = 3

    @property
    def label(self) -> str:
        """The role's name as configured (``operator``)."""
        return self.name.lower()

    @classmethod
    def named(cls, label: str) -> Role:
        """Return the role configured as ``label``; raise KeyError for an unknown one."""
        return cls[label.upper()]


READ = frozenset({"GET", "HEAD"})
WRITE = frozenset({"POST", "PUT", "PATCH", "DELETE"})
ANY = READ | WRITE | {"OPTIONS"}


@dataclass(frozen=True, slots=True)
class Rule:
    """One row of the matrix: a route template, the methods, the least role, the open group.

    A trailing ``*`` in ``route`` matches any rest; ``least`` None leaves the request to its own
    handler (the gateway); ``open_as`` is the ``admin.open`` group that can serve it to anyone.
    """

    route: str
    methods: frozenset[str]
    least: Role | None
    open_as: str | None = None

    def matches(self, route: str, method: str) -> bool:
        """Whether this rule governs ``method`` on the route template ``route``."""
        if method not in self.methods:
            return False
        if self.route.endswith("*"):
            return route.startswith(self.route[:-1])
        return route == self.route


MATRIX: tuple[Rule, ...] = (
    Rule("/gateway/v1/*", ANY, None),
    Rule("/livez", READ, Role.OPERATOR, "health"),
    Rule("/readyz", READ, Role.OPERATOR, "health"),
    Rule("/healthz", READ, Role.OPERATOR, "health"),
    Rule("/metrics", READ, Role.OPERATOR, "metrics"),
    Rule("/", READ, Role.OPERATOR),
    Rule("/cascade", READ, Role.OPERATOR),
    Rule("/cascade.json", READ, Role.OPERATOR),
    Rule("/static*", READ, Role.OPERATOR),
    Rule("/grants", READ, Role.OPERATOR),
    Rule("/grants/{grant_id}", READ, Role.OPERATOR),
    Rule("/feedback/*", READ, Role.OPERATOR),
    Rule("/audit", READ, Role.AUDITOR),
    Rule("/audit/*", READ, Role.AUDITOR),
    Rule("/grants", WRITE, Role.ADMIN),
    Rule("/grants/*", WRITE, Role.ADMIN),
)
"""Route template and method -> least role, first match wins (see the module docstring)."""
UNLISTED = Rule("*", ANY, Role.ADMIN)
"""What a request no rule matches needs."""


def rule_for(route: str, method: str) -> Rule:
    """Return the rule governing ``method`` on the route template ``route``."""
    for rule in MATRIX:
        if rule.matches(route, method):
            return rule
    return UNLISTED


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: a user's or certificate's name, their role, how they proved it."""

    name: str
    role: Role
    via: str  # "token", "certificate" or "open" (no credentials configured)


ANONYMOUS_ADMIN = Principal("(open)", Role.ADMIN, "open")
PRINCIPAL = web.RequestKey("admin_principal", Principal)
"""Where the middleware leaves the caller on the request (absent on open routes, the gateway)."""

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
_Answer = TypeVar("_Answer", web.StreamResponse, web.HTTPException)


class Unauthenticated(Exception):
    """No credential, or one this node does not know (401)."""


class Access:
    """The admin API's credentials and open route groups; ``middleware`` enforces the matrix.

    Holds only SHA-256 digests of tokens; never raises out of a request (401/403 are answers).
    """

    def __init__(
        self,
        users: Iterable[AdminUser] = (),
        certs: Iterable[AdminCert] = (),
        open_groups: Iterable[str] = ("health", "metrics"),
        *,
        log: structlog.typing.FilteringBoundLogger | None = None,
    ) -> None:
        self._users = [(bytes.fromhex(u.token_sha256), u.name, Role.named(u.role)) for u in users]
        self._certs = {c.subject_cn: Role.named(c.role) for c in certs}
        self._open = frozenset(open_groups)
        self._log = log or structlog.get_logger("node.admin")

    @classmethod
    def from_config(
        cls, admin: AdminConfig, log: structlog.typing.FilteringBoundLogger | None = None
    ) -> Access:
        """Build the access rules ``[admin]`` configures."""
        return cls(admin.users, admin.certs, admin.open, log=log)

    @property
    def is_open(self) -> bool:
        """Whether no credential is configured, so every caller acts as admin."""
        return not self._users and not self._certs

    def identify(self, authorization: str | None, peer_cn: str | None) -> Principal:
        """Who presents ``authorization`` (the header) or a verified certificate with ``peer_cn``.

        Raises Unauthenticated naming what was wrong (never echoing the token).
        """
        if authorization is not None:
            scheme, _, token = authorization.partition(" ")
            if scheme.lower() != "bearer" or not token.strip():
                raise Unauthenticated("the Authorization header must be 'Bearer TOKEN'")
            digest = hashlib.sha256(token.strip().encode()).digest()
            found: Principal | None = None
            for known, name, role in self._users:  # compare with every hash: constant time
                if hmac.compare_digest(digest, known):
                    found = Principal(name, role, "token")
            if found is None:
                raise Unauthenticated("unknown token")
            return found
        if peer_cn is not None:
            mapped = self._certs.get(peer_cn)
            if mapped is None:
                raise Unauthenticated(f"client certificate CN={peer_cn!r} has no role here")
            return Principal(peer_cn, mapped, "certificate")
        raise Unauthenticated("credentials required: a bearer token or a client certificate")

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Answer 401/403 unless the caller's role may make this request; log changes asked."""
        route = route_template(request)
        method = "GET" if request.method == "HEAD" else request.method
        rule = rule_for(route, method)
        if rule.least is None:
            return await handler(request)
        principal: Principal | None = None
        if self.is_open:
            principal = ANONYMOUS_ADMIN
        elif rule.open_as not in self._open:
            try:
                principal = self.identify(
                    request.headers.get("Authorization"), _peer_cn(request.transport)
                )
            except Unauthenticated as refusal:
                return self._logged(request, route, None, _unauthorized(str(refusal)))
            if principal.role < rule.least:
                return self._logged(request, route, principal, _forbidden(
                    f"role {principal.role.label} may not {method} {route}"
                    f" (needs {rule.least.label} or higher)"
                ))  # fmt: skip
        if principal is not None:
            request[PRINCIPAL] = principal
        try:
            response = await handler(request)
        except web.HTTPException as answer:
            self._logged(request, route, principal, answer)
            raise
        return self._logged(request, route, principal, response)

    def _logged(
        self, request: web.Request, route: str, who: Principal | None, response: _Answer
    ) -> _Answer:
        if request.method not in READ:
            target = "/".join(request.match_info.values())
            emit(self._log, AdminAction(
                who.name if who else "", who.role.label if who else "", request.method,
                route[:200], target[:200], int(response.status),
            ))  # fmt: skip
        return response


def route_template(request: web.Request) -> str:
    """Return the template of the route aiohttp resolved; the path when none matched."""
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else request.path


def _peer_cn(transport: Any) -> str | None:
    """Return the subject CN of the client certificate the handshake verified, if any."""
    if transport is None:
        return None
    certificate = transport.get_extra_info("peercert")
    if not certificate:
        return None
    for rdn in certificate.get("subject", ()):
        for key, value in rdn:
            if key == "commonName":
                return str(value)
    return None


def _unauthorized(message: str) -> web.Response:
    return web.json_response(
        {"error": message}, status=401, headers={"WWW-Authenticate": 'Bearer realm="admin"'}
    )


def _forbidden(message: str) -> web.Response:
    return web.json_response({"error": message}, status=403)


def server_tls(tls: AdminTls | None) -> ssl.SSLContext | None:
    """Build the admin server's TLS context (client certificates asked for, verified if sent).

    None without ``[admin.tls]``. Raises ConfigError naming the field whose file is unusable.
    """
    if tls is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(tls.cert_file, tls.key_file)
    except (OSError, ssl.SSLError) as error:
        raise ConfigError(
            "admin.tls.cert_file", f"cannot use {tls.cert_file} with {tls.key_file}: {error}"
        ) from error
    if tls.client_ca_file is not None:
        try:
            context.load_verify_locations(cafile=tls.client_ca_file)
        except (OSError, ssl.SSLError) as error:
            raise ConfigError(
                "admin.tls.client_ca_file", f"cannot use {tls.client_ca_file}: {error}"
            ) from error
        context.verify_mode = ssl.CERT_OPTIONAL
    return context
