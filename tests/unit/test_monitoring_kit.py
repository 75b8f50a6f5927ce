"""The monitoring kit in deploy/monitoring agrees with promtool and with the node's metrics.

promtool (Debian package ``prometheus``, installed by ``make debs``) checks the Prometheus config,
the alert rules and their unit tests, and the dashboard's queries. The metric names used by the
alerts and the dashboard are checked against what :class:`node.ops.metrics.Metrics` exports, with
every family given a sample.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry

from node.core.heartbeat import STALE_INTERVALS
from node.core.peers import Completeness, PeerHeartbeat
from node.ops.metrics import Metrics

ROOT = Path(__file__).resolve().parents[2]
KIT = ROOT / "deploy" / "monitoring"
DEMO = ROOT / "deploy" / "local" / "demo"
PROMTOOL_TIMEOUT_S = 60
SEVERITIES = {"critical", "warning"}
_KEYWORDS = {
    "and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring", "group_left",
    "group_right", "inf", "nan", "start", "end",
}  # fmt: skip
_GRAFANA_VARIABLES = {
    "$__rate_interval": "1m",
    "$__interval": "1m",
    "$__range": "1h",
    "$instance": ".*",
}


def promtool(*args: str, cwd: Path = KIT) -> None:
    """Run promtool; fail with its output unless it exits 0 (or if it is not installed)."""
    exe = shutil.which("promtool")
    if exe is None:
        pytest.fail(
            "promtool not found on PATH: `make debs` installs it (Debian package prometheus)"
        )
    done = subprocess.run(  # noqa: S603 - promtool from PATH, arguments are our own file names
        [exe, *args], cwd=cwd, capture_output=True, text=True, timeout=PROMTOOL_TIMEOUT_S,
        check=False,
    )  # fmt: skip
    assert done.returncode == 0, (
        f"promtool {' '.join(args)} exited {done.returncode}:\n{done.stdout}{done.stderr}"
    )


def exported_families() -> dict[str, set[str]]:
    """Each metric family the node exports, with the names of its samples (``_total`` etc.)."""
    registry = CollectorRegistry()
    metrics = Metrics(
        registry, ["local", "parent"], peers=["410000", "410100"], resource_labels=["R1"]
    )
    metrics.readings.lag["parent"] = lambda: {0: 12}
    metrics.readings.heartbeats = lambda: [
        PeerHeartbeat("410000", "parent", age_s=4.0, hop_s=0.02, interval_s=10.0, received=6)
    ]
    metrics.readings.completeness = lambda: [Completeness("410102", sent=10, received=9)]
    # Labelled gauges the app fills in at run time, with no children created up front.
    metrics.info.labels("0.1.0", "city", "410100", "city", "410000", "410102").set(1)
    metrics.relay_lag.labels("grants-up").set(0)
    metrics.gateway_requests.labels("publish", "201").inc()
    metrics.quality_records.labels("R1", "HRSS", "accuracy", "pass").inc()
    metrics.readings.silence = lambda: [("R1", 100.0, 86400.0)]
    families = {family.name: {s.name for s in family.samples} for family in registry.collect()}
    empty = sorted(name for name, samples in families.items() if not samples)
    assert not empty, f"give these families a sample in exported_families(): {empty}"
    return families


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (identifiers not called, not keywords)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    text = re.sub(r"\{[^}]*\}|\[[^\]]*\]", " ", text)
    text = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    names = {
        match.group()
        for match in re.finditer(r"(?<![\w:.$])[a-zA-Z_:][a-zA-Z0-9_:]*", text)
        if not text[match.end() :].lstrip().startswith("(") and match.group() not in _KEYWORDS
    }
    return names | set(re.findall(r"\bexchange_[a-zA-Z0-9_:]*", expr))


def load_yaml(name: str) -> Any:
    """A YAML file of the kit."""
    return yaml.safe_load((KIT / name).read_text(encoding="utf-8"))


def alert_rules() -> list[dict[str, Any]]:
    """Every alerting rule of alerts.yml."""
    return [rule for group in load_yaml("alerts.yml")["groups"] for rule in group["rules"]]


def dashboard_panels() -> Iterator[dict[str, Any]]:
    """Every panel of the dashboard, rows' nested panels included."""
    for panel in json.loads((KIT / "grafana-dashboard.json").read_text(encoding="utf-8"))["panels"]:
        yield panel
        yield from panel.get("panels", [])


def dashboard_exprs() -> list[str]:
    """Every query of every dashboard panel."""
    return [target["expr"] for panel in dashboard_panels() for target in panel.get("targets", [])]


def test_prometheus_config_is_valid() -> None:
    """Prometheus' promtool accepts prometheus.yml and the rule file it loads."""
    promtool("check", "config", "prometheus.yml")


def test_prometheus_config_scrapes_every_demo_node() -> None:
    """prometheus.yml scrapes the admin port of every node of the local demo, on loopback."""
    ports = {
        tomllib.loads(path.read_text(encoding="utf-8"))["admin"]["port"]
        for path in DEMO.glob("*.toml")
    }
    (job,) = load_yaml("prometheus.yml")["scrape_configs"]
    targets = {target for static in job["static_configs"] for target in static["targets"]}
    assert job["job_name"] == "exchange-node"
    assert ports
    assert targets == {f"127.0.0.1:{port}" for port in ports}


def test_alert_rules_are_valid() -> None:
    """Prometheus' promtool accepts alerts.yml."""
    promtool("check", "rules", "alerts.yml")


def test_alert_rule_unit_tests_pass() -> None:
    """Every case of alerts_test.yml gets exactly the alerts, labels and annotations it expects."""
    promtool("test", "rules", "alerts_test.yml")


def test_every_alert_is_tested_firing_and_silent() -> None:
    """Each alert has a case where it fires and one where it does not; no case names another."""
    alerts = {rule["alert"] for rule in alert_rules()}
    firing: set[str] = set()
    silent: set[str] = set()
    for case in load_yaml("alerts_test.yml")["tests"]:
        for check in case.get("alert_rule_test", []):
            (firing if check.get("exp_alerts") else silent).add(check["alertname"])
    assert alerts - firing == set(), "alerts never seen firing"
    assert alerts - silent == set(), "alerts never seen silent"
    assert (firing | silent) - alerts == set(), "cases for alerts that do not exist"


def test_every_alert_has_severity_and_templated_annotations() -> None:
    """Each alert has a known severity and a summary and description naming its labels."""
    rules = alert_rules()
    assert rules
    for rule in rules:
        assert rule["labels"]["severity"] in SEVERITIES, rule["alert"]
        for key in ("summary", "description"):
            assert "{{ $labels." in rule["annotations"][key], (rule["alert"], key)


def test_heartbeat_alert_uses_the_status_page_staleness() -> None:
    """ExchangeHeartbeatStale calls a peer stale after as many intervals as the status page does."""
    (rule,) = (rule for rule in alert_rules() if rule["alert"] == "ExchangeHeartbeatStale")
    assert f"> {STALE_INTERVALS} * exchange_heartbeat_interval_seconds" in rule["expr"]


def test_alerts_use_only_exported_metrics() -> None:
    """Every metric an alert's expression or annotation names is exported (or Prometheus' up)."""
    exported = set().union(*exported_families().values()) | {"up"}
    for rule in alert_rules():
        used = metric_names(rule["expr"])
        for text in rule["annotations"].values():
            used |= set(re.findall(r"\bexchange_[a-zA-Z0-9_:]*", text))
        assert used, rule["alert"]
        assert used <= exported, (rule["alert"], sorted(used - exported))


def test_dashboard_uses_only_exported_metrics() -> None:
    """Every metric a dashboard query names is exported (or Prometheus' up)."""
    exported = set().union(*exported_families().values()) | {"up"}
    exprs = dashboard_exprs()
    assert exprs
    for expr in exprs:
        used = metric_names(expr)
        assert used, expr
        assert used <= exported, (expr, sorted(used - exported))


def test_dashboard_shows_every_family() -> None:
    """Every metric family the node exports appears in some dashboard query."""
    used = set().union(*(metric_names(expr) for expr in dashboard_exprs()))
    unshown = sorted(name for name, samples in exported_families().items() if not samples & used)
    assert unshown == []


def test_dashboard_queries_parse(tmp_path: Path) -> None:
    """Prometheus' promtool parses every dashboard query (Grafana's variables substituted)."""
    rules = []
    for number, expr in enumerate(dashboard_exprs()):
        for variable, value in _GRAFANA_VARIABLES.items():
            expr = expr.replace(variable, value)  # noqa: PLW2901 - the substituted query
        assert "$" not in expr, f"unknown Grafana variable in {expr}"
        rules.append({"record": f"dashboard:query_{number}", "expr": expr})
    path = tmp_path / "dashboard_rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    promtool("check", "rules", str(path), cwd=tmp_path)


def test_dashboard_variables_and_filters() -> None:
    """Panels query the chosen Prometheus data source and filter on the chosen instances."""
    dashboard = json.loads((KIT / "grafana-dashboard.json").read_text(encoding="utf-8"))
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    assert variables["instance"]["type"] == "query"
    assert 35 <= dashboard["schemaVersion"] <= 41
    for panel in dashboard_panels():
        for target in panel.get("targets", []):
            assert target["datasource"]["uid"] == "${datasource}", panel["title"]
            assert 'instance=~"$instance"' in target["expr"], panel["title"]
