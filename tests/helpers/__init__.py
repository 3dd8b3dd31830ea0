"""Shared test helpers, one module per subject (``from tests.helpers.x import y``).

Test modules import helpers from here only, never from another test module or from a
``conftest.py``; the conftest modules hold fixtures and hooks, built on these helpers.

- ``paths``: the repository's folders the tests read (examples, deploy, test vectors);
- ``cli``: running the real ``ocigitops`` CLI and peer binaries as subprocesses;
- ``trees``: writing and snapshotting file trees;
- ``tools``: locating the peer tools installed by ``scripts/install-tools``;
- ``registries``: real registries started on 127.0.0.1;
- ``hostile``: a lying registry in front of a real one, for security tests;
- ``vectors``: upstream signature test vectors and test PKI / a private sigstore;
- ``kube``: the e2e cluster helper, conditions, waiting, the controller process;
- ``memkube``: an in-memory stand-in for a reconciler's cluster reads (unit tests);
- ``publish``: the puller's artifacts: manifest trees pushed (and signed) to a registry.
"""
