"""Attach a document to an artifact as a plain OCI 1.1 referrer (no signature).

The manifest is the OCI image-spec 1.1 "artifact" form: ``artifactType`` set, the empty
config (``application/vnd.oci.empty.v1+json``, ``{}``), one layer holding the document,
``subject`` = the artifact's manifest descriptor, and the created time in
``org.opencontainers.image.created``. :meth:`RegistryClient.push_referrer` stores it and,
where the registry has no referrers API, adds it to the ``sha256-<hex>`` tag-schema index,
as every other referrer we write (signatures, attestations). ``scan --attest`` attaches
trivy's SARIF this way (``application/sarif+json``, the form Ratify reads).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from ocigitops import mediatypes as mt
from ocigitops.artifact import go_json, sorted_map
from ocigitops.reference import Reference
from ocigitops.registry import Descriptor, RegistryClient, sha256_digest


@dataclass(frozen=True)
class StoredReferrer:
    """Where a referrer went: ``repo@digest``, and ``api`` or ``tag`` (the fallback)."""

    artifact_type: str
    subject: str
    location: str
    stored_via: str

    def to_json(self) -> dict[str, str]:
        """The ``-o json`` form."""
        return {"artifactType": self.artifact_type, "subject": self.subject,
                "location": self.location, "storedVia": self.stored_via}


def build_referrer_manifest(subject: Descriptor, artifact_type: str, layer: Descriptor,
                            annotations: Mapping[str, str]) -> bytes:
    """The manifest bytes (compact, Go's escaping, keys in image-spec order)."""
    doc = {
        "schemaVersion": 2,
        "mediaType": mt.OCI_MANIFEST,
        "artifactType": artifact_type,
        "config": {"mediaType": mt.OCI_EMPTY, "digest": mt.EMPTY_JSON_DIGEST,
                   "size": len(mt.EMPTY_JSON)},
        "layers": [{"mediaType": layer.media_type, "digest": layer.digest,
                    "size": layer.size}],
        "subject": {"mediaType": subject.media_type, "digest": subject.digest,
                    "size": subject.size},
        "annotations": dict(annotations),
    }
    return go_json(doc)


async def push_referrer(client: RegistryClient, repo: Reference, subject: Descriptor,
                        artifact_type: str, payload: bytes, *,
                        media_type: str | None = None,
                        annotations: Mapping[str, str] | None = None) -> StoredReferrer:
    """Push ``payload`` as the one layer (``media_type``, default ``artifact_type``) of a
    referrer of ``subject`` in ``repo``; returns where it is stored and how."""
    repo = repo.repo_only()
    created = datetime.now(UTC).replace(microsecond=0).strftime("%Y-%m-%dT%H:%M:%SZ")
    ann = sorted_map({mt.ANN_CREATED: created, **(annotations or {})})
    layer = Descriptor(media_type or artifact_type, sha256_digest(payload), len(payload))
    await client.push_blob(repo, mt.EMPTY_JSON_DIGEST, len(mt.EMPTY_JSON), mt.EMPTY_JSON)
    await client.push_blob(repo, layer.digest, layer.size, payload)
    manifest = build_referrer_manifest(subject, artifact_type, layer, ann)
    digest = await client.push_referrer(repo, manifest, subject.digest, artifact_type, ann)
    found = await client.referrers(repo, subject.digest, artifact_type)
    via = "api" if found.via == "api" and any(d.digest == digest
                                              for d in found.descriptors) else "tag"
    return StoredReferrer(artifact_type, subject.digest, f"{repo.name}@{digest}", via)
