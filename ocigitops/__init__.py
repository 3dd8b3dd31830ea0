"""ocigitops: OCI-first GitOps. Core package: CLI, OCI registry client, artifact format."""

import sys

__version__ = "0.1.0"

# httpx imports its own command line client (rich, click, pygments: ~50 ms) when it is
# imported, and falls back to a stub when that import fails. We never use it, so it is
# kept out before anything of ours imports httpx: every command starts faster.
sys.modules.setdefault("httpx._main", None)  # type: ignore[arg-type]
