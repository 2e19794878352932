"""Checks of the custom resources we rely on (KEDA, cert-manager, Prometheus Operator): no schemas for
them ship offline, so each field the cluster needs is checked here, with its cross-references."""

from __future__ import annotations

import re

from deploy.k8s.manifests import Manifest, Problem, named, of_kind, ref, selector_matches
from services.common.topology import (
    DELETIONS_STREAM,
    PENDING_STREAM,
    PURGING_SERVICES,
    RENDER_QUEUE,
    TRAIN_QUEUE,
    WorkQueue,
    backlog_consumer,
    purge_consumer,
)

# Which work queue scales which Deployment: the names must be topology.py's, or KEDA reads a lag of zero.
SCALED_QUEUES: dict[str, WorkQueue] = {"trainer": TRAIN_QUEUE, "renderer": RENDER_QUEUE, "tritonserver": RENDER_QUEUE}
MAY_SCALE_TO_ZERO = frozenset({"trainer"})
KEDA_NATS_PARAMETERS = frozenset({"natsServerMonitoringEndpoint", "account"})
ISSUER_TYPES = ("selfSigned", "ca", "acme", "vault", "venafi")
MTLS_USAGES = frozenset({"server auth", "client auth"})
RULE = "custom-resources"
PROMETHEUS_DURATION = re.compile(r"([0-9]+(ms|[smhdwy]))+")
ALERT_SEVERITIES = frozenset({"info", "warning", "critical"})


def _problem(manifest: Manifest, message: str) -> Problem:
    return Problem(RULE, ref(manifest), message)


def scaled_object_problems(manifests: list[Manifest]) -> list[Problem]:
    problems = []
    for scaled in of_kind(manifests, "ScaledObject"):
        spec = scaled.get("spec", {})
        target = (spec.get("scaleTargetRef") or {}).get("name")
        if not named(manifests, "Deployment", target or ""):
            problems.append(_problem(scaled, f"scaleTargetRef {target!r} is not a Deployment here"))
        low, high = spec.get("minReplicaCount", 0), spec.get("maxReplicaCount", 100)
        if not (isinstance(low, int) and isinstance(high, int) and 0 <= low <= high and high >= 1):
            problems.append(_problem(scaled, f"replica bounds {low}..{high} are not 0 <= min <= max, max >= 1"))
        if low == 0 and target not in MAY_SCALE_TO_ZERO:
            problems.append(_problem(scaled, f"{target} may not scale to zero"))
        triggers = spec.get("triggers") or []
        if not triggers:
            problems.append(_problem(scaled, "no triggers"))
        for trigger in triggers:
            problems += _trigger_problems(manifests, scaled, target, trigger)
        problems += _backlog_problems(scaled, target, triggers) + _purge_problems(scaled, target, low, triggers)
    return problems


def _source(trigger: Manifest) -> tuple[str | None, str | None]:
    metadata = trigger.get("metadata") or {}
    return metadata.get("stream"), metadata.get("consumer")


def _purge_source(target: str | None) -> tuple[str, str] | None:
    """A purging service's deletion consumer (the Deployment is named as the service): its purges run in its pods."""
    if target not in PURGING_SERVICES:
        return None
    return DELETIONS_STREAM.name, purge_consumer(target).durable_name


def _scaling_sources(queue: WorkQueue, target: str | None) -> set[tuple[str, str]]:
    """The work queue itself (jobs waiting or running), its held backlog in PENDING, and the deletions a purging
    service has not purged yet."""
    sources = {(queue.stream, queue.durable), (PENDING_STREAM.name, backlog_consumer(queue).durable_name)}
    purge = _purge_source(target)
    return sources | {purge} if purge else sources


def _purge_problems(scaled: Manifest, target: str | None, low: object, triggers: list) -> list[Problem]:
    """The vault certifies a deletion once every purging service confirmed it: one scaled to zero must be started
    by a deletion waiting for its purge, or no certificate comes while nothing else wakes it."""
    purge = _purge_source(target)
    if low != 0 or purge is None:
        return []
    found = [trigger for trigger in triggers if _source(trigger) == purge]
    if not found:
        return [_problem(scaled, f"{target} scales to zero but has no trigger on its purge consumer "
                                 f"{purge[0]}/{purge[1]}: deletions wait uncertified while no pod runs")]
    activation = str((found[0].get("metadata") or {}).get("activationLagThreshold", "0"))
    if activation != "0":
        return [_problem(scaled, f"activationLagThreshold {activation!r} on {purge[0]}/{purge[1]}: one deletion "
                                 "must start a pod")]
    return []


def _backlog_problems(scaled: Manifest, target: str | None, triggers: list) -> list[Problem]:
    """The dispatcher keeps a work queue about as deep as its live workers, so its lag alone never
    asks for more workers: the held backlog must be a trigger too."""
    queue = SCALED_QUEUES.get(target or "")
    if queue is None:
        return []
    backlog = (PENDING_STREAM.name, backlog_consumer(queue).durable_name)
    if backlog in {_source(trigger) for trigger in triggers}:
        return []
    return [_problem(scaled, f"no trigger on the held backlog {backlog[0]}/{backlog[1]}: the work queue alone "
                             "never grows past the live workers (services/ingest/scheduling/dispatcher.py)")]


def _trigger_problems(manifests: list[Manifest], scaled: Manifest, target: str | None, trigger: Manifest) -> list:
    if trigger.get("type") != "nats-jetstream":
        return [_problem(scaled, f"trigger type {trigger.get('type')!r}: only nats-jetstream is expected")]
    problems = []
    metadata = trigger.get("metadata") or {}
    queue = SCALED_QUEUES.get(target or "")
    if queue and _source(trigger) not in _scaling_sources(queue, target):
        problems.append(_problem(scaled, f"scales on {metadata.get('stream')}/{metadata.get('consumer')}, but "
                                 f"{target} consumes {queue.stream}/{queue.durable} (services/common/topology.py)"))
    threshold = str(metadata.get("lagThreshold", ""))
    if not (threshold.isdigit() and int(threshold) > 0):
        problems.append(_problem(scaled, f"lagThreshold {threshold!r} is not a positive integer string"))
    auth = (trigger.get("authenticationRef") or {}).get("name")
    has_endpoint = "natsServerMonitoringEndpoint" in metadata
    if auth and not named(manifests, "TriggerAuthentication", auth):
        problems.append(_problem(scaled, f"authenticationRef {auth!r} is not a TriggerAuthentication here"))
    if not auth and not has_endpoint:
        problems.append(_problem(scaled, "no natsServerMonitoringEndpoint (in metadata or a TriggerAuthentication)"))
    return problems


def trigger_authentication_problems(manifests: list[Manifest]) -> list[Problem]:
    problems = []
    for auth in of_kind(manifests, "TriggerAuthentication"):
        refs = (auth.get("spec") or {}).get("secretTargetRef") or []
        if not refs:
            problems.append(_problem(auth, "no secretTargetRef"))
        for entry in refs:
            parameter, secret_name, key = entry.get("parameter"), entry.get("name"), entry.get("key")
            if parameter not in KEDA_NATS_PARAMETERS:
                problems.append(_problem(auth, f"parameter {parameter!r} is not one nats-jetstream reads"))
            secret = named(manifests, "Secret", secret_name or "")
            if secret is None:
                problems.append(_problem(auth, f"Secret {secret_name!r} is not defined here"))
            elif key not in {**(secret.get("data") or {}), **(secret.get("stringData") or {})}:
                problems.append(_problem(auth, f"Secret {secret_name!r} has no key {key!r}"))
    return problems


def issuer_problems(manifests: list[Manifest]) -> list[Problem]:
    problems = []
    for issuer in of_kind(manifests, "Issuer") + of_kind(manifests, "ClusterIssuer"):
        kinds = [name for name in ISSUER_TYPES if name in (issuer.get("spec") or {})]
        if len(kinds) != 1:
            problems.append(_problem(issuer, f"needs exactly one issuer type of {ISSUER_TYPES}, has {kinds}"))
        elif kinds == ["ca"] and not issuer["spec"]["ca"].get("secretName"):
            problems.append(_problem(issuer, "ca issuer without secretName"))
    return problems


def certificate_problems(manifests: list[Manifest]) -> list[Problem]:
    problems = []
    for cert in of_kind(manifests, "Certificate"):
        spec = cert.get("spec") or {}
        issuer = spec.get("issuerRef") or {}
        if not spec.get("secretName"):
            problems.append(_problem(cert, "no secretName"))
        issuer_kind = issuer.get("kind", "Issuer")
        if issuer_kind == "Issuer" and not named(manifests, "Issuer", issuer.get("name", "")):
            problems.append(_problem(cert, f"issuerRef {issuer.get('name')!r} is not an Issuer here"))
        if spec.get("isCA"):
            continue
        if not spec.get("dnsNames"):
            problems.append(_problem(cert, "no dnsNames"))
        missing = MTLS_USAGES - set(spec.get("usages") or [])
        if missing:
            problems.append(_problem(cert, f"usages lack {sorted(missing)} needed for service mTLS"))
    return problems


def service_monitor_problems(manifests: list[Manifest]) -> list[Problem]:
    problems = []
    services = of_kind(manifests, "Service")
    for monitor in of_kind(manifests, "ServiceMonitor"):
        spec = monitor.get("spec") or {}
        selected = [s for s in services if selector_matches(spec.get("selector"), s["metadata"].get("labels", {}))]
        if not selected:
            problems.append(_problem(monitor, "its selector matches no Service"))
        endpoints = spec.get("endpoints") or []
        if not endpoints:
            problems.append(_problem(monitor, "no endpoints"))
        for endpoint in endpoints:
            port = endpoint.get("port")
            if selected and not any(port in _port_names(s) for s in selected):
                problems.append(_problem(monitor, f"endpoint port {port!r} is not a named port of a selected Service"))
    return problems


def prometheus_rule_problems(manifests: list[Manifest]) -> list[Problem]:
    problems = []
    for rule_set in of_kind(manifests, "PrometheusRule"):
        groups = (rule_set.get("spec") or {}).get("groups") or []
        if not groups:
            problems.append(_problem(rule_set, "no rule groups"))
        for group in groups:
            if not group.get("name") or not group.get("rules"):
                problems.append(_problem(rule_set, f"group {group.get('name')!r} needs a name and rules"))
            for rule in group.get("rules") or []:
                problems += [_problem(rule_set, f"{rule.get('alert') or rule.get('record')!r}: {message}")
                             for message in _rule_messages(manifests, rule_set, rule)]
    return problems


def _rule_messages(manifests: list[Manifest], rule_set: Manifest, rule: Manifest) -> list[str]:
    """An alert needs an expression, a `for` duration, a severity and a summary; a volume it watches must be a
    PersistentVolumeClaim here, in the namespace its expression names, or the alert never fires."""
    expr, messages = rule.get("expr"), []
    if not isinstance(expr, str) or not expr.strip():
        return ["no expr"]
    if "alert" in rule:
        if not PROMETHEUS_DURATION.fullmatch(str(rule.get("for", ""))):
            messages.append(f"for {rule.get('for')!r} is not a Prometheus duration")
        if (rule.get("labels") or {}).get("severity") not in ALERT_SEVERITIES:
            messages.append(f"severity must be one of {sorted(ALERT_SEVERITIES)}")
        if not (rule.get("annotations") or {}).get("summary"):
            messages.append("no summary annotation")
    namespace = rule_set["metadata"].get("namespace")
    for claim in sorted(set(re.findall(r'persistentvolumeclaim="([^"]*)"', expr))):
        if not named(manifests, "PersistentVolumeClaim", claim):
            messages.append(f"watches PersistentVolumeClaim {claim!r}, which is not defined here")
    messages += [f"selects namespace {name!r}, but the studio runs in {namespace!r}"
                 for name in sorted(set(re.findall(r'namespace="([^"]*)"', expr))) if name != namespace]
    return messages


def _port_names(service: Manifest) -> set[str]:
    return {p.get("name") for p in service["spec"].get("ports", [])}


def custom_resource_problems(manifests: list[Manifest]) -> list[Problem]:
    return (scaled_object_problems(manifests) + trigger_authentication_problems(manifests)
            + issuer_problems(manifests) + certificate_problems(manifests) + service_monitor_problems(manifests)
            + prometheus_rule_problems(manifests))
