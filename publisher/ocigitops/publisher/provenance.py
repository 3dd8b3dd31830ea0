"""SLSA provenance v1 of an artifact pushed from GitHub Actions (``push artifact --provenance``).

The predicate follows GitHub's own build type, ``https://actions.github.io/buildtypes/workflow/v1``
(what ``actions/attest-build-provenance`` writes), so a policy written for GitHub's
attestations reads ours the same way:

- ``buildDefinition.externalParameters.workflow``: ``ref``, ``repository`` (HTTPS, no
  ``.git``) and ``path`` of the workflow file, from ``GITHUB_REF``, ``GITHUB_SERVER_URL`` +
  ``GITHUB_REPOSITORY`` and ``GITHUB_WORKFLOW_REF`` (whose ``owner/repo/`` prefix and
  ``@ref`` suffix are removed; a path may itself hold ``@``);
- ``internalParameters.github``: ``event_name``, ``repository_id``, ``repository_owner_id``
  and ``runner_environment`` (``github-hosted`` or ``self-hosted``);
- ``resolvedDependencies``: the commit, ``git+<repository>@<ref>`` with
  ``{"gitCommit": GITHUB_SHA}``;
- ``runDetails.builder.id``: ``GITHUB_SERVER_URL/GITHUB_WORKFLOW_REF``, the workflow that
  ran (the build type names the *job* workflow ref, which only the OIDC token carries; the
  two differ only for a reusable workflow, whose caller is then named);
  ``runDetails.metadata``: ``invocationId`` (the run and attempt URL) and ``finishedOn``
  (the push time; the policy's ``maxAge`` reads it when no transparency log vouches for a
  time: :mod:`ocigitops.verifier.attestations`).

Only the environment GitHub Actions sets is read; outside it ``--provenance`` is refused:
a provenance whose fields are guessed would be a claim nobody can check.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from ocigitops.errors import UsageError

BUILD_TYPE = "https://actions.github.io/buildtypes/workflow/v1"

#: The variables a provenance cannot do without.
REQUIRED = ("GITHUB_REPOSITORY", "GITHUB_SHA", "GITHUB_REF", "GITHUB_WORKFLOW_REF",
            "GITHUB_RUN_ID")


def _rfc3339(t: datetime) -> str:
    return t.astimezone(UTC).replace(microsecond=0).strftime("%Y-%m-%dT%H:%M:%SZ")


def workflow_path(workflow_ref: str, repository: str, ref: str) -> str:
    """The workflow file's path from ``GITHUB_WORKFLOW_REF``
    (``owner/repo/.github/workflows/x.yml@refs/heads/main``)."""
    prefix, suffix = f"{repository}/", f"@{ref}"
    if not workflow_ref.startswith(prefix) or not workflow_ref.endswith(suffix):
        raise UsageError(f"GITHUB_WORKFLOW_REF {workflow_ref!r} does not name a workflow of "
                         f"{repository} at {ref}")
    return workflow_ref[len(prefix):len(workflow_ref) - len(suffix)]


def github_actions_provenance(env: Mapping[str, str], *, now: datetime | None = None
                              ) -> dict[str, Any]:
    """The SLSA provenance v1 predicate of this GitHub Actions run, from ``env``.

    UsageError outside GitHub Actions or when one of :data:`REQUIRED` is unset, naming it.
    """
    if env.get("GITHUB_ACTIONS") != "true":
        raise UsageError("--provenance describes a GitHub Actions run: GITHUB_ACTIONS is not"
                         " 'true' here (attach other provenance with `attest artifact"
                         " --type slsaprovenance1 --predicate FILE`)")
    missing = [name for name in REQUIRED if not env.get(name)]
    if missing:
        raise UsageError(f"--provenance: {', '.join(missing)} not set in the environment")
    server = env.get("GITHUB_SERVER_URL", "https://github.com").rstrip("/")
    repository, ref = env["GITHUB_REPOSITORY"], env["GITHUB_REF"]
    repo_url = f"{server}/{repository}"
    attempt = env.get("GITHUB_RUN_ATTEMPT") or "1"
    github = {key: env[var] for key, var in (
        ("event_name", "GITHUB_EVENT_NAME"), ("repository_id", "GITHUB_REPOSITORY_ID"),
        ("repository_owner_id", "GITHUB_REPOSITORY_OWNER_ID"),
        ("runner_environment", "RUNNER_ENVIRONMENT")) if env.get(var)}
    return {
        "buildDefinition": {
            "buildType": BUILD_TYPE,
            "externalParameters": {"workflow": {
                "ref": ref, "repository": repo_url,
                "path": workflow_path(env["GITHUB_WORKFLOW_REF"], repository, ref)}},
            "internalParameters": {"github": github},
            "resolvedDependencies": [{"uri": f"git+{repo_url}@{ref}",
                                      "digest": {"gitCommit": env["GITHUB_SHA"]}}],
        },
        "runDetails": {
            "builder": {"id": f"{server}/{env['GITHUB_WORKFLOW_REF']}"},
            "metadata": {
                "invocationId": f"{repo_url}/actions/runs/{env['GITHUB_RUN_ID']}"
                                f"/attempts/{attempt}",
                "finishedOn": _rfc3339(now or datetime.now(UTC)),
            },
        },
    }
