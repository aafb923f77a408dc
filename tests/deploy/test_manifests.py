"""The compose stack, the Kubernetes manifests, Grafana's files and the image agree."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.tools import (
    COMPOSE,
    DASHBOARD,
    DEPLOY,
    K8S,
    RULES_CONFIGMAP,
    dashboard_exprs,
    render_rules_configmap,
    rule_files,
)
from tests.helpers import REPO, RULES

TOPICS = ["cart", "checkout", "cashier", "order", "interventions", "dlq", "outcomes"]
GRAFANA = DEPLOY / "grafana"


def k8s_docs() -> list[dict[str, Any]]:
    docs = []
    for path in sorted(K8S.glob("*.yaml")):
        docs.extend(d for d in yaml.safe_load_all(path.read_text()) if d is not None)
    return docs


def k8s(kind: str, name: str | None = None) -> dict[str, Any]:
    found = [d for d in k8s_docs() if d["kind"] == kind and name in (None, d["metadata"]["name"])]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


# -- compose ---------------------------------------------------------------------------------


def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())  # type: ignore[no-any-return]


def test_compose_runs_kafka_in_kraft_mode() -> None:
    services = compose()["services"]
    kafka = services["kafka"]
    image, tag = kafka["image"].split(":")
    assert image == "apache/kafka"
    assert re.fullmatch(r"\d+\.\d+\.\d+", tag), "pin the Kafka image to a release"
    env = kafka["environment"]
    assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    assert "CONTROLLER" in env["KAFKA_CONTROLLER_LISTENER_NAMES"]
    assert env["CLUSTER_ID"]
    assert "ZOOKEEPER" not in " ".join(env)
    # Host ports on loopback only.
    for service in services.values():
        for port in service.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), port


def test_compose_creates_every_topic_with_partitions_and_retention() -> None:
    services = compose()["services"]
    init = services["topic-init"]
    assert init["depends_on"]["kafka"]["condition"] == "service_healthy"
    script = "\n".join(init["command"])
    env = init["environment"]
    assert env["PARTITIONS"] == "8"
    assert int(env["RETENTION_MS"]) > 0
    assert env["RETENTION_BYTES"]
    assert "for name in " + " ".join(TOPICS) + ";" in script
    for option in ("--partitions", "retention.ms=", "retention.bytes=", "--if-not-exists"):
        assert option in script
    worker = services["worker"]
    assert worker["depends_on"]["topic-init"]["condition"] == "service_completed_successfully"
    assert worker["environment"]["GOLDENFLOW_PARTITIONS"] == env["PARTITIONS"]
    assert worker["environment"]["GOLDENFLOW_TOPIC_PREFIX"] == env["PREFIX"]
    assert worker["environment"]["GOLDENFLOW_WEB_HOST"] == "0.0.0.0"
    assert worker["deploy"]["replicas"] >= 2
    assert (COMPOSE.parent / worker["build"]["context"] / worker["build"]["dockerfile"]).is_file()


def test_compose_wires_prometheus_and_grafana_to_the_deploy_files() -> None:
    services = compose()["services"]

    def mounts(service: str) -> dict[str, Path]:
        out = {}
        for volume in services[service]["volumes"]:
            source, target = volume.split(":")[:2]
            if source.startswith("."):
                out[target] = (COMPOSE.parent / source).resolve()
        return out

    prometheus = mounts("prometheus")
    assert prometheus["/etc/prometheus"] == (DEPLOY / "prometheus").resolve()
    assert "--config.file=/etc/prometheus/prometheus.yml" in services["prometheus"]["command"]
    grafana = mounts("grafana")
    assert grafana["/etc/grafana/provisioning"] == (GRAFANA / "provisioning").resolve()
    assert grafana["/var/lib/grafana/dashboards"] == (GRAFANA / "dashboards").resolve()
    assert mounts("worker")["/etc/goldenflow/rules"] == RULES.resolve()
    for service in ("prometheus", "grafana"):
        assert re.search(r":v?\d+\.\d+\.\d+$", services[service]["image"]), service


# -- Kubernetes ------------------------------------------------------------------------------


def test_k8s_manifests_parse_and_kustomization_lists_them_all() -> None:
    docs = k8s_docs()
    assert all("apiVersion" in d and "kind" in d for d in docs)
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    listed = set(kustomization["resources"])
    on_disk = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert listed == on_disk


def test_worker_deployment_has_health_probes_resources_and_config() -> None:
    deployment = k8s("Deployment", "goldenflow-worker")
    pod = deployment["spec"]["template"]["spec"]
    [container] = pod["containers"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    config = k8s("ConfigMap", "goldenflow-config")["data"]
    assert ports["web"] == int(config["GOLDENFLOW_WEB_PORT"])
    assert config["GOLDENFLOW_WEB_HOST"] == "0.0.0.0"
    for probe, path in (
        ("livenessProbe", "/health"),
        ("readinessProbe", "/ready"),
        ("startupProbe", "/health"),
    ):
        get = container[probe]["httpGet"]
        assert get["path"] == path, probe
        assert get["port"] in ("web", ports["web"]), probe
    resources = container["resources"]
    assert {"cpu", "memory"} <= set(resources["requests"])
    assert "memory" in resources["limits"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False

    env_from = {
        next(iter(source)): next(iter(source.values()))["name"] for source in container["envFrom"]
    }
    assert env_from == {"configMapRef": "goldenflow-config", "secretRef": "goldenflow-kafka"}
    secret = k8s("Secret", "goldenflow-kafka")["stringData"]
    assert {"GOLDENFLOW_SASL_USERNAME", "GOLDENFLOW_SASL_PASSWORD"} <= set(secret)
    assert "GOLDENFLOW_SASL_PASSWORD" not in config

    mounts = {m["name"]: m for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert mounts["rules"]["mountPath"] == config["GOLDENFLOW_RULES_DIR"] == "/etc/goldenflow/rules"
    assert "subPath" not in mounts["rules"], "a subPath mount never sees ConfigMap updates"
    assert volumes["rules"]["configMap"]["name"] == "goldenflow-rules"
    assert mounts["data"]["mountPath"] == config["GOLDENFLOW_DATA_DIR"]


def test_service_monitor_pdb_and_keda_select_the_workers() -> None:
    deployment = k8s("Deployment", "goldenflow-worker")
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    config = k8s("ConfigMap", "goldenflow-config")["data"]

    def selects(selector: dict[str, str]) -> bool:
        return selector.items() <= labels.items()

    service = k8s("Service", "goldenflow")
    assert service["metadata"]["name"] == "goldenflow"  # the job label the alerts use
    assert selects(service["spec"]["selector"])
    monitor = k8s("ServiceMonitor")
    assert selects(monitor["spec"]["selector"]["matchLabels"])
    assert monitor["spec"]["endpoints"][0]["port"] == service["spec"]["ports"][0]["name"]
    assert monitor["spec"]["endpoints"][0]["path"] == "/metrics"
    pdb = k8s("PodDisruptionBudget")
    assert selects(pdb["spec"]["selector"]["matchLabels"])

    scaled = k8s("ScaledObject")
    assert scaled["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
    [trigger] = scaled["spec"]["triggers"]
    assert trigger["type"] == "kafka"
    meta = trigger["metadata"]
    assert meta["consumerGroup"] == config["GOLDENFLOW_APP_ID"] == "goldenflow"
    assert int(meta["lagThreshold"]) > 0
    assert scaled["spec"]["maxReplicaCount"] == int(config["GOLDENFLOW_PARTITIONS"])
    assert scaled["spec"]["minReplicaCount"] >= 2
    brokers = config["GOLDENFLOW_BROKER_URL"].split("://", 1)[1].split(";")
    assert meta["bootstrapServers"].split(",") == brokers
    auth = k8s("TriggerAuthentication")
    assert trigger["authenticationRef"]["name"] == auth["metadata"]["name"]
    secret = k8s("Secret", "goldenflow-kafka")["stringData"]
    assert all(ref["key"] in secret for ref in auth["spec"]["secretTargetRef"])


def test_rules_configmap_mirrors_the_rules_folder() -> None:
    if os.environ.get("GOLDENFLOW_UPDATE_MANIFESTS") == "1":
        RULES_CONFIGMAP.write_text(render_rules_configmap(RULES))
    configmap = yaml.safe_load(RULES_CONFIGMAP.read_text())
    assert configmap["metadata"]["name"] == "goldenflow-rules"
    assert configmap["data"] == rule_files(RULES), (
        f"{RULES_CONFIGMAP.relative_to(REPO)} is out of date with rules/; regenerate it: "
        "GOLDENFLOW_UPDATE_MANIFESTS=1 .venv/bin/pytest tests/deploy/test_manifests.py -k rules"
    )


# -- Grafana ---------------------------------------------------------------------------------


def test_dashboard_has_the_panels_and_uses_the_provisioned_datasource() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    panels = [p for p in dashboard["panels"] if p["type"] != "row"]
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    exprs = "\n".join(dashboard_exprs(dashboard))
    for needle in (
        "sum by (type) (rate(goldenflow_events_consumed_total",
        "goldenflow_patterns_detected_total",
        "sum by (type, channel) (rate(goldenflow_commands_emitted_total",
        "sum by (reason) (rate(goldenflow_suppressions_total",
        "goldenflow_budget_spend_total",
        "goldenflow_budget_remaining",
        "sum by (pattern, arm) (increase(goldenflow_recovered_orders_total",
        "sum by (pattern, arm) (increase(goldenflow_recovered_gmv_total",
        "histogram_quantile(0.99, sum by (le) (rate(goldenflow_event_to_command_seconds_bucket",
        "histogram_quantile(0.99, sum by (le) (rate(goldenflow_deadline_to_command_seconds_bucket",
        "histogram_quantile(0.99, sum by (le) (rate(goldenflow_cancel_to_retention_seconds_bucket",
        "goldenflow_consumer_lag_messages",
        "goldenflow_dead_letters_total",
    ):
        assert needle in exprs, needle

    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    datasource = variables["datasource"]
    assert datasource["type"] == "datasource"
    assert datasource["query"] == "prometheus"
    for panel in panels:
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "${datasource}", panel["title"]

    provisioned = yaml.safe_load((GRAFANA / "provisioning/datasources/prometheus.yml").read_text())
    [source] = provisioned["datasources"]
    assert source["type"] == "prometheus"
    assert datasource["current"]["value"] == source["uid"]
    assert source["url"] == "http://prometheus:9090"

    providers = yaml.safe_load((GRAFANA / "provisioning/dashboards/goldenflow.yml").read_text())
    [provider] = providers["providers"]
    assert provider["options"]["path"] == "/var/lib/grafana/dashboards"


# -- the image -------------------------------------------------------------------------------


def test_dockerfile_builds_from_constraints_and_runs_as_non_root() -> None:
    text = (DEPLOY / "Dockerfile").read_text()
    assert "-c constraints.txt" in text
    users = re.findall(r"^USER\s+(\S+)", text, re.M)
    assert users, "the image must not run as root"
    uid = users[-1].split(":")[0]
    assert uid.isdigit() and int(uid) != 0, "a numeric non-root uid (for runAsNonRoot)"
    deployment = k8s("Deployment", "goldenflow-worker")
    assert deployment["spec"]["template"]["spec"]["securityContext"]["runAsUser"] == int(uid)
    assert "GOLDENFLOW_RULES_DIR=/etc/goldenflow/rules" in text
    ignored = (DEPLOY / "Dockerfile.dockerignore").read_text().split()
    assert {".venv", ".git"} <= set(ignored)


@pytest.mark.parametrize(
    "path",
    sorted(p.relative_to(DEPLOY).as_posix() for p in DEPLOY.rglob("*.y*ml")),
)
def test_every_yaml_file_under_deploy_parses(path: str) -> None:
    docs = list(yaml.safe_load_all((DEPLOY / path).read_text()))
    assert any(d is not None for d in docs)
