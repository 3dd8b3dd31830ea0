"""The operator: installs, upgrades and removes ocigitops from a signed distribution."""
