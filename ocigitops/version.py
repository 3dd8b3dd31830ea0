"""The ocigitops version (``ocigitops`` is a namespace package: the core's modules, and
``ocigitops.publisher``, ``ocigitops.verifier`` and ``ocigitops.puller`` from their own
folders, share it; see docs/architecture.md)."""

__version__ = "0.1.0"
