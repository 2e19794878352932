"""Validate the Kubernetes deployment offline: build every overlay with `kubectl kustomize`, check the
built-in kinds strictly against the bundled schemas (kubernetes-validate), check the custom resources
we rely on, and apply the policy rules.

    python -m deploy.k8s.validate [OVERLAY_DIR ...] [--json]
"""

from __future__ import annotations

import argparse
import functools
import json
import shutil
import subprocess
import sys
from pathlib import Path

import kubernetes_validate
import yaml

from deploy.k8s.custom_resources import custom_resource_problems
from deploy.k8s.manifests import Manifest, PodTemplate, Problem, named, pod_templates, ref
from deploy.k8s.policy import policy_problems
from services.common.nats_permissions import SERVICE_USERS, password_env, render_authorization

K8S_DIR = Path(__file__).resolve().parent
OVERLAYS = tuple(sorted(path for path in (K8S_DIR / "overlays").iterdir() if path.is_dir()))
# The oldest Kubernetes we support: native gRPC probes and PodSecurity admission are GA there.
KUBERNETES_VERSION = "1.30.0"
CUSTOM_GROUPS = frozenset({"keda.sh", "cert-manager.io", "monitoring.coreos.com"})
NATS_USERS_SECRET = "studio-nats-users"


class BuildError(RuntimeError):
    pass


def build(overlay: Path) -> list[Manifest]:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        raise BuildError("kubectl is not on PATH (it brings kustomize)")
    result = subprocess.run([kubectl, "kustomize", str(overlay)], capture_output=True, text=True, timeout=120)
    if result.returncode != 0:
        raise BuildError(f"kubectl kustomize {overlay} failed: {result.stderr.strip()}")
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def schema_problems(manifests: list[Manifest], version: str = KUBERNETES_VERSION) -> list[Problem]:
    problems = []
    for manifest in manifests:
        group = manifest.get("apiVersion", "").rpartition("/")[0]
        if group in CUSTOM_GROUPS:
            continue  # checked field by field in custom_resources.py
        message = _schema_message(json.dumps(manifest, sort_keys=True), version)
        if message:
            problems.append(Problem("schema", ref(manifest), message))
    return problems


@functools.lru_cache(maxsize=1024)
def _schema_message(manifest_json: str, version: str) -> str | None:
    """Schema validation is the slow part; the same manifest (as canonical JSON) is checked once."""
    manifest = json.loads(manifest_json)
    try:
        kubernetes_validate.validate(manifest, version, strict=True)
    except kubernetes_validate.SchemaNotFoundError:
        return f"no schema for {manifest.get('apiVersion')} {manifest.get('kind')} in Kubernetes {version}"
    except kubernetes_validate.ValidationError as error:
        return f"{'.'.join(str(part) for part in error.path) or '(top)'}: {error.message}"
    return None


def nats_user_problems(manifests: list[Manifest]) -> list[Problem]:
    """nats.conf holds the users services/common/nats_permissions.py renders, the NATS pods get every password,
    and each service pod its own user and only its own password."""
    problems = []
    config = named(manifests, "ConfigMap", "nats-config")
    if config is not None and render_authorization() not in config["data"]["nats.conf"]:
        problems.append(Problem("nats-users", ref(config), "authorization block differs from "
                                "`python -m services.common.nats_permissions`"))
    for pod in pod_templates(manifests):
        name = pod.owner["metadata"]["name"]
        wanted = _nats_server_env() if name == "nats" else _service_env(name) if name in SERVICE_USERS else {}
        if _nats_user_env(pod) != wanted:
            problems.append(Problem("nats-users", pod.ref, f"NATS user env {_nats_user_env(pod)}, wanted {wanted}"))
    return problems


def _nats_server_env() -> dict[str, object]:
    return {password_env(user): (NATS_USERS_SECRET, user) for user in SERVICE_USERS}


def _service_env(user: str) -> dict[str, object]:
    return {"STUDIO_NATS_USER": user, "STUDIO_NATS_PASSWORD": (NATS_USERS_SECRET, user)}


def _nats_user_env(pod: PodTemplate) -> dict[str, object]:
    """Env naming the NATS user, or read from the users' Secret (a whole-Secret envFrom or volume shows as '*')."""
    found: dict[str, object] = {}
    for container in pod.containers():
        found |= _container_nats_env(container)
    if any((volume.get("secret") or {}).get("secretName") == NATS_USERS_SECRET for volume in pod.volumes()):
        found["volume"] = "*"
    return found


def _container_nats_env(container: Manifest) -> dict[str, object]:
    found: dict[str, object] = {}
    for env in container.get("env") or []:
        key = (env.get("valueFrom") or {}).get("secretKeyRef") or {}
        if key.get("name") == NATS_USERS_SECRET:
            found[env["name"]] = (NATS_USERS_SECRET, key.get("key"))
        elif env["name"] == "STUDIO_NATS_USER":
            found[env["name"]] = env.get("value")
    sources = container.get("envFrom") or []
    if any((source.get("secretRef") or {}).get("name") == NATS_USERS_SECRET for source in sources):
        found["envFrom"] = "*"
    return found


def problems_in(manifests: list[Manifest]) -> list[Problem]:
    return (schema_problems(manifests) + custom_resource_problems(manifests) + policy_problems(manifests)
            + nats_user_problems(manifests))


def validate_overlay(overlay: Path) -> list[Problem]:
    try:
        return problems_in(build(overlay))
    except BuildError as error:
        return [Problem("build", str(overlay), str(error))]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("overlays", nargs="*", type=Path, help=f"default: {', '.join(p.name for p in OVERLAYS)}")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    report = {str(overlay): validate_overlay(overlay) for overlay in args.overlays or OVERLAYS}
    if args.json:
        print(json.dumps({name: [vars(p) for p in problems] for name, problems in report.items()}, indent=2))
    else:
        for name, problems in report.items():
            print(f"{name}: {'ok' if not problems else f'{len(problems)} problem(s)'}")
            for problem in problems:
                print(f"  {problem}")
    return 1 if any(report.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
