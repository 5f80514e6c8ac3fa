"""DATABASE_URL parsing and redaction.

The URL is the one place a database password lives, and it travels into log lines,
exception messages and reprs unless every such path goes through :func:`redact_url` or
:func:`scrub`.  Driver error messages are scrubbed too: we do not trust a driver never to
echo its DSN back.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal
from urllib.parse import parse_qsl, unquote, urlsplit, urlunsplit

from bridge.store.errors import StoreError

MASK = "***"
POSTGRES_SCHEMES = ("postgresql", "postgres")


@dataclass(frozen=True)
class SQLiteTarget:
    """Where a SQLite database lives and how long to wait on a locked database."""

    path: str
    busy_timeout_s: float = 5.0

    @property
    def in_memory(self) -> bool:
        return self.path == ":memory:"


def redact_url(url: str) -> str:
    """``url`` with its password replaced by ``***`` (anything unparsable is masked whole)."""
    try:
        parts = urlsplit(url)
        password = parts.password
        username = parts.username
        hostname = parts.hostname
        port = parts.port
    except ValueError:
        return MASK
    if password is None:
        return url
    host = hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{username or ''}:{MASK}@{host}" + (f":{port}" if port is not None else "")
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def _passwords(url: str) -> list[str]:
    """The password as written in the URL and as decoded, longest first."""
    try:
        raw = urlsplit(url).password
    except ValueError:
        return []
    if not raw:
        return []
    return sorted({raw, unquote(raw)}, key=len, reverse=True)


def scrub(text: str, url: str) -> str:
    """``text`` with the URL and its password masked wherever they appear."""
    if url and url in text:
        text = text.replace(url, redact_url(url))
    for secret in _passwords(url):
        text = text.replace(secret, MASK)
    return text


def backend_kind(url: str) -> Literal["sqlite", "postgres"]:
    """Which backend a DATABASE_URL selects; anything without a scheme is a SQLite path."""
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    if scheme in POSTGRES_SCHEMES or scheme.startswith("postgresql+"):
        return "postgres"
    if scheme in ("", "sqlite", "file"):
        return "sqlite"
    raise StoreError(
        f"DATABASE_URL {redact_url(url)!r} has unsupported scheme {scheme!r}; "
        "use sqlite:///file.db, sqlite:////absolute/file.db or postgresql://user:pass@host/db"
    )


def sqlite_target(url: str) -> SQLiteTarget:
    """Parse the SQLite forms.

    ``sqlite:///relative.db`` (relative to the working directory),
    ``sqlite:////absolute/path.db``, ``sqlite:///:memory:`` (or ``sqlite://``), a plain
    path such as ``bridge.db``; ``?timeout=SECONDS`` sets how long a write waits on a lock.
    """
    if "://" not in url:
        path, query = url, ""
    else:
        scheme, rest = url.split("://", 1)
        if scheme.lower() == "file":
            rest = "/" + rest if not rest.startswith("/") else rest
        rest, _, query = rest.partition("?")
        if rest in ("", "/"):
            path = ":memory:"
        elif not rest.startswith("/"):
            raise StoreError(
                f"DATABASE_URL {redact_url(url)!r}: a SQLite URL has no host; write "
                "sqlite:///relative.db or sqlite:////absolute/path.db"
            )
        else:
            path = unquote(rest[1:])
    path = path or ":memory:"
    timeout = 5.0
    for key, value in parse_qsl(query):
        if key != "timeout":
            raise StoreError(f"DATABASE_URL: unknown SQLite option {key!r} (known: timeout)")
        try:
            timeout = float(value)
        except ValueError:
            raise StoreError(f"DATABASE_URL: timeout={value!r} is not a number") from None
    return SQLiteTarget(path=path, busy_timeout_s=timeout)
