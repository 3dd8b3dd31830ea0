"""Publisher: render, package and push Kubernetes manifests as OCI artifacts."""
