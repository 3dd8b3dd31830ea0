"""``generate key-pair``: write a cosign-compatible encrypted key pair to files."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ocigitops.errors import UsageError
from ocigitops.publisher.signing import PasswordPrompt, cosign_password


@dataclass(frozen=True)
class KeyPairFiles:
    """Where the key pair was written."""

    private_key: Path
    public_key: Path

    def lines(self) -> list[str]:
        """What ``generate key-pair`` prints, as cosign words it."""
        return [f"Private key written to {self.private_key}",
                f"Public key written to {self.public_key}"]


def write_key_pair(prefix: str = "cosign", *, force: bool = False,
                   prompt: PasswordPrompt | None = None) -> KeyPairFiles:
    """Generate an ECDSA P-256 pair as ``cosign generate-key-pair`` does and write
    ``PREFIX.key`` (encrypted, mode 0600) and ``PREFIX.pub``.

    Existing files are refused unless ``force``, before the password is asked for. The
    password is ``COSIGN_PASSWORD`` or, on a terminal, ``prompt`` (asked to confirm).
    """
    from ocigitops.verifier.keys import generate_key_pair  # cryptography: only when used

    key_path, pub_path = Path(f"{prefix}.key"), Path(f"{prefix}.pub")
    for p in (key_path, pub_path):
        if p.exists() and not force:
            raise UsageError(f"{p} exists: pass --force to overwrite")
    pair = generate_key_pair(cosign_password(prompt, confirm=True))
    key_path.write_bytes(pair.private_pem)
    key_path.chmod(0o600)
    pub_path.write_bytes(pair.public_pem)
    return KeyPairFiles(private_key=key_path, public_key=pub_path)
