#!/usr/bin/env bash
# Fill the studio's Secrets in the cluster (namespace studio): the vault's master key (KEK), its
# Ed25519 signing key, the service tokens, the NATS users' passwords, MinIO's credentials and the blob URL built from them.
# Key material is generated here, goes straight to the API server and is never printed or kept.
# A Secret that already holds data is left alone: replacing the KEK would make every stored byte
# unreadable. Rotate keys with `studio keys rotate` (docs/operations.md), not with this script.
#
#   deploy/k8s/make-secrets.sh [--dev] [--namespace studio] [--provenance-key FILE --provenance-chain FILE]
#   --dev   also the dev overlay's bootstrap tenant key (read it back as docs/operations.md shows), and a
#           self-signed development C2PA chain when no provenance key is given
#   --provenance-key/--provenance-chain   the studio's C2PA signing key and certificate chain (production)
set -euo pipefail

namespace=studio
dev=false
provenance_key=""
provenance_chain=""
while [ $# -gt 0 ]; do
  case "$1" in
    --dev) dev=true ;;
    --namespace) namespace="$2"; shift ;;
    --provenance-key) provenance_key="$2"; shift ;;
    --provenance-chain) provenance_chain="$2"; shift ;;
    *) echo "usage: $0 [--dev] [--namespace NAME] [--provenance-key FILE --provenance-chain FILE]" >&2; exit 2 ;;
  esac
  shift
done

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
umask 077

random_token() { openssl rand -base64 32 | tr '+/' '-_' | tr -d '=\n'; }

has_data() {
  [ -n "$(kubectl -n "$namespace" get secret "$1" -o jsonpath='{.data}' 2>/dev/null)" ]
}

# Never `kubectl apply`: it would keep the key material in the last-applied-configuration annotation, and the
# next `kubectl apply -k` (whose Secret shells hold no data) would then delete the data. A shell that exists gets
# its data merged in; a Secret that does not is created. Neither records a last-applied configuration.
apply_secret() {  # NAME then kubectl create secret generic arguments
  local name="$1"; shift
  if has_data "$name"; then
    echo "secret/$name already holds data: left as it is"
    return
  fi
  kubectl -n "$namespace" create secret generic "$name" "$@" --dry-run=client -o json > "$work/$name.json"
  if kubectl -n "$namespace" get secret "$name" >/dev/null 2>&1; then
    python3 -c 'import json, sys; print(json.dumps({"data": json.load(open(sys.argv[1]))["data"]}))' \
      "$work/$name.json" > "$work/$name.patch.json"
    kubectl -n "$namespace" patch secret "$name" --type merge --patch-file "$work/$name.patch.json" >/dev/null
  else
    kubectl -n "$namespace" create -f "$work/$name.json" >/dev/null
  fi
  echo "secret/$name written"
}

kubectl get namespace "$namespace" >/dev/null 2>&1 || kubectl create namespace "$namespace"

printf '{"current": 1, "keys": {"1": "%s"}}' "$(openssl rand -base64 32)" > "$work/kek.json"
apply_secret studio-kek --from-file=kek.json="$work/kek.json"

openssl genpkey -algorithm ed25519 -out "$work/signing-key.pem" 2>/dev/null
apply_secret studio-signing-key --from-file=signing-key.pem="$work/signing-key.pem"

if [ -z "$provenance_key" ] && [ "$dev" = true ]; then
  (cd "$(dirname "$0")/../.." && python -m services.common.provenance_certs "$work")  # dev chain: verifies only against its root
  provenance_key="$work/provenance.key"; provenance_chain="$work/provenance-chain.pem"
fi
if [ -n "$provenance_key" ]; then
  apply_secret studio-provenance --from-file=provenance.key="$provenance_key" \
    --from-file=provenance-chain.pem="$provenance_chain"
else
  echo "secret/studio-provenance not written: pass --provenance-key and --provenance-chain (portraits cannot be signed)"
fi

for service in ingest faceqa trainer renderer; do random_token > "$work/$service"; done
printf '{"ingest": "%s", "faceqa": "%s", "trainer": "%s", "renderer": "%s"}' \
  "$(cat "$work/ingest")" "$(cat "$work/faceqa")" "$(cat "$work/trainer")" "$(cat "$work/renderer")" \
  > "$work/tokens.json"
apply_secret studio-service-tokens --from-file=tokens.json="$work/tokens.json" \
  --from-file=ingest="$work/ingest" --from-file=faceqa="$work/faceqa" \
  --from-file=trainer="$work/trainer" --from-file=renderer="$work/renderer"

# NATS users (services/common/nats_permissions.py): one password per service; the NATS pods read every key, each
# service only its own.
for service in ingest faceqa trainer renderer privacy; do random_token > "$work/nats-$service"; done
apply_secret studio-nats-users --from-file=ingest="$work/nats-ingest" --from-file=faceqa="$work/nats-faceqa" \
  --from-file=trainer="$work/nats-trainer" --from-file=renderer="$work/nats-renderer" \
  --from-file=privacy="$work/nats-privacy"

# The operator's token for `studio tenants`: ingest gets only its hash; read the token back with
# kubectl -n studio get secret studio-operator-token -o jsonpath='{.data.token}' | base64 -d
if has_data studio-operator-token; then
  echo "secret/studio-operator-token already holds data: left as it is (and so is secret/studio-tenant-admin)"
else
  random_token > "$work/operator-token"
  sha256sum < "$work/operator-token" | cut -d' ' -f1 | tr -d '\n' > "$work/operator-token-sha256"
  apply_secret studio-operator-token --from-file=token="$work/operator-token"
  apply_secret studio-tenant-admin --from-file=operator-token-sha256="$work/operator-token-sha256"
fi

if has_data studio-minio; then
  echo "secret/studio-minio already holds data: left as it is (and so is secret/studio-blob)"
else
  user="studio-$(openssl rand -hex 6)"
  password=$(random_token)
  printf '%s' "$user" > "$work/user"; printf '%s' "$password" > "$work/password"
  printf 's3://%s:%s@minio:9000/studio' "$user" "$password" > "$work/url"
  apply_secret studio-minio --from-file=root-user="$work/user" --from-file=root-password="$work/password"
  apply_secret studio-blob --from-file=url="$work/url"
fi

if [ "$dev" = true ]; then
  printf 'sk_%s' "$(random_token)" > "$work/api-key"
  apply_secret studio-bootstrap-tenant --from-file=api-key="$work/api-key"
fi
