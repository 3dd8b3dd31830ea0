"""Source reconcilers (OCIRepository; GitRepository later)."""
