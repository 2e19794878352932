"""Per-service NATS users for production (Kubernetes), derived from services/common/topology.py.

The vault certifies a deletion once every purging service confirmed on studio.deletion.<id>.confirmed.<service>,
trusting the subject's last token: each service user may publish only its own confirmation, and only the vault may
request deletions. Everything else (JetStream API, $KV.>, _INBOX.>, acks) stays allowed, and so does subscribing.

JetStream's own API can rewrite what the DELETIONS stream holds without publishing on its subjects: deleting,
purging, restoring (a restore loads a snapshot with any messages in it) or updating the stream (a subject transform
or a source can map other subjects onto its confirmations) and deleting single messages. No service but the vault
does any of these, so the others are denied them too.
"""

from __future__ import annotations

from services.common.topology import (
    DELETIONS_STREAM,
    PURGING_SERVICES,
    VAULT_CONFIRMATIONS_CONSUMER,
    VAULT_SERVICE,
    deletion_confirmed_subject,
    deletion_requested_subject,
    purge_consumer,
)

SERVICE_USERS = (*PURGING_SERVICES, VAULT_SERVICE)
# JetStream API requests that change a stream's messages without a publish on the stream's subjects.
# An update could also map other subjects onto its confirmations (a subject transform, sources): Bus.declare leaves
# its configuration to the vault (bus._sets_limits_of).
STREAM_REWRITES = ("DELETE", "PURGE", "RESTORE", "MSG.DELETE", "UPDATE")
PASSWORD_ENV_PREFIX = "NATS_PASSWORD_"

Permissions = dict[str, dict[str, list[str]]]


def password_env(user: str) -> str:
    """The environment variable the NATS server reads `user`'s password from (NATS_PASSWORD_TRAINER)."""
    return f"{PASSWORD_ENV_PREFIX}{user.upper()}"


def denied_publish(user: str) -> list[str]:
    """Subjects `user` may not publish on: other services' confirmations, and for all but the vault deletion
    requests and rewrites of the DELETIONS stream."""
    if user not in SERVICE_USERS:
        raise ValueError(f"{user!r} is not a service user ({', '.join(SERVICE_USERS)})")
    others = [deletion_confirmed_subject("*", service) for service in PURGING_SERVICES if service != user]
    if user == VAULT_SERVICE:
        return [*others, *_others_deliveries(user)]
    rewrites = [f"$JS.API.STREAM.{action}.{DELETIONS_STREAM.name}" for action in STREAM_REWRITES]
    return [*others, deletion_requested_subject("*"), *rewrites, *_others_deliveries(user)]


def _others_deliveries(user: str) -> list[str]:
    """Acknowledging or deleting another service's DELETIONS consumer: its purge (or the vault's reading of the
    confirmations) would never happen, and the deletion never be certified."""
    owned = {purge_consumer(service).durable_name: service for service in PURGING_SERVICES}
    owned[VAULT_CONFIRMATIONS_CONSUMER.durable_name] = VAULT_SERVICE
    stream = DELETIONS_STREAM.name
    return [subject for durable, owner in owned.items() if owner != user
            for subject in (f"$JS.ACK.{stream}.{durable}.>", f"$JS.API.CONSUMER.DELETE.{stream}.{durable}")]


def permissions(user: str) -> Permissions:
    return {"publish": {"allow": [">"], "deny": denied_publish(user)}, "subscribe": {"allow": [">"]}}


def all_permissions() -> dict[str, Permissions]:
    return {user: permissions(user) for user in SERVICE_USERS}


def _subject_list(key: str, subjects: list[str], indent: str) -> list[str]:
    return [f"{indent}{key}: [", *(f'{indent}  "{subject}"' for subject in subjects), f"{indent}]"]


def _user_entry(user: str) -> list[str]:
    granted = permissions(user)
    return [
        "    {",
        f"      user: {user}",
        f"      password: ${password_env(user)}",
        "      permissions: {",
        "        publish: {",
        *_subject_list("allow", granted["publish"]["allow"], " " * 10),
        *_subject_list("deny", granted["publish"]["deny"], " " * 10),
        "        }",
        "        subscribe: {",
        *_subject_list("allow", granted["subscribe"]["allow"], " " * 10),
        "        }",
        "      }",
        "    }",
    ]


def render_authorization() -> str:
    """nats.conf's `authorization` block: one user per service, its password from the server's environment."""
    lines = ["authorization {", "  users: ["]
    for user in SERVICE_USERS:
        lines += _user_entry(user)
    return "\n".join([*lines, "  ]", "}"]) + "\n"


if __name__ == "__main__":
    print(render_authorization(), end="")
