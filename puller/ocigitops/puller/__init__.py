"""The in-cluster controller: API types, sources, kustomize, runtime (in progress)."""
