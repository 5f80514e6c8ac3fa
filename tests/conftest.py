"""Shared fixtures: the throwaway PostgreSQL server for the store tests, and the
browser tests' Chromium check."""

from tests.browser import chromium_or_skip  # noqa: F401
from tests.conftest_pg import pg_server  # noqa: F401
