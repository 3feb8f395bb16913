# Shared fixtures live in plugins; keep this file tiny.
pytest_plugins = ["tests.services"]
