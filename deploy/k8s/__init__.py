"""Offline validation of the Kubernetes manifests: build, schema, custom resources, policy."""
