"""The Kubernetes deployment builds and validates offline, and every check fails on a planted violation."""

from __future__ import annotations

import copy
import json
import os
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

from deploy.k8s import validate
from deploy.k8s.manifests import Manifest, named, of_kind, pod_templates, ref

OVERLAY_DIR = validate.K8S_DIR / "overlays"


@pytest.fixture(scope="module")
def built() -> dict[str, list[Manifest]]:
    return {overlay.name: validate.build(overlay) for overlay in validate.OVERLAYS}


def test_both_overlays_exist():
    assert {overlay.name for overlay in validate.OVERLAYS} == {"dev", "prod"}


@pytest.mark.parametrize("overlay", ["dev", "prod"])
def test_overlay_builds_and_validates(built, overlay):
    manifests = built[overlay]
    assert validate.problems_in(manifests) == []
    kinds = {m["kind"] for m in manifests}
    assert {"Deployment", "StatefulSet", "NetworkPolicy", "PodDisruptionBudget", "ScaledObject",
            "TriggerAuthentication", "Certificate", "Issuer", "ServiceMonitor", "Secret"} <= kinds
    deployments = {m["metadata"]["name"] for m in of_kind(manifests, "Deployment")}
    assert deployments == {"ingest", "faceqa", "trainer", "renderer", "privacy", "tritonserver"}


@pytest.mark.parametrize("overlay", ["dev", "prod"])
def test_every_disruption_budget_lets_a_drain_evict_a_pod(built, overlay):
    """A budget that keeps as many pods as the workload runs (minAvailable 1 of a single replica) blocks every node
    drain for good."""
    for budget in of_kind(built[overlay], "PodDisruptionBudget"):
        spec, name = budget["spec"], budget["metadata"]["name"]
        if "maxUnavailable" in spec:
            assert spec["maxUnavailable"] not in (0, "0%"), name
            continue
        workloads = [m for m in built[overlay] if m["kind"] in ("Deployment", "StatefulSet")
                     and m["spec"]["selector"]["matchLabels"] == spec["selector"]["matchLabels"]]
        assert workloads and all(w["spec"].get("replicas", 1) > spec["minAvailable"] for w in workloads), name


CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding", "ClusterIssuer", "CustomResourceDefinition",
                  "PriorityClass", "StorageClass"}


@pytest.mark.parametrize("overlay", ["dev", "prod"])
def test_everything_an_overlay_adds_lands_in_the_studio_namespace(built, overlay):
    stray = [f"{m['kind']}/{m['metadata']['name']}" for m in built[overlay]
             if m["kind"] not in CLUSTER_SCOPED and m["metadata"].get("namespace") != "studio"]
    assert stray == []


def test_prod_puts_trainer_and_triton_on_gpus_and_dev_does_not(built):
    def gpu_pods(overlay: str) -> set[str]:
        return {pod.owner["metadata"]["name"] for pod in pod_templates(built[overlay]) if pod.uses_gpu()}

    assert gpu_pods("prod") == {"trainer", "tritonserver"}
    assert gpu_pods("dev") == set()


def test_trainer_replays_cuda_graphs_only_where_it_has_a_gpu(built):
    def train_compile(overlay: str) -> str:
        config = next(m for m in of_kind(built[overlay], "ConfigMap") if m["metadata"]["name"] == "studio-config")
        return config["data"]["STUDIO_TRAIN_COMPILE"]

    assert train_compile("prod") == "graphed"
    assert train_compile("dev") == "off"


def test_triton_replays_cuda_graphs_only_where_it_has_a_gpu(built):
    def render_compile(overlay: str) -> str:
        config = next(m for m in of_kind(built[overlay], "ConfigMap") if m["metadata"]["name"] == "studio-config")
        triton = named(built[overlay], "Deployment", "tritonserver")
        [container] = triton["spec"]["template"]["spec"]["containers"]
        [setting] = [e for e in container["env"] if e["name"] == "STUDIO_RENDER_COMPILE"]
        assert setting["valueFrom"]["configMapKeyRef"] == {"name": "studio-config", "key": "STUDIO_RENDER_COMPILE"}
        return config["data"]["STUDIO_RENDER_COMPILE"]

    assert render_compile("prod") == "graphed-batched"
    assert render_compile("dev") == "batched"


def test_triton_pods_share_one_compile_cache_in_prod(built):
    """A compiled render mode compiles while an instance loads: in prod every tritonserver pod reads and fills one
    ReadWriteMany claim, so only the first pays the cold compile; dev keeps it in the pod."""
    def cache_volume(overlay: str) -> Manifest:
        triton = named(built[overlay], "Deployment", "tritonserver")
        [container] = triton["spec"]["template"]["spec"]["containers"]
        [setting] = [e for e in container["env"] if e["name"] == "TORCHINDUCTOR_CACHE_DIR"]
        [mount] = [m for m in container["volumeMounts"] if setting["value"].startswith(m["mountPath"] + "/")]
        assert not mount.get("readOnly")
        return next(v for v in triton["spec"]["template"]["spec"]["volumes"] if v["name"] == mount["name"])

    claim = named(built["prod"], "PersistentVolumeClaim", cache_volume("prod")["persistentVolumeClaim"]["claimName"])
    assert claim is not None and claim["spec"]["accessModes"] == ["ReadWriteMany"]
    assert "emptyDir" in cache_volume("dev")
    assert named(built["dev"], "PersistentVolumeClaim", "studio-compile-cache") is None


@pytest.mark.parametrize("overlay", ["dev", "prod"])
def test_a_deletion_evicts_adapters_from_every_triton_pod(built, overlay):
    """Renders go to the tritonserver Service (any pod); a deletion's evictions go to a headless Service whose name
    resolves to every pod of the same Deployment, ready or not (one failing its probe may hold adapters), on the
    same gRPC port."""
    config = next(m for m in of_kind(built[overlay], "ConfigMap") if m["metadata"]["name"] == "studio-config")
    renders_host, renders_port = config["data"]["STUDIO_TRITON_URL"].split(":")
    pods_host, pods_port = config["data"]["STUDIO_TRITON_PODS"].split(":")
    renders, pods = named(built[overlay], "Service", renders_host), named(built[overlay], "Service", pods_host)
    triton = named(built[overlay], "Deployment", "tritonserver")
    assert pods["spec"]["clusterIP"] == "None" and renders["spec"].get("clusterIP") != "None"
    assert pods["spec"]["publishNotReadyAddresses"] is True
    assert pods["spec"]["selector"] == renders["spec"]["selector"] == triton["spec"]["selector"]["matchLabels"]
    assert pods_port == renders_port and [p["port"] for p in pods["spec"]["ports"]] == [int(pods_port)]
    renderer = named(built[overlay], "Deployment", "renderer")
    [container] = renderer["spec"]["template"]["spec"]["containers"]
    assert {"configMapRef": {"name": "studio-config"}} in container["envFrom"]


def test_nats_is_a_three_node_jetstream_cluster_on_volumes(built):
    nats = named(built["prod"], "StatefulSet", "nats")
    assert nats["spec"]["replicas"] == 3
    assert nats["spec"]["volumeClaimTemplates"][0]["metadata"]["name"] == "data"
    config = named(built["prod"], "ConfigMap", "nats-config")["data"]["nats.conf"]
    assert "jetstream" in config and "store_dir: /data" in config and config.count("nats://nats-") == 3


def _env(container: Manifest) -> dict[str, str | None]:
    return {entry["name"]: entry.get("value") for entry in container.get("env", [])}


def _probe_ports(container: Manifest) -> set[int]:
    return {container[probe]["grpc"]["port"] for probe in ("startupProbe", "readinessProbe", "livenessProbe")}


def _secret_holding(manifests: list[Manifest], container: Manifest, path: str) -> Manifest:
    """The secret volume mounted read-only where PATH lies."""
    mount = next(m for m in container["volumeMounts"] if path.startswith(m["mountPath"] + "/"))
    assert mount.get("readOnly") is True, mount
    volumes = {v["name"]: v for v in _pod_spec(manifests, "Deployment", "ingest")["volumes"]}
    return volumes[mount["name"]]["secret"]


def test_prod_serves_the_public_api_over_tls_and_dev_in_plaintext(built):
    """The LoadBalancer carries API keys and faces: in prod ingest's main port is TLS, with a certificate of its own
    (not the internal CA's, which services trust for client identities), and kubelet probes the plaintext
    health-only port instead (its gRPC probes cannot do TLS)."""
    from services.common.grpc_server import HEALTH_PORT_ENV
    from services.ingest.public_tls import CERT_ENV, KEY_ENV, TLS_ENV

    prod = built["prod"]
    assert named(prod, "Service", "ingest")["spec"]["type"] == "LoadBalancer"
    container = _container(prod, "Deployment", "ingest")
    env = _env(container)
    assert env[TLS_ENV] == "on"
    secrets = [_secret_holding(prod, container, env[name]) for name in (CERT_ENV, KEY_ENV)]
    assert secrets[0] == secrets[1] and secrets[0]["defaultMode"] == 0o440
    assert (Path(env[CERT_ENV]).name, Path(env[KEY_ENV]).name) == ("tls.crt", "tls.key")
    [certificate] = [c for c in of_kind(prod, "Certificate") if c["spec"]["secretName"] == secrets[0]["secretName"]]
    assert certificate["spec"]["dnsNames"] and "server auth" in certificate["spec"]["usages"]
    internal_issuer = named(prod, "Certificate", "studio-ingest-tls")["spec"]["issuerRef"]
    assert certificate["spec"]["issuerRef"] != internal_issuer
    health_port = int(env[HEALTH_PORT_ENV])
    assert _probe_ports(container) == {health_port}
    assert health_port in {port["containerPort"] for port in container["ports"]}

    dev = _container(built["dev"], "Deployment", "ingest")
    assert _env(dev).get(TLS_ENV, "off") == "off"
    assert _probe_ports(dev) == {next(p["containerPort"] for p in dev["ports"] if p["name"] == "grpc")}


@pytest.mark.parametrize("overlay", ["dev", "prod"])
def test_only_the_vault_pod_holds_the_operator_identity(built, overlay):
    """`keys rotate` / `audit export` run inside the privacy pod as `operator` (--tls-identity): its certificate is
    the internal CA's, mounted read-only in the privacy container alone, never as that pod's own STUDIO_TLS_*."""
    manifests = built[overlay]
    certificate = named(manifests, "Certificate", "studio-operator-tls")["spec"]
    assert (certificate["commonName"], certificate["secretName"]) == ("operator", "studio-operator-tls")
    assert certificate["issuerRef"] == named(manifests, "Certificate", "studio-privacy-tls")["spec"]["issuerRef"]
    holders = [pod.ref for pod in pod_templates(manifests) if any(
        (volume.get("secret") or {}).get("secretName") == "studio-operator-tls" for volume in pod.volumes())]
    assert holders == [ref(named(manifests, "Deployment", "privacy"))]
    pod = _pod_spec(manifests, "Deployment", "privacy")
    [volume] = [v for v in pod["volumes"] if (v.get("secret") or {}).get("secretName") == "studio-operator-tls"]
    assert volume["secret"]["defaultMode"] == 0o440
    mounts = [(container["name"], mount["mountPath"], mount.get("readOnly"))
              for container in pod["containers"] + pod.get("initContainers", [])
              for mount in container.get("volumeMounts", []) if mount["name"] == volume["name"]]
    assert mounts == [("privacy", "/var/run/secrets/studio/operator", True)]
    own_tls = {value for name, value in _env(_container(manifests, "Deployment", "privacy")).items()
               if name.startswith("STUDIO_TLS_")}
    assert own_tls and not any(path.startswith("/var/run/secrets/studio/operator/") for path in own_tls)


@pytest.mark.parametrize("overlay", ["dev", "prod"])
def test_the_upload_streams_ingest_holds_at_once_fit_its_memory(built, overlay):
    from deploy.k8s.policy import quantity
    from services.ingest.upload_stream import DEFAULT_MAX_UPLOAD_STREAMS, MAX_STREAM_BYTES

    ingest = _container(built[overlay], "Deployment", "ingest")
    streams = int(_env(ingest).get("STUDIO_MAX_UPLOAD_STREAMS") or DEFAULT_MAX_UPLOAD_STREAMS)
    assert streams * MAX_STREAM_BYTES < quantity(ingest["resources"]["limits"]["memory"])


def test_memory_quantities():
    from deploy.k8s.policy import quantity

    assert quantity("8Gi") == 8 * 2**30
    assert quantity("512M") == 512e6
    assert quantity(1024) == 1024.0
    assert quantity("1.5Ki") == 1536.0


def test_minio_image_is_pinned_by_digest(built):
    minio = named(built["prod"], "StatefulSet", "minio")
    image = minio["spec"]["template"]["spec"]["containers"][0]["image"]
    assert "@sha256:" in image and len(image.split("@sha256:")[1]) == 64


def _container(manifests, kind, name, index=0) -> Manifest:
    return named(manifests, kind, name)["spec"]["template"]["spec"]["containers"][index]


def _pod_spec(manifests, kind, name) -> Manifest:
    return named(manifests, kind, name)["spec"]["template"]["spec"]


def _drop(manifests, kind, name) -> None:
    manifests.remove(named(manifests, kind, name))


def _set_service_type(manifests, name, service_type) -> None:
    named(manifests, "Service", name)["spec"]["type"] = service_type


def _trigger(manifests, name) -> Manifest:
    return named(manifests, "ScaledObject", name)["spec"]["triggers"][0]


def _trigger_on(manifests, name, consumer) -> Manifest:
    return next(trigger for trigger in named(manifests, "ScaledObject", name)["spec"]["triggers"]
                if trigger["metadata"]["consumer"] == consumer)


def _drop_trigger(manifests, name, consumer) -> None:
    named(manifests, "ScaledObject", name)["spec"]["triggers"].remove(_trigger_on(manifests, name, consumer))


Plant = Callable[[list[Manifest]], None]
PLANTED: dict[str, tuple[str, str, Plant]] = {
    "container without limits": ("limits", "prod", lambda m: _container(m, "Deployment", "trainer")
                                 ["resources"]["limits"].pop("memory")),
    "init container without limits": ("limits", "dev", lambda m: _pod_spec(m, "Deployment", "trainer")
                                      ["initContainers"][0].pop("resources")),
    "privileged container": ("privileged", "dev", lambda m: _container(m, "Deployment", "ingest")
                             ["securityContext"].update(privileged=True)),
    "privilege escalation": ("privileged", "dev", lambda m: _container(m, "StatefulSet", "nats")
                             ["securityContext"].pop("allowPrivilegeEscalation")),
    "host network": ("privileged", "dev", lambda m: _pod_spec(m, "Deployment", "faceqa").update(hostNetwork=True)),
    ":latest tag": ("image-tag", "prod", lambda m: _container(m, "StatefulSet", "nats").update(image="nats:latest")),
    "untagged image": ("image-tag", "prod", lambda m: _container(m, "Deployment", "renderer")
                       .update(image="registry.local:5000/portrait-studio/renderer")),
    "GPU pod without toleration": ("gpu-toleration", "prod", lambda m: _pod_spec(m, "Deployment", "tritonserver")
                                   .pop("tolerations")),
    "GPU pod tolerating another taint": ("gpu-toleration", "prod", lambda m: _pod_spec(m, "Deployment", "trainer")
                                         .update(tolerations=[{"key": "spot", "operator": "Exists"}])),
    "GPU pod without node selector": ("gpu-toleration", "prod", lambda m: _pod_spec(m, "Deployment", "trainer")
                                      .pop("nodeSelector")),
    "GPU pod without /dev/shm": ("gpu-shm", "prod", lambda m: _container(m, "Deployment", "tritonserver")
                                 .update(volumeMounts=[{"name": "tmp", "mountPath": "/tmp"}])),
    "/dev/shm as large as the memory limit": ("gpu-shm", "prod", lambda m: _container(m, "Deployment", "trainer")
                                              ["resources"]["limits"].update(memory="4Gi")),
    "writable root filesystem": ("non-root", "dev", lambda m: _container(m, "Deployment", "privacy")
                                 ["securityContext"].update(readOnlyRootFilesystem=False)),
    "root user": ("non-root", "dev", lambda m: _pod_spec(m, "Deployment", "faceqa")["securityContext"]
                  .update(runAsUser=0)),
    "no liveness probe": ("probes", "dev", lambda m: _container(m, "Deployment", "faceqa").pop("livenessProbe")),
    "TCP probe on a gRPC service": ("probes", "dev", lambda m: _container(m, "Deployment", "ingest")
                                    .update(readinessProbe={"tcpSocket": {"port": 50051}})),
    "service account token mounted": ("service-account-token", "dev", lambda m: _pod_spec(m, "Deployment", "renderer")
                                      .update(automountServiceAccountToken=True)),
    "KEK mounted outside privacy": ("keystore", "dev", lambda m: _pod_spec(m, "Deployment", "ingest")["volumes"]
                                    .append({"name": "kek", "secret": {"secretName": "studio-kek"}})),
    "vault volume outside privacy": ("keystore", "dev", lambda m: _pod_spec(m, "Deployment", "trainer")["volumes"]
                                     .append({"name": "v", "persistentVolumeClaim": {"claimName": "studio-vault"}})),
    "missing disruption budget": ("pdb", "dev", lambda m: _drop(m, "PodDisruptionBudget", "faceqa")),
    "missing service": ("service", "dev", lambda m: _drop(m, "Service", "faceqa")),
    "no default deny": ("default-deny", "dev", lambda m: _drop(m, "NetworkPolicy", "default-deny")),
    "internal service exposed": ("exposure", "prod", lambda m: _set_service_type(m, "privacy", "LoadBalancer")),
    "policy open to anyone": ("exposure", "dev", lambda m: named(m, "NetworkPolicy", "faceqa-from-clients")
                              ["spec"]["ingress"][0].pop("from")),
    "dangling secret": ("references", "dev", lambda m: _drop(m, "Certificate", "studio-renderer-tls")),
    "wrong consumer": ("custom-resources", "prod", lambda m: _trigger(m, "trainer")["metadata"]
                       .update(consumer="trainers")),
    "wrong stream": ("custom-resources", "prod", lambda m: _trigger(m, "tritonserver")["metadata"]
                     .update(stream="TRAIN")),
    "no trigger on the held backlog": ("custom-resources", "prod", lambda m: _drop_trigger(m, "trainer",
                                                                                         "trainer-backlog")),
    "trainer scales to zero deaf to deletions": ("custom-resources", "dev", lambda m: _drop_trigger(m, "trainer",
                                                                                                 "purge-trainer")),
    "purge trigger waiting for a second deletion": ("custom-resources", "prod", lambda m: _trigger_on(
        m, "trainer", "purge-trainer")["metadata"].update(activationLagThreshold="1")),
    "purge trigger of another service": ("custom-resources", "prod", lambda m: _trigger_on(
        m, "trainer", "purge-trainer")["metadata"].update(consumer="purge-renderer")),
    "renderer scaled to zero": ("custom-resources", "prod", lambda m: named(m, "ScaledObject", "renderer")["spec"]
                                .update(minReplicaCount=0)),
    "min above max": ("custom-resources", "prod", lambda m: named(m, "ScaledObject", "trainer")["spec"]
                      .update(minReplicaCount=5, maxReplicaCount=2)),
    "bad lag threshold": ("custom-resources", "prod", lambda m: _trigger(m, "renderer")["metadata"]
                          .update(lagThreshold="many")),
    "scale target missing": ("custom-resources", "prod", lambda m: named(m, "ScaledObject", "trainer")["spec"]
                             ["scaleTargetRef"].update(name="trainers")),
    "trigger auth without its secret": ("custom-resources", "prod", lambda m: _drop(m, "Secret", "studio-keda-nats")),
    "certificate without client auth": ("custom-resources", "prod", lambda m: named(m, "Certificate",
                                        "studio-privacy-tls")["spec"].update(usages=["server auth"])),
    "certificate from a missing issuer": ("custom-resources", "prod", lambda m: _drop(m, "Issuer", "studio-ca")),
    "issuer of two types": ("custom-resources", "prod", lambda m: named(m, "Issuer", "studio-ca")["spec"]
                            .update(selfSigned={})),
    "service monitor on a missing port": ("custom-resources", "prod", lambda m: named(m, "ServiceMonitor",
                                          "tritonserver")["spec"]["endpoints"][0].update(port="prometheus")),
    "unknown field (strict schema)": ("schema", "dev", lambda m: _container(m, "Deployment", "ingest")
                                      .update(imagePullPolice="Always")),
    "wrong type (schema)": ("schema", "prod", lambda m: named(m, "Deployment", "ingest")["spec"]
                            .update(replicas="three")),
}


@pytest.mark.parametrize("case", sorted(PLANTED))
def test_each_check_fails_on_a_planted_violation(built, case):
    rule, overlay, plant = PLANTED[case]
    manifests = copy.deepcopy(built[overlay])
    plant(manifests)
    problems = validate.problems_in(manifests)
    assert rule in {p.rule for p in problems}, f"{case}: {problems}"
    assert all(p.rule == rule for p in problems), f"{case} tripped other rules too: {problems}"


def test_every_policy_rule_has_a_planted_case():
    from deploy.k8s.policy import RULES

    planted_rules = {rule for rule, _, _ in PLANTED.values()}
    assert set(RULES) <= planted_rules


def _bad_overlay(tmp_path: Path) -> Path:
    """A real overlay on top of dev, with a manifest file planting a privileged :latest container.
    kustomize takes a base only by relative path."""
    (tmp_path / "kustomization.yaml").write_text(textwrap.dedent(f"""\
        apiVersion: kustomize.config.k8s.io/v1beta1
        kind: Kustomization
        resources:
          - {os.path.relpath(OVERLAY_DIR / 'dev', tmp_path)}
          - debug-pod.yaml
        """))
    (tmp_path / "debug-pod.yaml").write_text(textwrap.dedent("""\
        apiVersion: v1
        kind: Pod
        metadata:
          name: debug
        spec:
          automountServiceAccountToken: false
          containers:
            - name: shell
              image: busybox:latest
              securityContext: {privileged: true}
        """))
    return tmp_path


def test_planted_manifest_file_fails_the_validator_cli(tmp_path, capsys):
    overlay = _bad_overlay(tmp_path)
    assert validate.main([str(overlay), "--json"]) == 1
    problems = json.loads(capsys.readouterr().out)[str(overlay)]
    assert {p["rule"] for p in problems} >= {"limits", "privileged", "image-tag", "non-root", "probes"}
    assert all(p["resource"] == "Pod/debug" for p in problems)


def test_broken_kustomization_is_a_build_problem(tmp_path):
    (tmp_path / "kustomization.yaml").write_text("resources:\n  - missing.yaml\n")
    problems = validate.validate_overlay(tmp_path)
    assert [p.rule for p in problems] == ["build"]
    assert "missing.yaml" in problems[0].message
