"""Option values several commands share, as plain data the library takes.

The command line, the GitHub Action and tests describe a registry connection, annotations
and ignore rules the same way; these types and parsers are that one description, so the
CLI only collects flags and every caller reaches the same library function with them.

Kept free of heavy imports (httpx, rich, yaml): the CLI imports this module at start-up.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ocigitops.errors import NotImplementedYetError, UsageError

if TYPE_CHECKING:
    from ocigitops.registry import RegistryClient

#: Annotations as a mapping, or as ``KEY=VALUE`` strings the way ``-a`` takes them.
Annotations = Mapping[str, str] | Sequence[str]


@dataclass(frozen=True)
class RegistryOptions:
    """How to reach a registry: the flags every registry command accepts.

    ``timeout`` is the deadline of the whole operation, as Flux's ``--timeout``.
    ``provider`` is Flux's ``--provider``: only ``generic`` (credentials from flags or a
    docker config) is implemented; the cloud ones fail clearly when a client is made.
    """

    creds: str | None = None
    insecure: bool = False
    docker_config: Path | None = None
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    timeout: float = 300.0
    provider: str = "generic"

    def client(self) -> RegistryClient:
        """A new (unopened) client; use it as ``async with options.client() as client``.

        Raises NotImplementedYetError for a cloud ``provider``.
        """
        check_provider(self.provider)
        # Imported here: httpx costs start-up time the CLI only pays when it connects.
        from ocigitops.registry import client_from_flags

        return client_from_flags(creds=self.creds, insecure=self.insecure,
                                 docker_config=self.docker_config, ca_file=self.ca_file,
                                 cert_file=self.cert_file, key_file=self.key_file,
                                 timeout=self.timeout)


#: Flux's ``--provider`` values.
PROVIDERS = ("generic", "aws", "azure", "gcp")


def check_provider(provider: str) -> None:
    """Accept ``generic``; refuse the cloud providers (not implemented yet) and anything
    else, each with what to do instead."""
    if provider == "generic":
        return
    if provider in PROVIDERS:
        raise NotImplementedYetError(
            f"--provider {provider} is not implemented yet: use --provider generic with"
            " --creds or a docker config (docker login, or your cloud's"
            " get-login-password/access token as --creds)")
    raise UsageError(f"--provider {provider!r}: use one of {', '.join(PROVIDERS)}")


def parse_annotations(values: Annotations) -> dict[str, str]:
    """``KEY=VALUE`` strings (or a mapping, copied) as a dict.

    Raises UsageError naming the first value without ``=`` or with an empty key.
    """
    if isinstance(values, Mapping):
        return dict(values)
    out: dict[str, str] = {}
    for v in [values] if isinstance(values, str) else values:
        k, sep, val = v.partition("=")
        if not sep or not k:
            raise UsageError(f"--annotation {v!r}: use key=value")
        out[k] = val
    return out


def ignore_patterns(ignore_paths: str | None, add_ignore_paths: Sequence[str] = ()) -> list[str]:
    """The effective ignore list from ``--ignore-paths`` and ``--add-ignore-paths``.

    ``ignore_paths`` (comma-separated) replaces Flux's default list when given; the
    additions extend whichever list applies.
    """
    from ocigitops.ignore import effective_patterns  # pathspec: only when packaging

    return effective_patterns(None if ignore_paths is None else [ignore_paths],
                              add_ignore_paths)
