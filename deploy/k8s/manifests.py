"""Built manifests as plain dicts, and the small queries every check needs."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

Manifest = dict[str, Any]
# Kinds that carry a pod template at spec.template (Jobs in CronJobs one level deeper).
WORKLOAD_KINDS = ("Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job")
GPU_RESOURCE = "nvidia.com/gpu"


@dataclass(frozen=True)
class Problem:
    rule: str
    resource: str
    message: str

    def __str__(self) -> str:
        return f"[{self.rule}] {self.resource}: {self.message}"


def ref(manifest: Manifest) -> str:
    return f"{manifest.get('kind', '?')}/{manifest.get('metadata', {}).get('name', '?')}"


def of_kind(manifests: list[Manifest], kind: str) -> list[Manifest]:
    return [m for m in manifests if m.get("kind") == kind]


def named(manifests: list[Manifest], kind: str, name: str) -> Manifest | None:
    return next((m for m in of_kind(manifests, kind) if m["metadata"]["name"] == name), None)


@dataclass(frozen=True)
class PodTemplate:
    owner: Manifest
    metadata: Manifest
    spec: Manifest

    @property
    def ref(self) -> str:
        return ref(self.owner)

    @property
    def labels(self) -> dict[str, str]:
        return self.metadata.get("labels", {}) or {}

    def containers(self, *, init: bool = True) -> list[Manifest]:
        found = list(self.spec.get("containers", []))
        return found + list(self.spec.get("initContainers", [])) if init else found

    def uses_gpu(self) -> bool:
        return any(GPU_RESOURCE in (_resources(c).get("limits") or {}) or
                   GPU_RESOURCE in (_resources(c).get("requests") or {}) for c in self.containers())

    def volumes(self) -> list[Manifest]:
        return list(self.spec.get("volumes", []) or [])


def _resources(container: Manifest) -> Manifest:
    return container.get("resources") or {}


def pod_templates(manifests: list[Manifest]) -> Iterator[PodTemplate]:
    for manifest in manifests:
        kind = manifest.get("kind")
        if kind == "Pod":
            yield PodTemplate(manifest, manifest.get("metadata", {}), manifest.get("spec", {}))
        elif kind in WORKLOAD_KINDS:
            template = manifest.get("spec", {}).get("template", {})
            yield PodTemplate(manifest, template.get("metadata", {}), template.get("spec", {}))
        elif kind == "CronJob":
            template = manifest["spec"]["jobTemplate"]["spec"]["template"]
            yield PodTemplate(manifest, template.get("metadata", {}), template.get("spec", {}))


def selector_matches(selector: Manifest | None, labels: dict[str, str]) -> bool:
    """A Kubernetes label selector (matchLabels and matchExpressions) against a label set."""
    if selector is None:
        return False
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    return all(_expression_matches(e, labels) for e in selector.get("matchExpressions") or [])


def _expression_matches(expression: Manifest, labels: dict[str, str]) -> bool:
    key, operator, values = expression["key"], expression["operator"], expression.get("values") or []
    if operator == "In":
        return labels.get(key) in values
    if operator == "NotIn":
        return labels.get(key) not in values
    if operator == "Exists":
        return key in labels
    if operator == "DoesNotExist":
        return key not in labels
    raise ValueError(f"unknown selector operator {operator!r}")
