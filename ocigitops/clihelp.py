"""Examples shown at the end of each command's ``--help`` (the CLI sets them as epilogs).

Kept apart from ``ocigitops.cli`` so each command there stays a few lines, and kept
as plain strings: the CLI imports this at start-up.
"""

from __future__ import annotations

#: Command path (``"push artifact"``) -> example lines (``$ ocigitops ...`` and comments).
EXAMPLES: dict[str, tuple[str, ...]] = {
    "push artifact": (
        "# package ./deploy and push it, with source and revision from Git",
        "ocigitops push artifact oci://ghcr.io/acme/app:$(git rev-parse --short HEAD) \\",
        "  -f ./deploy -a team=platform",
        "# push only when the content differs from 'latest', print JSON",
        "ocigitops push artifact oci://localhost:5000/app:v2 -f ./deploy --diff-tag latest"
        " -o json",
    ),
    "dist push": (
        "# release deploy/ with the image `make image` built, pinned by digest, signed",
        "ocigitops dist push oci://ghcr.io/acme/ocigitops-manifests:v0.1.0 \\",
        "  --image ghcr.io/acme/ocigitops@sha256:<digest> --sign --key cosign.key",
    ),
    "pull artifact": (
        "ocigitops pull artifact oci://ghcr.io/acme/app:v1 --output ./out",
        "ocigitops pull artifact oci://localhost:5000/app@sha256:<digest> --output ./out",
    ),
    "tag artifact": (
        "ocigitops tag artifact oci://ghcr.io/acme/app:v1 --tag latest --tag stable",
    ),
    "list artifacts": (
        "ocigitops list artifacts oci://ghcr.io/acme/app --filter-semver '>=1.0.0 <2.0.0'",
        "ocigitops list artifacts oci://localhost:5000/app -o json | jq -r '.[0].url'",
    ),
    "diff artifact": (
        "# exit 0: same content, 1: different, 3 or more: could not compare",
        "ocigitops diff artifact oci://ghcr.io/acme/app:v1 --path ./deploy",
    ),
    "build artifact": (
        "ocigitops build artifact --path ./deploy --output artifact.tgz",
    ),
    "attest artifact": (
        "ocigitops attest artifact oci://ghcr.io/acme/app:v1 --predicate provenance.json \\",
        "  --type slsaprovenance1 --key cosign.key",
    ),
    "scan": (
        "# fail CI on HIGH or CRITICAL misconfigurations (trivy, offline)",
        "ocigitops scan ./deploy --severity HIGH,CRITICAL --exit-code 1",
        "# scan an artifact, sign the report and attach it (and trivy's SARIF) to it",
        "ocigitops scan oci://ghcr.io/acme/app:v1 --attest --key cosign.key",
    ),
    "generate key-pair": (
        "COSIGN_PASSWORD=... ocigitops generate key-pair",
        "ocigitops generate key-pair --output-key-prefix release",
    ),
    "sign artifact": (
        "ocigitops sign artifact oci://ghcr.io/acme/app:v1 --key cosign.key",
        "ocigitops sign artifact oci://ghcr.io/acme/app:v1 --keyless",
    ),
    "verify artifact": (
        "# exit 0: verified, 1: not verified, 3 or more: could not check",
        "ocigitops verify artifact oci://ghcr.io/acme/app:v1 --key cosign.pub -o json",
        "ocigitops verify artifact oci://ghcr.io/acme/app:v1 --policy policy.yaml",
    ),
    "controller run": (
        "ocigitops controller run --kubeconfig ./dev.kubeconfig --controllers oci",
    ),
    "operator run": (
        "ocigitops operator run --kubeconfig ./dev.kubeconfig --namespace ocigitops-system",
    ),
    "install": (
        "# the operator and an Instance: the controller from a signed distribution artifact",
        "ocigitops install --artifact oci://ghcr.io/acme/ocigitops-dist --version '0.x' \\",
        "  --verify-key cosign.pub --sync-url oci://ghcr.io/acme/fleet --sync-ref prod",
        "ocigitops install --artifact oci://localhost:5000/dist --insecure --multitenant --no-wait",
    ),
    "uninstall": (
        "# remove the controller and the operator; CRDs, Namespaces and your objects stay",
        "ocigitops uninstall",
        "ocigitops uninstall --keep-operator --timeout 2m",
    ),
    "push chart": (
        "# package ./charts/web and push it to oci://ghcr.io/acme/charts/web:<version>",
        "ocigitops push chart ./charts/web oci://ghcr.io/acme/charts --sign --key cosign.key",
        "# push an archive made by helm package, as helm push does",
        "ocigitops push chart web-1.2.3.tgz oci://localhost:5000/charts -o json",
    ),
    "get sources git": (
        "ocigitops get sources git -n apps",
        "ocigitops get sources git -A -o json",
    ),
    "get sources helm": (
        "ocigitops get sources helm -n apps",
    ),
    "get sources chart": (
        "ocigitops get sources chart -A -o yaml",
    ),
    "get sources oci": (
        "ocigitops get sources oci -n apps",
        "ocigitops get sources oci -A -o yaml",
    ),
    "get kustomizations": (
        "ocigitops get kustomizations -n apps --context dev",
        "ocigitops get kustomizations -A -o json",
    ),
    "get helmreleases": (
        "ocigitops get helmreleases -n apps",
        "ocigitops get helmreleases -A -o json",
    ),
    "get hr": (
        "ocigitops get hr -n apps --context dev",
    ),
    "reconcile": (
        "ocigitops reconcile source oci app -n apps",
        "ocigitops reconcile ks app -n apps --with-source --timeout 2m",
        "ocigitops reconcile hr web -n apps --with-source",
    ),
    "wait rollout": (
        "# after push artifact: wait until the cluster applied that digest and it is healthy",
        "ocigitops wait rollout oci://ghcr.io/acme/app:v1@sha256:<digest> --timeout 10m",
        "ocigitops wait rollout oci://ghcr.io/acme/app@sha256:<digest> -n apps -o json",
    ),
    "suspend": (
        "ocigitops suspend ks app -n apps",
        "ocigitops suspend hr web -n apps",
        "ocigitops suspend source oci --all -n apps",
    ),
    "resume": (
        "ocigitops resume ks app -n apps",
        "ocigitops resume hr web -n apps",
        "ocigitops resume ks --all -n apps",
    ),
    "dev cluster up": (
        "ocigitops dev cluster up --kubeconfig-out ./dev.kubeconfig",
    ),
    "dev cluster down": (
        "ocigitops dev cluster down",
    ),
    "registry serve": (
        "ocigitops registry serve --storage ./registry-data --address 127.0.0.1:5000",
    ),
    "registry stop": (
        "ocigitops registry stop",
    ),
    "quickstart": (
        "ocigitops quickstart",
        "ocigitops quickstart --address 127.0.0.1:5050",
    ),
    "version": (
        "ocigitops version --client",
        "ocigitops version --kubeconfig ./dev.kubeconfig -o json",
    ),
    "completion": (
        "source <(ocigitops completion bash)        # bash, this shell",
        "ocigitops completion zsh > \"${fpath[1]}/_ocigitops\"",
        "ocigitops completion fish > ~/.config/fish/completions/ocigitops.fish",
    ),
}


def epilog(path: str) -> str | None:
    """The ``Examples:`` block for the command ``path``, or None when it has none.

    ``\\b`` keeps click from re-wrapping the lines.
    """
    lines = EXAMPLES.get(path)
    if not lines:
        return None
    return "\b\nExamples:\n" + "\n".join(f"  {x}" for x in lines)
