"""The SLSA provenance v1 predicate of ``push artifact --provenance``, from a GitHub
Actions environment (the variables as GitHub sets them), and its refusals."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from ocigitops.errors import UsageError
from ocigitops.publisher.provenance import BUILD_TYPE, github_actions_provenance, workflow_path
from tests.helpers.github import ACTIONS_ENV as ENV

pytestmark = pytest.mark.unit



def test_predicate_has_githubs_build_type_fields() -> None:
    now = datetime(2026, 12, 1, 12, 0, 0, tzinfo=UTC)
    p = github_actions_provenance(ENV, now=now)
    build = p["buildDefinition"]
    assert build["buildType"] == BUILD_TYPE
    assert build["externalParameters"] == {"workflow": {
        "ref": "refs/heads/main", "repository": "https://github.com/acme/app",
        "path": ".github/workflows/release.yml"}}
    assert build["internalParameters"]["github"] == {
        "event_name": "push", "repository_id": "1296269", "repository_owner_id": "583231",
        "runner_environment": "github-hosted"}
    assert build["resolvedDependencies"] == [{
        "uri": "git+https://github.com/acme/app@refs/heads/main",
        "digest": {"gitCommit": ENV["GITHUB_SHA"]}}]
    run = p["runDetails"]
    assert run["builder"]["id"] == ("https://github.com/acme/app/.github/workflows/"
                                    "release.yml@refs/heads/main")
    assert run["metadata"] == {
        "invocationId": "https://github.com/acme/app/actions/runs/1536140711/attempts/2",
        "finishedOn": "2026-12-01T12:00:00Z"}


def test_optional_variables_are_left_out() -> None:
    env = {k: v for k, v in ENV.items()
           if k not in ("GITHUB_EVENT_NAME", "RUNNER_ENVIRONMENT", "GITHUB_RUN_ATTEMPT",
                        "GITHUB_SERVER_URL")}
    p = github_actions_provenance(env)
    assert "event_name" not in p["buildDefinition"]["internalParameters"]["github"]
    assert p["runDetails"]["metadata"]["invocationId"].endswith("/attempts/1")
    assert p["runDetails"]["builder"]["id"].startswith("https://github.com/acme/app/")


def test_path_with_at_sign() -> None:
    assert workflow_path("o/r/.github/workflows/a@b.yml@refs/tags/v1@x", "o/r",
                         "refs/tags/v1@x") == ".github/workflows/a@b.yml"


@pytest.mark.parametrize("env, fragment", [
    ({}, "GITHUB_ACTIONS is not 'true'"),
    ({**ENV, "GITHUB_SHA": ""}, "GITHUB_SHA not set"),
    ({k: v for k, v in ENV.items() if k != "GITHUB_WORKFLOW_REF"}, "GITHUB_WORKFLOW_REF"),
    ({**ENV, "GITHUB_WORKFLOW_REF": "evil/other/.github/workflows/x.yml@refs/heads/main"},
     "does not name a workflow of acme/app"),
])
def test_refused_without_a_github_actions_run(env: dict[str, str], fragment: str) -> None:
    with pytest.raises(UsageError, match=fragment):
        github_actions_provenance(env)
