"""docker/ and docker/k8s/ checked without a Docker engine or a cluster: the compose file's
production invariants, the image's install path, and the Kubernetes manifests' shape."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DOCKER = ROOT / "docker"


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load((DOCKER / "compose.yml").read_text())


def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return compose["services"]


ONE_SHOT = {"setup"}


def test_three_brokers_replication_3_min_isr_2_each_with_a_volume(compose: dict) -> None:
    brokers = {n: s for n, s in services(compose).items() if n.startswith("kafka")}
    assert len(brokers) == 3
    for name, broker in brokers.items():
        env = broker["environment"]
        assert env["KAFKA_DEFAULT_REPLICATION_FACTOR"] == "3"
        assert env["KAFKA_MIN_INSYNC_REPLICAS"] == "2"
        assert env["KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR"] == "3"
        assert env["KAFKA_UNCLEAN_LEADER_ELECTION_ENABLE"] == "false"
        volume = broker["volumes"][0].split(":")
        assert volume[1] == env["KAFKA_LOG_DIRS"] and volume[0] in compose["volumes"], name
    app = services(compose)["worker1"]["environment"]
    assert app["SWITCHBOARD_TOPIC_REPLICATION"] == "3"


def test_every_long_running_service_restarts_and_has_a_healthcheck(compose: dict) -> None:
    for name, service in services(compose).items():
        if name in ONE_SHOT:
            assert service["restart"] == "on-failure", name
            continue
        assert service.get("restart") in {"unless-stopped", "always"}, name
        assert service.get("healthcheck", {}).get("test"), name


def test_start_order_waits_for_health_and_for_the_setup_job(compose: dict) -> None:
    all_services = services(compose)
    for name, service in all_services.items():
        for dependency, condition in service.get("depends_on", {}).items():
            assert dependency in all_services, (name, dependency)
            wanted = condition["condition"]
            if dependency in ONE_SHOT:
                assert wanted == "service_completed_successfully", (name, dependency)
            elif name not in {"prometheus"}:
                assert wanted == "service_healthy", (name, dependency)
    for name in ("ingress1", "ingress2", "worker1", "worker2"):
        depends = all_services[name]["depends_on"]
        assert depends["setup"]["condition"] == "service_completed_successfully"
        assert {"mysql", "kafka1", "kafka2", "kafka3"} <= set(depends)
    setup = all_services["setup"]
    assert "switchboard migrate && switchboard topics" in " ".join(setup["entrypoint"])


def test_two_ingress_two_workers_each_worker_advertising_its_own_name(compose: dict) -> None:
    all_services = services(compose)
    assert [all_services[n]["command"] for n in ("ingress1", "ingress2")] == [["ingress"]] * 2
    for name in ("worker1", "worker2"):
        env = all_services[name]["environment"]
        assert env["SWITCHBOARD_WORKER_ADVERTISED_URL"] == f"http://{name}:6066"
        assert all_services[name]["volumes"][0].startswith(f"{name}:/var/lib/switchboard")
        assert "/readyz" in " ".join(all_services[name]["healthcheck"]["test"])


def test_mysql_8_4_and_secrets_only_from_the_environment(compose: dict) -> None:
    text = (DOCKER / "compose.yml").read_text()
    assert services(compose)["mysql"]["image"] == "mysql:8.4"
    env = services(compose)["worker1"]["environment"]
    # The password travels apart from the URL: no escaping of @ / % needed.
    assert "@" in env["SWITCHBOARD_DATABASE_URL"] and ":$" not in env["SWITCHBOARD_DATABASE_URL"]
    for variable in ("MYSQL_PASSWORD", "RETELL_API_KEY", "CALCOM_WEBHOOK_SECRET",
                     "SWITCHBOARD_ANALYST_TOKENS", "GRAFANA_ADMIN_PASSWORD"):  # fmt: skip
        assert f"${{{variable}:?" in text, variable
        assert re.search(rf"^{variable}=$", (DOCKER / ".env.example").read_text(), re.M)


def test_prometheus_and_grafana_are_provisioned(compose: dict) -> None:
    prometheus = services(compose)["prometheus"]
    mounted = {v.split(":")[0] for v in prometheus["volumes"]}
    assert {"./prometheus/prometheus.yml", "./prometheus/alerts.yml"} <= mounted
    config = yaml.safe_load((DOCKER / "prometheus" / "prometheus.yml").read_text())
    assert config["rule_files"] == ["/etc/prometheus/alerts.yml"]
    targets = {
        t for job in config["scrape_configs"] for c in job["static_configs"] for t in c["targets"]
    }
    assert targets == {
        "ingress1:8080",
        "ingress2:8080",
        "worker1:6066",
        "worker2:6066",
        "backfill:9465",
    }
    grafana = services(compose)["grafana"]
    assert any(v.startswith("./grafana/dashboards:") for v in grafana["volumes"])
    dashboard = json.loads((DOCKER / "grafana" / "dashboards" / "switchboard.json").read_text())
    assert dashboard["uid"] == "switchboard" and len(dashboard["panels"]) >= 10
    assert all(p["targets"] and p["datasource"]["uid"] == "prometheus" for p in dashboard["panels"])


def test_the_image_is_multi_stage_non_root_and_installs_the_lock() -> None:
    dockerfile = (DOCKER / "Dockerfile").read_text()
    assert len(re.findall(r"^FROM ", dockerfile, re.M)) == 2
    assert "pip install --require-hashes -r /tmp/requirements.lock" in dockerfile
    assert "pip install --no-deps ." in dockerfile
    assert re.search(r"^USER 10001", dockerfile, re.M)
    # Everything the package lists is copied into the build (an entry point needs testbed).
    for package in ("pipeline", "agents", "tables", "migrations", "testbed"):
        assert f"COPY {package} ./{package}" in dockerfile


def manifests() -> list[dict[str, Any]]:
    docs = []
    for path in sorted((DOCKER / "k8s").glob("*.yaml")):
        docs += [d for d in yaml.safe_load_all(path.read_text()) if d]
    return docs


def by_kind(kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in manifests() if d["kind"] == kind}


def test_k8s_manifests_are_well_formed() -> None:
    for doc in manifests():
        assert {"apiVersion", "kind"} <= set(doc), doc
        if doc["kind"] != "Kustomization":
            assert doc["metadata"]["name"]
    listed = yaml.safe_load((DOCKER / "k8s" / "kustomization.yaml").read_text())["resources"]
    assert all((DOCKER / "k8s" / name).is_file() for name in listed)
    assert "secret.example.yaml" not in listed  # secrets come from the secret store


def test_workers_are_a_statefulset_with_storage_and_readiness() -> None:
    (worker,) = by_kind("StatefulSet").values()
    spec = worker["spec"]
    assert spec["serviceName"] in by_kind("Service")
    assert by_kind("Service")[spec["serviceName"]]["spec"]["clusterIP"] == "None"
    (claim,) = spec["volumeClaimTemplates"]
    container = spec["template"]["spec"]["containers"][0]
    assert any(m["name"] == claim["metadata"]["name"] and m["mountPath"] == "/var/lib/switchboard"
               for m in container["volumeMounts"])  # fmt: skip
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert "$(POD_NAME)." in env["SWITCHBOARD_WORKER_ADVERTISED_URL"]


def test_ingress_is_a_deployment_behind_a_service_with_probes() -> None:
    deployment = by_kind("Deployment")["switchboard-ingress"]
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    service = by_kind("Service")["switchboard-ingress"]
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
