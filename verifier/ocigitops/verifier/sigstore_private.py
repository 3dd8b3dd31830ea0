"""The private parts of sigstore-python we use, in one place.

sigstore-python 4.x has no public API for these, and we need them:

- ``KeyringPurpose``: selects the Rekor and CT keys of a trusted root, to check a legacy
  ``.sig`` signature's SET and SCT (sigstore-python only verifies bundles);
- ``verify_sct``: the certificate's signed certificate timestamp, for the same signatures;
- ``TimestampSource`` and ``TimestampVerificationResult``: time establishment for cosign's
  older ``intoto`` Rekor entries, which sigstore 4.5's bundle verifier does not accept;
- ``FulcioClientError``: to turn a refused Fulcio request into our typed error;
- ``KeyID``: how the trusted root names its keys.

Every import of ``sigstore._internal`` or ``sigstore._utils`` goes through this module, and
the dependency is pinned to ``sigstore>=4,<5`` (pyproject.toml): a release that moves one of
these names fails ``tests/unit/test_verifier_keys.py`` (which imports this module) instead of
a user's verification. It is imported lazily, as sigstore itself is (about 0.4 s).
"""

from __future__ import annotations

from sigstore._internal.fulcio.client import FulcioClientError
from sigstore._internal.sct import verify_sct
from sigstore._internal.timestamp import TimestampSource, TimestampVerificationResult
from sigstore._internal.trust import KeyringPurpose
from sigstore._utils import KeyID

__all__ = ["FulcioClientError", "KeyID", "KeyringPurpose", "TimestampSource",
           "TimestampVerificationResult", "verify_sct"]
