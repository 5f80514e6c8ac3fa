"""Shared fixtures: the throwaway PostgreSQL server for the store tests."""

from tests.conftest_pg import pg_server  # noqa: F401
