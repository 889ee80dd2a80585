"""Alert rules, scrape config and dashboard queries checked by Prometheus's own promtool.

promtool comes from Debian's `prometheus` package (apt-get install prometheus); these
tests fail, never skip, when it is missing.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.promql import known_series, selected_metrics

ROOT = Path(__file__).resolve().parents[2]
MON = ROOT / "manifests" / "monitoring"
RULES = MON / "prometheus" / "rules" / "kubeloop-alerts.yaml"
RULE_TESTS = sorted((MON / "prometheus" / "rules" / "tests").glob("*.yaml"))
CONFIG = MON / "prometheus" / "prometheus.yml"
DASHBOARDS = sorted((MON / "dashboards").glob("*.json"))


@pytest.fixture(scope="module")
def promtool() -> str:
    path = shutil.which("promtool")
    assert path, "promtool not found: apt-get install -y prometheus"
    return path


def _run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, cwd=cwd, timeout=120, check=False)


def _alerts() -> list[dict[str, Any]]:
    doc = yaml.safe_load(RULES.read_text())
    return [r for g in doc["groups"] for r in g["rules"] if "alert" in r]


def test_rules_pass_promtool_check(promtool: str) -> None:
    r = _run(promtool, "check", "rules", str(RULES))
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"SUCCESS: {len(_alerts())} rules found" in r.stdout


def test_rule_unit_tests_pass(promtool: str) -> None:
    assert RULE_TESTS, "no rule unit tests"
    for t in RULE_TESTS:
        r = _run(promtool, "test", "rules", t.name, cwd=t.parent)
        assert r.returncode == 0, f"{t.name}:\n{r.stdout}{r.stderr}"
        assert "SUCCESS" in r.stdout


def test_a_broken_rule_is_caught(promtool: str, tmp_path: Path) -> None:
    """The check above can fail: promtool rejects a rule with a syntax error."""
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        yaml.safe_dump(
            {"groups": [{"name": "g", "rules": [{"alert": "A", "expr": "sum(rate(x[5m])"}]}]}
        )
    )
    assert _run(promtool, "check", "rules", str(bad)).returncode != 0


def test_the_promised_alerts_exist() -> None:
    names = {a["alert"] for a in _alerts()}
    assert {
        "KubeloopOperatorDown",
        "KubeloopReconcileErrors",
        "KubeloopTrainingFailed",
        "KubeloopServingHighErrorRate",
        "KubeloopServingLatencySLO",
        "KubeloopDataDrift",
        "KubeloopFeatureDrift",
        "KubeloopLiveAccuracyLow",
    } <= names


def test_every_alert_has_severity_summary_description() -> None:
    for a in _alerts():
        assert a["labels"]["severity"] in {"critical", "warning", "info"}, a["alert"]
        assert a["annotations"].get("summary"), a["alert"]
        assert a["annotations"].get("description"), a["alert"]


def test_alerts_read_known_metrics() -> None:
    known = known_series()
    for a in _alerts():
        unknown = selected_metrics(a["expr"]) - known
        assert not unknown, f"{a['alert']}: unknown metrics {sorted(unknown)}"


def test_every_alert_has_a_firing_and_a_quiet_case() -> None:
    firing: set[str] = set()
    quiet: set[str] = set()
    for t in RULE_TESTS:
        for case in yaml.safe_load(t.read_text())["tests"]:
            for check in case.get("alert_rule_test", []):
                (firing if check.get("exp_alerts") else quiet).add(check["alertname"])
    names = {a["alert"] for a in _alerts()}
    assert names - firing == set(), "alerts never tested firing"
    assert names - quiet == set(), "alerts never tested quiet"


_VAR = re.compile(r"\$\{?([a-zA-Z_][a-zA-Z0-9_]*)\}?")
_LABEL_VALUES = re.compile(r"^label_values\((?P<sel>.+),\s*[a-zA-Z_][a-zA-Z0-9_]*\)$")
_INTERVALS = {"__rate_interval": "1m", "__interval": "30s", "__range": "1h"}


def _promql(expr: str) -> str:
    """A dashboard query as Prometheus sees it once Grafana substituted its variables."""
    m = _LABEL_VALUES.match(expr.strip())
    expr = m.group("sel") if m else expr
    return _VAR.sub(lambda v: _INTERVALS.get(v.group(1), ".*"), expr)


def _dashboard_exprs() -> list[str]:
    out: list[str] = []
    for p in DASHBOARDS:
        doc = json.loads(p.read_text())
        panels = [q for x in doc["panels"] for q in (x, *x.get("panels", []))]
        out += [t["expr"] for x in panels for t in x.get("targets", [])]
        for v in doc["templating"]["list"]:
            if v["type"] == "query":
                out.append(v["definition"])
    return out


def test_every_dashboard_query_parses(promtool: str, tmp_path: Path) -> None:
    """Each query becomes a recording rule, which promtool parses with Prometheus's parser."""
    exprs = _dashboard_exprs()
    assert len(exprs) > 30
    rules = [{"record": f"dashboard:query_{i}", "expr": _promql(e)} for i, e in enumerate(exprs)]
    f = tmp_path / "dashboards.yaml"
    f.write_text(yaml.safe_dump({"groups": [{"name": "dashboards", "rules": rules}]}))
    r = _run(promtool, "check", "rules", str(f))
    assert r.returncode == 0, r.stdout + r.stderr


def test_scrape_config_is_valid(promtool: str, tmp_path: Path) -> None:
    """promtool check config on the real file, with Kubernetes discovery swapped for a
    static target (Debian builds Prometheus without it); the relabeling and rule file
    references are checked as written."""
    cfg = yaml.safe_load(CONFIG.read_text())
    jobs = {j["job_name"]: j for j in cfg["scrape_configs"]}
    assert {"kubeloop-operator", "kubeloop-predictors", "kubernetes-pods"} <= set(jobs)
    for j in cfg["scrape_configs"]:
        if j.pop("kubernetes_sd_configs", None) is not None:
            j["static_configs"] = [{"targets": ["127.0.0.1:9"]}]
    rules_dir = tmp_path / "rules"
    rules_dir.mkdir()
    shutil.copy(RULES, rules_dir / RULES.name)
    assert cfg["rule_files"] == ["/etc/prometheus-rules/*.yaml"]
    cfg["rule_files"] = [str(rules_dir / "*.yaml")]
    f = tmp_path / "prometheus.yml"
    f.write_text(yaml.safe_dump(cfg))
    r = _run(promtool, "check", "config", str(f))
    assert r.returncode == 0, r.stdout + r.stderr
