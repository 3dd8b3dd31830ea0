"""Helm's own engine behind one small interface (:mod:`ocigitops.puller.helm.engine`), with
two implementations: the Go SDK in process (:mod:`.sdk`) and the helm 4 binary (:mod:`.binary`).
``docs/helm-engine.md`` compares them and says which the controller uses by default."""
