"""Operator access: one credential, a signed session cookie, single-use socket tickets.

Why three things and not one:

* the **credential** (``BRIDGE_OPERATOR_TOKEN``) is long-lived and typed once; it must not
  ride along on every request, where a log line or a proxy could catch it;
* the **session cookie** is what the browser carries instead: short-lived, HMAC-signed
  (so any instance holding the credential can check it without shared state), HTTP-only
  (page scripts cannot read it) and ``SameSite=Strict`` (another site cannot make the
  browser send it);
* the **ticket** admits one softphone WebSocket.  Browsers cannot set headers on a
  WebSocket upgrade, and a cookie alone would let any page the operator has open in the
  same site open sockets; a ticket is fetched by the page with a same-origin ``POST``,
  is bound to the session that fetched it, expires within seconds and works once.

Formats (ASCII)::

    cookie  s1.<session_id>.<expires_ms>.<mac>
    ticket  t1.<ticket_id>.<expires_ms>.<session_tag>.<call_id>.<mac>

Every MAC is HMAC-SHA256 with a key derived from the credential (HKDF, one block), so
rotating the credential logs everyone out.  The MAC is checked first and compared in
constant time; no other field is trusted before that.  ``now`` is passed in (seconds), so
the class is clock-free and the tests deterministic.

Used tickets are claimed in the same ledger as Twilio's stream tokens
(:class:`~bridge.twilio.stream_token.TokenClaims`): with a store, the call-record
database's ``stream_token_claims`` table (``bridge.store.claims``), so a ticket redeemed
on replica A is refused on replica B.  Same table, ids namespaced ``ticket:``, rather
than a table of their own: the rule is identical (claim an id once, until an expiry),
so the primary-key check, the expiry index and the background cleanup all serve both,
and no schema migration has to reach every replica before the fleet is safe.  The ids
cannot collide (a ticket id is 22 base64url characters behind the prefix; stream token
ids carry none).  Only a ticket that passed every other check is claimed, so forged
tickets never reach the database.  A ledger that cannot answer (``ClaimUnavailable``,
bounded by the ledger's own timeout) refuses the ticket: admitting it could admit it
twice.  Without a store the ledger is this process's memory.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from typing import Literal

from bridge.config import Secret
from bridge.twilio.stream_token import ClaimUnavailable, LocalClaims, TokenClaims

__all__ = ["OperatorAccess", "TicketGrant", "TicketProblem"]

COOKIE_NAME = "bridge_operator"
_SALT = b"twilio-realtime-bridge operator salt v1"
_B64 = "[A-Za-z0-9_-]"
_COOKIE = re.compile(rf"s1\.({_B64}{{22}})\.([0-9]{{1,16}})\.({_B64}{{43}})")
_TICKET = re.compile(
    rf"t1\.({_B64}{{22}})\.([0-9]{{1,16}})\.({_B64}{{11}})\.([A-Za-z0-9]{{2,64}})\.({_B64}{{43}})"
)

TicketProblem = Literal[
    "missing", "malformed", "bad signature", "expired", "replayed", "wrong session",
    "unavailable",
]
#: Prefix of ticket ids in the shared claims ledger (beside Twilio stream token ids).
CLAIM_NAMESPACE = "ticket:"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _derive(credential: Secret, info: bytes) -> bytes:
    prk = hmac.new(_SALT, credential.reveal().encode("utf-8"), hashlib.sha256).digest()
    return hmac.new(prk, info + b"\x01", hashlib.sha256).digest()


@dataclass(frozen=True, slots=True)
class TicketGrant:
    """What the ticket check learned: ok, or the reason it failed."""

    ok: bool
    reason: TicketProblem | None = None
    call_id: str | None = None
    detail: str | None = None
    """Why the ledger could not answer ("unavailable" only); never holds the ticket."""


class OperatorAccess:
    """Checks the credential and issues and verifies cookies and tickets."""

    def __init__(
        self,
        credential: Secret,
        *,
        session_ttl_s: float = 8 * 3600,
        ticket_ttl_s: float = 30,
        max_used: int = 100_000,
        claims: TokenClaims | None = None,
    ) -> None:
        if not credential:
            raise ValueError("an operator credential is required")
        self._credential = credential
        self._cookie_key = _derive(credential, b"operator session cookie")
        self._ticket_key = _derive(credential, b"operator socket ticket")
        self.session_ttl_s = session_ttl_s
        self.ticket_ttl_s = ticket_ttl_s
        self.claims: TokenClaims = claims if claims is not None else LocalClaims(max_used)

    def __repr__(self) -> str:
        return "OperatorAccess(credential=Secret('***'))"

    # ---------------------------------------------------------- credential

    def credential_ok(self, offered: str | None) -> bool:
        """Constant-time comparison of what the operator typed with the credential."""
        if not offered:
            return False
        return hmac.compare_digest(
            offered.encode("utf-8"), self._credential.reveal().encode("utf-8")
        )

    # --------------------------------------------------------------- cookie

    def _mac(self, key: bytes, body: str) -> str:
        return _b64(hmac.new(key, body.encode("ascii"), hashlib.sha256).digest())

    def new_session(self, now: float) -> str:
        """A session cookie value for an operator who just proved the credential."""
        body = f"s1.{_b64(secrets.token_bytes(16))}.{int((now + self.session_ttl_s) * 1000)}"
        return f"{body}.{self._mac(self._cookie_key, body)}"

    def session_id(self, cookie: str | None, now: float) -> str | None:
        """The session a cookie names, or None when it is missing, forged or expired."""
        if not cookie:
            return None
        match = _COOKIE.fullmatch(cookie)
        if match is None:
            return None
        body = cookie.rsplit(".", 1)[0]
        if not hmac.compare_digest(match.group(3), self._mac(self._cookie_key, body)):
            return None
        if int(match.group(2)) <= now * 1000:
            return None
        return match.group(1)

    # --------------------------------------------------------------- ticket

    def _session_tag(self, session_id: str) -> str:
        return _b64(hmac.new(self._ticket_key, session_id.encode(), hashlib.sha256).digest()[:8])

    def new_ticket(self, session_id: str, call_id: str, now: float) -> str:
        """A ticket admitting one softphone socket for ``call_id`` in ``session_id``."""
        if not re.fullmatch(r"[A-Za-z0-9]{2,64}", call_id):
            raise ValueError("call ids are alphanumeric")
        expires = int((now + self.ticket_ttl_s) * 1000)
        body = (
            f"t1.{_b64(secrets.token_bytes(16))}.{expires}."
            f"{self._session_tag(session_id)}.{call_id}"
        )
        return f"{body}.{self._mac(self._ticket_key, body)}"

    async def redeem_ticket(
        self, ticket: str | None, session_id: str | None, now: float
    ) -> TicketGrant:
        """Check a ticket and use it up: it admits exactly one socket, fleet-wide."""
        if not ticket:
            return TicketGrant(False, "missing")
        match = _TICKET.fullmatch(ticket)
        if match is None:
            return TicketGrant(False, "malformed")
        body = ticket.rsplit(".", 1)[0]
        if not hmac.compare_digest(match.group(5), self._mac(self._ticket_key, body)):
            return TicketGrant(False, "bad signature")
        expires_ms = int(match.group(2))
        now_ms = int(now * 1000)
        if expires_ms <= now_ms:
            return TicketGrant(False, "expired")
        if session_id is None or not hmac.compare_digest(
            match.group(3), self._session_tag(session_id)
        ):
            return TicketGrant(False, "wrong session")
        try:
            first = await self.claims.claim(CLAIM_NAMESPACE + match.group(1), expires_ms, now_ms)
        except ClaimUnavailable as exc:
            return TicketGrant(False, "unavailable", detail=str(exc))
        if not first:
            return TicketGrant(False, "replayed")
        return TicketGrant(True, None, match.group(4))
