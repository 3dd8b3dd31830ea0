"""ocigitops: OCI-first GitOps. Core package: CLI, OCI registry client, artifact format."""

__version__ = "0.1.0"
