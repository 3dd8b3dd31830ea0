"""Helm repositories for the HelmRepository and HelmChart sources: the index (bounded,
strict) and HTTP(S) access with credentials scoped to the repository's host."""
