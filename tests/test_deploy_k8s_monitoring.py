"""The deployment alerts before the vault's volume fills (a full vault refuses every request, deletions
included) and when the vault refuses for want of space; the alert rules are checked like the other custom
resources: planted mistakes are found."""

from __future__ import annotations

import copy
import re
from collections.abc import Callable

import pytest

from deploy.k8s import validate
from deploy.k8s.manifests import Manifest, named, of_kind
from services.privacy.server import STORAGE_FULL

VAULT_CLAIM = "studio-vault"


@pytest.fixture(scope="module")
def built() -> dict[str, list[Manifest]]:
    return {overlay.name: validate.build(overlay) for overlay in validate.OVERLAYS}


def _alerts(manifests: list[Manifest]) -> dict[str, Manifest]:
    return {rule["alert"]: rule for rule_set in of_kind(manifests, "PrometheusRule")
            for group in rule_set["spec"]["groups"] for rule in group["rules"] if "alert" in rule}


def _vault_rule(manifests: list[Manifest]) -> Manifest:
    return named(manifests, "PrometheusRule", "studio-vault-storage")["spec"]["groups"][0]["rules"][0]


@pytest.mark.parametrize("overlay", ["dev", "prod"])
def test_the_vault_volume_alerts_below_a_fifth_free(built, overlay):
    manifests = built[overlay]
    assert named(manifests, "PersistentVolumeClaim", VAULT_CLAIM) is not None
    filling = _alerts(manifests)["StudioVaultVolumeFilling"]
    expr = " ".join(filling["expr"].split())
    selector = f'{{namespace="studio", persistentvolumeclaim="{VAULT_CLAIM}"}}'
    assert f"kubelet_volume_stats_available_bytes{selector} / kubelet_volume_stats_capacity_bytes{selector}" in expr
    assert re.search(r"< 0\.2\d*$", expr) and filling["for"] == "15m" and filling["labels"]["severity"] == "warning"
    assert "docs/operations.md" in filling["annotations"]["description"]
    soon = _alerts(manifests)["StudioVaultVolumeFullWithinADay"]
    assert "predict_linear" in soon["expr"] and soon["labels"]["severity"] == "critical"
    refusing = _alerts(manifests)["StudioVaultStorageFull"]  # on the vault's own count of refusals
    assert f"{STORAGE_FULL.describe()[0].name}_total{{" in refusing["expr"]


Plant = Callable[[list[Manifest]], None]
PLANTED: dict[str, Plant] = {
    "alert on a volume claim not defined here": lambda m: _vault_rule(m).update(
        expr=_vault_rule(m)["expr"].replace(VAULT_CLAIM, "studio-vaults")),
    "alert on another namespace": lambda m: _vault_rule(m).update(
        expr=_vault_rule(m)["expr"].replace('namespace="studio"', 'namespace="default"')),
    "alert without a for duration": lambda m: _vault_rule(m).update({"for": "a while"}),
    "alert without a severity": lambda m: _vault_rule(m)["labels"].pop("severity"),
    "alert without a summary": lambda m: _vault_rule(m)["annotations"].pop("summary"),
    "rule without an expression": lambda m: _vault_rule(m).pop("expr"),
}


@pytest.mark.parametrize("case", sorted(PLANTED))
def test_each_alert_check_fails_on_a_planted_mistake(built, case):
    manifests = copy.deepcopy(built["prod"])
    PLANTED[case](manifests)
    problems = validate.problems_in(manifests)
    assert [p.rule for p in problems] == ["custom-resources"], f"{case}: {problems}"
    assert problems[0].resource == "PrometheusRule/studio-vault-storage"
