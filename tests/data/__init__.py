"""Shared test data (manifests used by unit tests and by the API-server tests)."""
