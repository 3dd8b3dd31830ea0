"""The environment GitHub Actions sets for a workflow run, as tests give it to the CLI."""

from __future__ import annotations

#: A push to main of ``acme/app`` by its ``release.yml`` workflow, run 1536140711 attempt 2.
ACTIONS_ENV = {
    "GITHUB_ACTIONS": "true", "GITHUB_SERVER_URL": "https://github.com",
    "GITHUB_REPOSITORY": "acme/app", "GITHUB_SHA": "c27d339ee6075c1f744c5d4b200f7901aad2c369",
    "GITHUB_REF": "refs/heads/main",
    "GITHUB_WORKFLOW_REF": "acme/app/.github/workflows/release.yml@refs/heads/main",
    "GITHUB_RUN_ID": "1536140711", "GITHUB_RUN_ATTEMPT": "2", "GITHUB_EVENT_NAME": "push",
    "GITHUB_REPOSITORY_ID": "1296269", "GITHUB_REPOSITORY_OWNER_ID": "583231",
    "RUNNER_ENVIRONMENT": "github-hosted",
}
