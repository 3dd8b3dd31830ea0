"""Result types shared by every verification path (cosign key, keyless, notation)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

SignerKind = Literal["key", "keyless", "x509"]


@dataclass(frozen=True)
class Signer:
    """Who signed: a key (by hint), a keyless OIDC identity, or an X.509 subject (notation)."""

    kind: SignerKind
    key_hint: str | None = None
    subject: str | None = None
    issuer: str | None = None
    claims: Mapping[str, str] = field(default_factory=dict)

    def __str__(self) -> str:
        if self.kind == "key":
            return f"key sha256:{self.key_hint}"
        if self.kind == "keyless":
            return f"{self.subject} (issuer {self.issuer})"
        return f"x509 {self.subject}"


@dataclass(frozen=True)
class SignatureVerification:
    """One signature that verified: for which digest, by whom, and what it carried."""

    digest: str
    signer: Signer
    kind: str
    payload_type: str | None = None
    statement: Mapping[str, Any] | None = None
    predicate_type: str | None = None
    signed_at: datetime | None = None
    details: tuple[str, ...] = ()
    #: Checks that failed but were only logged (notation ``log`` actions, audit level). A
    #: verification with any of these is reported, never counted as a pass.
    logged_failures: tuple[str, ...] = ()
