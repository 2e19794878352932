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
from deploy.k8s.manifests import Manifest, Problem, ref
from deploy.k8s.policy import policy_problems

K8S_DIR = Path(__file__).resolve().parent
OVERLAYS = tuple(sorted(path for path in (K8S_DIR / "overlays").iterdir() if path.is_dir()))
# The oldest Kubernetes we support: native gRPC probes and PodSecurity admission are GA there.
KUBERNETES_VERSION = "1.30.0"
CUSTOM_GROUPS = frozenset({"keda.sh", "cert-manager.io", "monitoring.coreos.com"})


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


def problems_in(manifests: list[Manifest]) -> list[Problem]:
    return schema_problems(manifests) + custom_resource_problems(manifests) + policy_problems(manifests)


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
