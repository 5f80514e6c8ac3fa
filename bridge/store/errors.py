"""Errors the store raises.  Their messages never contain the database password."""

from __future__ import annotations


class StoreError(Exception):
    """The store cannot do what was asked: bad URL, missing driver, database failure."""


class SchemaTooNewError(StoreError):
    """The database was migrated by a newer bridge; this one must not write to it."""
