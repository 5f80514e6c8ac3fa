"""Short-lived, single-use tokens that tie a Media Stream to the webhook that created it.

Why: the WebSocket upgrade's ``x-twilio-signature`` covers only the fixed ``wss://`` URL,
so it is identical for every call and replayable by anyone who saw one.  The bridge
therefore mints a token when it answers the signed ``POST /twiml`` webhook, puts it in a
``<Parameter>``, and checks it in the stream's ``start`` message (``customParameters``)
against ``start.callSid`` *before* opening a (billed) model connection.

Token format (ASCII, ~100 chars, safe in XML and URLs)::

    v1.<id>.<expires_ms>.<call_tag>.<mac>

* ``id``: 96 random bits, base64url -- the replay-protection key;
* ``expires_ms``: absolute expiry, integer milliseconds on the caller's clock;
* ``call_tag``: 64-bit HMAC of the CallSid, so a token for one call fails on another
  with a distinct reason;
* ``mac``: HMAC-SHA256 over everything before it, base64url.

The MAC is checked first, so no other field is trusted before it is authenticated.
``now`` is always passed in (seconds, any monotonic-enough clock shared by mint and
verify), which keeps this class clock-free and the tests deterministic.
"""

from __future__ import annotations

import base64
import hashlib
import heapq
import hmac
import logging
import re
import secrets
from dataclasses import dataclass
from typing import Literal, Protocol

from bridge.config import Secret

__all__ = [
    "ClaimUnavailable",
    "LocalClaims",
    "StreamTokens",
    "TokenCheck",
    "TokenClaims",
    "TokenProblem",
    "derive_stream_secret",
]

log = logging.getLogger(__name__)

TokenProblem = Literal[
    "missing", "malformed", "bad signature", "wrong call", "expired", "replayed", "unverifiable"
]

_VERSION = "v1"
_B64 = "[A-Za-z0-9_-]"
_TOKEN = re.compile(rf"v1\.({_B64}{{16}})\.([0-9]{{1,16}})\.({_B64}{{11}})\.({_B64}{{43}})")
_HKDF_SALT = b"twilio-realtime-bridge stream-token salt v1"
_HKDF_INFO = b"stream-token hmac-sha256 key"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def derive_stream_secret(auth_token: Secret | None) -> bytes:
    """The token key: derived from ``TWILIO_AUTH_TOKEN`` when set, else random per process.

    Deriving it (HKDF-SHA256 extract-and-expand, RFC 5869, one block) means every bridge
    instance behind a load balancer accepts a token minted by any other, without another
    secret to distribute -- and the auth token itself is never used directly as a key for
    a second purpose.  Without an auth token (local demo), a random key is fine: the
    webhook and the stream are then served by the same process.
    """
    if not auth_token:
        return secrets.token_bytes(32)
    prk = hmac.new(_HKDF_SALT, auth_token.reveal().encode("utf-8"), hashlib.sha256).digest()
    return hmac.new(prk, _HKDF_INFO + b"\x01", hashlib.sha256).digest()


@dataclass(frozen=True)
class TokenCheck:
    """The outcome of a check; ``reason`` is ``None`` when ``ok``.

    A token that passed :meth:`StreamTokens.inspect` also carries its ``token_id`` and
    ``expires_ms``: what a replay ledger needs to claim it, and nothing secret (the id is
    random and useless without the MAC)."""

    ok: bool
    reason: TokenProblem | None = None
    token_id: str | None = None
    expires_ms: int = 0

    def __bool__(self) -> bool:
        return self.ok


_OK = TokenCheck(True)


class ClaimUnavailable(Exception):
    """The shared replay ledger cannot answer (database down or too slow)."""


class TokenClaims(Protocol):
    """Claim a token id once, until its expiry: the replay half of the token check.

    One process can keep this in memory (:class:`LocalClaims`); a fleet must share it,
    or a token used on replica A is accepted again on replica B
    (``bridge.store.claims.StoreClaims``, a table with the token id as primary key)."""

    async def claim(self, token_id: str, expires_ms: int, now_ms: int) -> bool:
        """True the first time ``token_id`` is claimed; raise ClaimUnavailable if unsure."""
        ...


class LocalClaims:
    """Per-process replay memory, bounded: entries live only until their token expires.

    ``max_used`` is a hard ceiling for pathological load; past it the soonest-expiring
    entries are dropped (logged), trading a sliver of replay protection for bounded memory.
    """

    def __init__(self, max_used: int = 100_000) -> None:
        self.max_used = max_used
        self._used: dict[str, int] = {}  # token id -> expires_ms
        self._expiry_heap: list[tuple[int, str]] = []

    def claim_now(self, token_id: str, expires_ms: int, now_ms: int) -> bool:
        self.evict(now_ms)
        if token_id in self._used:
            return False
        if len(self._used) >= self.max_used:
            log.warning("stream token replay memory full (%d); dropping oldest", self.max_used)
            while len(self._used) >= self.max_used and self._expiry_heap:
                _, oldest = heapq.heappop(self._expiry_heap)
                self._used.pop(oldest, None)
        self._used[token_id] = expires_ms
        heapq.heappush(self._expiry_heap, (expires_ms, token_id))
        return True

    async def claim(self, token_id: str, expires_ms: int, now_ms: int) -> bool:
        return self.claim_now(token_id, expires_ms, now_ms)

    def evict(self, now_ms: float) -> None:
        """Forget entries whose token has expired (an expired token fails before replay)."""
        heap = self._expiry_heap
        while heap and heap[0][0] <= now_ms:
            _, token_id = heapq.heappop(heap)
            self._used.pop(token_id, None)

    def __len__(self) -> int:
        return len(self._used)


class StreamTokens:
    """Mints and verifies per-call stream tokens.

    :meth:`verify` keeps replay memory in this process (:class:`LocalClaims`): right for
    one box.  A fleet calls :meth:`redeem` with a shared :class:`TokenClaims`, so a token
    used on one replica is refused on every other.  Only tokens that passed every other
    check are ever claimed, so garbage cannot fill either ledger.
    """

    def __init__(self, secret: bytes, ttl_s: float = 60, *, max_used: int = 100_000) -> None:
        if len(secret) < 16:
            raise ValueError("stream token secret must be at least 16 bytes")
        if ttl_s <= 0:
            raise ValueError("ttl_s must be positive")
        self._mac_key = hmac.new(secret, b"mac", hashlib.sha256).digest()
        self._call_key = hmac.new(secret, b"call", hashlib.sha256).digest()
        self.ttl_s = ttl_s
        self.local = LocalClaims(max_used)

    @classmethod
    def from_auth_token(cls, auth_token: Secret | None, ttl_s: float = 60) -> StreamTokens:
        """Tokens keyed by :func:`derive_stream_secret` (shared across instances when set)."""
        return cls(derive_stream_secret(auth_token), ttl_s)

    def __repr__(self) -> str:
        return f"StreamTokens(ttl_s={self.ttl_s}, used={len(self.local)})"

    def _call_tag(self, call_sid: str) -> str:
        return _b64(hmac.new(self._call_key, call_sid.encode("utf-8"), hashlib.sha256).digest()[:8])

    def _mac(self, body: str) -> str:
        return _b64(hmac.new(self._mac_key, body.encode("ascii"), hashlib.sha256).digest())

    def mint(self, call_sid: str, now: float) -> str:
        """A fresh token for ``call_sid``, valid until ``now + ttl_s`` and only once."""
        token_id = _b64(secrets.token_bytes(12))
        expires_ms = int((now + self.ttl_s) * 1000)
        body = f"{_VERSION}.{token_id}.{expires_ms}.{self._call_tag(call_sid)}"
        return f"{body}.{self._mac(body)}"

    def inspect(self, token: str | None, call_sid: str, now: float) -> TokenCheck:
        """Every check but replay: present, well-formed, authentic, for this call, unexpired.

        The MAC is checked first, so no other field is trusted before it is authenticated.
        """
        if not token:
            return TokenCheck(False, "missing")
        match = _TOKEN.fullmatch(token)
        if match is None:
            return TokenCheck(False, "malformed")
        token_id, expires_text, call_tag, mac = match.groups()
        body = token[: match.start(4) - 1]
        if not hmac.compare_digest(mac, self._mac(body)):
            return TokenCheck(False, "bad signature")
        if not hmac.compare_digest(call_tag, self._call_tag(call_sid)):
            return TokenCheck(False, "wrong call")
        expires_ms = int(expires_text)
        if now * 1000 >= expires_ms:
            return TokenCheck(False, "expired")
        return TokenCheck(True, token_id=token_id, expires_ms=expires_ms)

    def verify(self, token: str | None, call_sid: str, now: float) -> TokenCheck:
        """Check ``token`` for ``call_sid`` at ``now``; consume it in this process's memory."""
        self.local.evict(now * 1000)  # every check evicts, so memory follows the TTL
        check = self.inspect(token, call_sid, now)
        if not check.ok:
            return check
        assert check.token_id is not None
        if not self.local.claim_now(check.token_id, check.expires_ms, int(now * 1000)):
            return TokenCheck(False, "replayed")
        return _OK

    async def redeem(
        self,
        token: str | None,
        call_sid: str,
        now: float,
        claims: TokenClaims,
        *,
        local_on_outage: bool = False,
    ) -> TokenCheck:
        """Like :meth:`verify`, with replay memory in ``claims`` (shared by a fleet).

        The local memory is consulted first: a replay to the same replica is refused
        without a round trip.  When the shared ledger cannot answer, the stream is
        refused ("unverifiable"): a replay check that fails open is no check.  With
        ``local_on_outage`` the operator has chosen availability instead: this replica's
        memory alone decides until the ledger answers again (logged).
        """
        check = self.inspect(token, call_sid, now)
        if not check.ok:
            return check
        assert check.token_id is not None
        now_ms = int(now * 1000)
        if not self.local.claim_now(check.token_id, check.expires_ms, now_ms):
            return TokenCheck(False, "replayed")
        try:
            first = await claims.claim(check.token_id, check.expires_ms, now_ms)
        except ClaimUnavailable as exc:
            if local_on_outage:
                log.warning("shared replay check unavailable (%s); this replica decided", exc)
                return _OK
            log.warning("stream token replay check unavailable: %s", exc)
            return TokenCheck(False, "unverifiable")
        return _OK if first else TokenCheck(False, "replayed")

    @property
    def remembered(self) -> int:
        """How many used tokens this process remembers (for metrics and tests)."""
        return len(self.local)
