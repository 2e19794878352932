"""Policy rules for the built manifests. Each rule names itself in the problems it reports, so a test
can plant one violation and see exactly that rule fail."""

from __future__ import annotations

from collections.abc import Callable

from deploy.k8s.manifests import GPU_RESOURCE, Manifest, PodTemplate, Problem, of_kind, pod_templates, ref
from deploy.k8s.manifests import selector_matches as matches

GPU_TAINT_KEY = GPU_RESOURCE
# The vault's key store and keys: mounted by privacy and by no other pod.
KEYSTORE_CLAIMS = frozenset({"studio-vault"})
KEYSTORE_SECRETS = frozenset({"studio-kek", "studio-signing-key", "studio-provenance"})
KEYSTORE_OWNER = "privacy"
PUBLIC_SERVICES = frozenset({"ingest"})
NAME_LABEL = "app.kubernetes.io/name"

Rule = Callable[[list[Manifest]], list[Problem]]


def _per_container(rule: str, check: Callable[[PodTemplate, Manifest], str | None]) -> Rule:
    def run(manifests: list[Manifest]) -> list[Problem]:
        problems = []
        for pod in pod_templates(manifests):
            for container in pod.containers():
                message = check(pod, container)
                if message:
                    problems.append(Problem(rule, pod.ref, f"container {container.get('name')!r}: {message}"))
        return problems

    return run


def _limits(pod: PodTemplate, container: Manifest) -> str | None:
    limits = (container.get("resources") or {}).get("limits") or {}
    missing = [name for name in ("cpu", "memory") if name not in limits]
    return f"no {' or '.join(missing)} limit" if missing else None


def _privileged(pod: PodTemplate, container: Manifest) -> str | None:
    context = container.get("securityContext") or {}
    if context.get("privileged"):
        return "runs privileged"
    if context.get("allowPrivilegeEscalation") is not False:
        return "allowPrivilegeEscalation is not false"
    host = [name for name in ("hostNetwork", "hostPID", "hostIPC") if pod.spec.get(name)]
    return f"pod shares the host's {', '.join(host)}" if host else None


def _image_tag(pod: PodTemplate, container: Manifest) -> str | None:
    image = container.get("image", "")
    name, _, digest = image.partition("@")
    last = name.rsplit("/", 1)[-1]
    tag = last.partition(":")[2]
    if tag == "latest":
        return f"image {image!r} uses the :latest tag"
    if not tag and not digest:
        return f"image {image!r} has neither a pinned tag nor a digest"
    return None


def _non_root_read_only(pod: PodTemplate, container: Manifest) -> str | None:
    context = container.get("securityContext") or {}
    pod_context = pod.spec.get("securityContext") or {}
    if not (context.get("runAsNonRoot") or pod_context.get("runAsNonRoot")):
        return "runAsNonRoot is not set"
    if context.get("runAsUser", pod_context.get("runAsUser")) in (None, 0):
        return "no non-zero runAsUser"
    if context.get("readOnlyRootFilesystem") is not True:
        return "root filesystem is writable"
    if "ALL" not in ((context.get("capabilities") or {}).get("drop") or []):
        return "capabilities are not dropped (drop: [ALL])"
    return None


def gpu_tolerates_taint(manifests: list[Manifest]) -> list[Problem]:
    problems = []
    for pod in pod_templates(manifests):
        if not pod.uses_gpu():
            continue
        tolerations = pod.spec.get("tolerations") or []
        if not any(_tolerates_gpu_taint(t) for t in tolerations):
            problems.append(Problem("gpu-toleration", pod.ref, f"uses {GPU_RESOURCE} but does not tolerate "
                                    f"the {GPU_TAINT_KEY}:NoSchedule taint"))
        if not pod.spec.get("nodeSelector") and not (pod.spec.get("affinity") or {}).get("nodeAffinity"):
            problems.append(Problem("gpu-toleration", pod.ref, "uses a GPU but selects no GPU node"))
        if not any(_limits_gpu(c) for c in pod.containers()):
            problems.append(Problem("gpu-toleration", pod.ref, f"requests {GPU_RESOURCE} without a limit"))
    return problems


def _tolerates_gpu_taint(toleration: Manifest) -> bool:
    key_ok = toleration.get("key") == GPU_TAINT_KEY or (
        toleration.get("operator") == "Exists" and not toleration.get("key")
    )
    return key_ok and toleration.get("effect") in (None, "", "NoSchedule")


def _limits_gpu(container: Manifest) -> bool:
    return GPU_RESOURCE in ((container.get("resources") or {}).get("limits") or {})


def gpu_shared_memory(manifests: list[Manifest]) -> list[Problem]:
    """GPU pods (Triton's python backend, PyTorch data loading) need a sized, memory-backed /dev/shm."""
    problems = []
    for pod in pod_templates(manifests):
        if not pod.uses_gpu():
            continue
        memory_volumes = {v["name"]: v for v in pod.volumes()
                          if (v.get("emptyDir") or {}).get("medium") == "Memory"}
        mounted = [m for c in pod.containers(init=False) for m in c.get("volumeMounts", [])
                   if m.get("mountPath") == "/dev/shm" and m.get("name") in memory_volumes]
        if not mounted:
            problems.append(Problem("gpu-shm", pod.ref, "no memory-backed emptyDir mounted at /dev/shm"))
        elif any(not memory_volumes[m["name"]]["emptyDir"].get("sizeLimit") for m in mounted):
            problems.append(Problem("gpu-shm", pod.ref, "the /dev/shm emptyDir has no sizeLimit"))
        else:
            problems += _shm_within_memory_limit(pod, mounted, memory_volumes)
    return problems


def _shm_within_memory_limit(pod: PodTemplate, mounts: list[Manifest], volumes: dict[str, Manifest]) -> list:
    """Memory-backed emptyDir pages count against the container's memory limit."""
    problems = []
    for container in pod.containers(init=False):
        limit = ((container.get("resources") or {}).get("limits") or {}).get("memory")
        for mount in [m for m in container.get("volumeMounts", []) if m in mounts and limit]:
            if quantity(volumes[mount["name"]]["emptyDir"]["sizeLimit"]) >= quantity(limit):
                problems.append(Problem("gpu-shm", pod.ref, f"/dev/shm of {container['name']!r} is not smaller "
                                        f"than its memory limit {limit}"))
    return problems


_SUFFIXES = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12}


def quantity(value: str | int) -> float:
    """A Kubernetes memory quantity in bytes ("8Gi", "512M", 1024)."""
    text = str(value)
    for suffix in sorted(_SUFFIXES, key=len, reverse=True):
        if text.endswith(suffix):
            return float(text[: -len(suffix)]) * _SUFFIXES[suffix]
    return float(text)


def probes(manifests: list[Manifest]) -> list[Problem]:
    problems = []
    for pod in pod_templates(manifests):
        for container in pod.containers(init=False):
            for probe in ("readinessProbe", "livenessProbe"):
                if probe not in container:
                    problems.append(Problem("probes", pod.ref, f"container {container['name']!r} has no {probe}"))
            grpc_ports = [p for p in container.get("ports", []) if p.get("name") == "grpc"]
            served_by_us = not container.get("command")  # our images: python -m services.<name>
            if grpc_ports and served_by_us and "grpc" not in (container.get("readinessProbe") or {}):
                problems.append(Problem("probes", pod.ref, f"container {container['name']!r} serves gRPC "
                                        "but its readiness probe is not a gRPC health check"))
    return problems


def service_account_tokens(manifests: list[Manifest]) -> list[Problem]:
    accounts = {m["metadata"]["name"]: m for m in of_kind(manifests, "ServiceAccount")}
    problems = []
    for pod in pod_templates(manifests):
        account = accounts.get(pod.spec.get("serviceAccountName", "default"), {})
        automount = pod.spec.get("automountServiceAccountToken", account.get("automountServiceAccountToken"))
        if automount is not False:
            problems.append(Problem("service-account-token", pod.ref, "mounts a service account token it "
                                    "does not need (set automountServiceAccountToken: false)"))
    return problems


def keystore_owner(manifests: list[Manifest]) -> list[Problem]:
    problems = []
    for pod in pod_templates(manifests):
        if pod.labels.get(NAME_LABEL) == KEYSTORE_OWNER:
            continue
        for volume in pod.volumes():
            claim = (volume.get("persistentVolumeClaim") or {}).get("claimName")
            secret = (volume.get("secret") or {}).get("secretName")
            if claim in KEYSTORE_CLAIMS or secret in KEYSTORE_SECRETS:
                problems.append(Problem("keystore", pod.ref, f"mounts the vault's {claim or secret}; only "
                                        f"{KEYSTORE_OWNER} may"))
        for container in pod.containers():
            for env in container.get("env", []):
                secret = ((env.get("valueFrom") or {}).get("secretKeyRef") or {}).get("name")
                if secret in KEYSTORE_SECRETS:
                    problems.append(Problem("keystore", pod.ref, f"reads the vault's {secret}; only "
                                            f"{KEYSTORE_OWNER} may"))
    return problems


def disruption_budgets(manifests: list[Manifest]) -> list[Problem]:
    budgets = of_kind(manifests, "PodDisruptionBudget")
    return [Problem("pdb", pod.ref, "no PodDisruptionBudget selects its pods")
            for pod in pod_templates(manifests)
            if pod.owner["kind"] in ("Deployment", "StatefulSet")
            and not any(matches(b["spec"].get("selector"), pod.labels) for b in budgets)]


def services_front_workloads(manifests: list[Manifest]) -> list[Problem]:
    services = of_kind(manifests, "Service")
    return [Problem("service", pod.ref, "no Service selects its pods")
            for pod in pod_templates(manifests)
            if pod.owner["kind"] in ("Deployment", "StatefulSet")
            and not any(matches({"matchLabels": s["spec"].get("selector")}, pod.labels) for s in services)]


def default_deny(manifests: list[Manifest]) -> list[Problem]:
    for policy in of_kind(manifests, "NetworkPolicy"):
        spec = policy["spec"]
        if (spec.get("podSelector") == {} and set(spec.get("policyTypes", [])) == {"Ingress", "Egress"}
                and not spec.get("ingress") and not spec.get("egress")):
            return []
    return [Problem("default-deny", "NetworkPolicy/*", "no default-deny policy (all pods, ingress and egress)")]


def exposure(manifests: list[Manifest]) -> list[Problem]:
    """Only the public services take traffic from outside: by Service type and by NetworkPolicy."""
    problems = []
    for service in of_kind(manifests, "Service"):
        public = service["spec"].get("type") in ("LoadBalancer", "NodePort") or service["spec"].get("externalIPs")
        if public and service["metadata"]["name"] not in PUBLIC_SERVICES:
            problems.append(Problem("exposure", ref(service), "exposed outside the cluster"))
    for policy in of_kind(manifests, "NetworkPolicy"):
        target = (policy["spec"].get("podSelector") or {}).get("matchLabels", {}).get(NAME_LABEL)
        for rule in policy["spec"].get("ingress") or []:
            if not rule.get("from") and target not in PUBLIC_SERVICES:
                problems.append(Problem("exposure", ref(policy), "admits traffic from anywhere"))
    return problems


def references(manifests: list[Manifest]) -> list[Problem]:
    """Every Secret, ConfigMap and claim a pod names is defined here (a Certificate makes its Secret)."""
    secrets = {m["metadata"]["name"] for m in of_kind(manifests, "Secret")}
    secrets |= {c["spec"].get("secretName") for c in of_kind(manifests, "Certificate")}
    config_maps = {m["metadata"]["name"] for m in of_kind(manifests, "ConfigMap")}
    claims = {m["metadata"]["name"] for m in of_kind(manifests, "PersistentVolumeClaim")}
    problems = []
    for pod in pod_templates(manifests):
        wanted = [("Secret", name, secrets) for name in _secret_names(pod)]
        wanted += [("ConfigMap", name, config_maps) for name in _config_map_names(pod)]
        wanted += [("PersistentVolumeClaim", (v.get("persistentVolumeClaim") or {}).get("claimName"), claims)
                   for v in pod.volumes() if v.get("persistentVolumeClaim")]
        problems += [Problem("references", pod.ref, f"{kind} {name!r} is not defined")
                     for kind, name, known in wanted if name not in known]
    return problems


def _secret_names(pod: PodTemplate) -> set[str]:
    names = {(v.get("secret") or {}).get("secretName") for v in pod.volumes() if v.get("secret")}
    for container in pod.containers():
        names |= {((e.get("valueFrom") or {}).get("secretKeyRef") or {}).get("name") for e in container.get("env", [])}
        names |= {(e.get("secretRef") or {}).get("name") for e in container.get("envFrom", [])}
    return names - {None}


def _config_map_names(pod: PodTemplate) -> set[str]:
    names = {(v.get("configMap") or {}).get("name") for v in pod.volumes() if v.get("configMap")}
    for container in pod.containers():
        names |= {(e.get("configMapRef") or {}).get("name") for e in container.get("envFrom", [])}
    return names - {None}


RULES: dict[str, Rule] = {
    "limits": _per_container("limits", _limits),
    "privileged": _per_container("privileged", _privileged),
    "image-tag": _per_container("image-tag", _image_tag),
    "non-root": _per_container("non-root", _non_root_read_only),
    "gpu-toleration": gpu_tolerates_taint,
    "gpu-shm": gpu_shared_memory,
    "probes": probes,
    "service-account-token": service_account_tokens,
    "keystore": keystore_owner,
    "pdb": disruption_budgets,
    "service": services_front_workloads,
    "default-deny": default_deny,
    "exposure": exposure,
    "references": references,
}


def policy_problems(manifests: list[Manifest]) -> list[Problem]:
    return [problem for rule in RULES.values() for problem in rule(manifests)]
