"""The result every signing function returns."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SignResult:
    """What was signed, how, and where the signature now lives."""

    #: ``cosign-bundle``, ``cosign-legacy``, ``cosign-keyless`` or ``notation``.
    kind: str
    #: The manifest digest that was signed (``sha256:...``).
    subject: str
    #: Where the signature is stored: ``repo@sha256:...`` (referrer) or ``repo:tag``.
    location: str
    #: ``api`` or ``tag`` for referrers, ``tag`` for cosign's legacy ``.sig`` image.
    stored_via: str
    #: The signer: key hint, certificate subject, or OIDC identity.
    signer: str = ""

    def to_json(self) -> dict[str, str]:
        """JSON form for ``-o json``."""
        return {"kind": self.kind, "subject": self.subject, "location": self.location,
                "storedVia": self.stored_via, "signer": self.signer}
