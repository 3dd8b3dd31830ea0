"""The exit codes of every ``ocigitops`` command: one scheme, defined here once.

The error classes in :mod:`ocigitops.errors` carry these as ``exit_code``; the CLI exits
with the code of the error it caught, or with :data:`NO` when a command's answer is "no"
(``diff`` found a difference, ``verify`` did not verify). Scripts can then tell "the
answer is no" from "the question could not be answered" (flux2 issue 3425), and "try
again later" (:data:`UNREACHABLE`) from "fix something" (the others).

Kept free of imports: the CLI reads it at start-up.
"""

from __future__ import annotations

#: The command did what was asked, and the answer (if any) is yes.
SUCCESS = 0
#: The answer is no: ``diff artifact`` found a difference, ``verify artifact`` did not
#: verify. Nothing failed.
NO = 1
#: The command line or an input file is wrong: a flag, a reference, an address, a policy.
USAGE = 2
#: Anything else went wrong: an error answer, invalid or hostile content, a failed render,
#: a missing tool or kubeconfig.
FAILURE = 3
#: What the command names does not exist: a repository, tag, manifest, blob or object.
NOT_FOUND = 4
#: Authentication failed or permission was denied (registry or Kubernetes API).
DENIED = 5
#: A registry or API server could not be reached, or the --timeout passed.
UNREACHABLE = 6
#: Interrupted (Ctrl-C), as shells report SIGINT.
INTERRUPTED = 130

#: ``(code, meaning)`` for help texts and the README's table.
TABLE: tuple[tuple[int, str], ...] = (
    (SUCCESS, "success"),
    (NO, "the answer is no: diff found a difference, verify did not verify"),
    (USAGE, "usage error: a flag, reference, address or input file is wrong"),
    (FAILURE, "failure: an error answer, invalid content, a failed render, a missing tool"),
    (NOT_FOUND, "not found: repository, tag, manifest, blob or Kubernetes object"),
    (DENIED, "authentication failed or permission denied"),
    (UNREACHABLE, "registry or API server unreachable, or the --timeout passed"),
    (INTERRUPTED, "interrupted (Ctrl-C)"),
)
