"""Call control over Twilio's REST API: hang up, transfer, place calls, configure numbers.

Built on the real ``twilio.rest.Client`` (so Twilio's own request encoding and response
parsing are what runs in production *and* in tests).  Its methods are synchronous
(``requests``), so each operation runs in a worker thread via :func:`asyncio.to_thread`;
call control is rare (a few requests per call), so a thread hop is cheaper than a second
HTTP stack.

``base_url`` redirects every request the client makes -- including paging URLs Twilio
hands back -- to another origin, e.g. ``http://127.0.0.1:PORT`` of
:class:`bridge.devtools.sim.twilio_rest.TwilioRestSimulator`.  It is done in the client's HTTP
hook (a :class:`~twilio.http.http_client.TwilioHttpClient` subclass), not by mocking.

Errors surface as :class:`CallControlError` with Twilio's HTTP status and error code and
a message that says what to fix.  Credentials never appear in messages, reprs or logs.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import requests
from twilio.base.exceptions import TwilioException, TwilioRestException
from twilio.http.http_client import TwilioHttpClient
from twilio.http.response import Response
from twilio.rest import Client

from bridge.config import Secret, Settings
from bridge.twilio.twiml import dial_twiml, is_transfer_target

__all__ = [
    "CALL_NOT_IN_PROGRESS",
    "TwilioCalls",
    "CallControlError",
    "ConfiguredNumber",
    "RebasedHttpClient",
]

#: Twilio error for updating a call that is no longer in progress ("Call is not
#: in-progress. Cannot redirect.").
CALL_NOT_IN_PROGRESS = 21220
_AUTHENTICATE = 20003
_MAX_INLINE_TWIML = 4000  # Twilio error 32018 beyond this
_E164 = re.compile(r"\+[1-9][0-9]{1,14}")
_CREDENTIAL_HINT = (
    "check TWILIO_ACCOUNT_SID with TWILIO_AUTH_TOKEN, or TWILIO_API_KEY/TWILIO_API_SECRET"
)

T = TypeVar("T")


class CallControlError(Exception):
    """A call-control request failed.  ``status``/``code`` are Twilio's HTTP status and
    error code when Twilio answered (``None`` for configuration or network problems)."""

    def __init__(self, message: str, *, status: int | None = None, code: int | None = None):
        super().__init__(message)
        self.status = status
        self.code = code

    @property
    def call_ended(self) -> bool:
        """True when Twilio refused because the call is no longer in progress."""
        return self.code == CALL_NOT_IN_PROGRESS


@dataclass(frozen=True)
class ConfiguredNumber:
    """The outcome of :meth:`TwilioCalls.configure_number`.

    ``warnings`` lists settings on the number that make Twilio ignore ``voice_url``
    (a TwiML App or a SIP trunk attached to it) -- the number is updated, but calls
    will not reach the bridge until those are removed in the console.
    """

    sid: str
    phone_number: str
    voice_url: str
    status_callback: str | None
    warnings: tuple[str, ...] = ()


class RebasedHttpClient(TwilioHttpClient):
    """Sends every request to ``base_url`` instead of ``https://*.twilio.com``.

    Only scheme, host and port change (plus an optional path prefix), so the path, query
    and form the library built reach the stand-in exactly as they would reach Twilio.
    Environment proxies are ignored: the override targets a known local endpoint.
    """

    def __init__(self, base_url: str, timeout: float) -> None:
        super().__init__(timeout=timeout)
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(f"base_url must be an absolute http(s) URL, got {base_url!r}")
        self._scheme = parts.scheme
        self._netloc = parts.netloc
        self._prefix = parts.path.rstrip("/")
        if self.session is not None:
            self.session.trust_env = False

    def request(  # type: ignore[override]
        self, method: str, url: str, *args: Any, **kwargs: Any
    ) -> Response:
        parts = urlsplit(url)
        rebased = urlunsplit(
            (self._scheme, self._netloc, self._prefix + parts.path, parts.query, "")
        )
        return super().request(method, rebased, *args, **kwargs)


class TwilioCalls:
    """Async call control for one Twilio account.

    Authenticate with the account's auth token, or (preferred for REST, since it can be
    revoked on its own) an API key pair -- always together with the account SID, which
    names the account in every URL.  Build it from settings with :meth:`from_settings`.

    ``transfer_allowlist``: when not ``None``, :meth:`transfer` only dials targets in it.
    :meth:`from_settings` passes ``TRANSFER_NUMBERS``, so by default a caller cannot talk
    the agent into dialling an arbitrary (premium-rate) number; an empty list disables
    transfers.
    """

    def __init__(
        self,
        account_sid: str | None,
        *,
        auth_token: Secret | None = None,
        api_key: str | None = None,
        api_secret: Secret | None = None,
        base_url: str | None = None,
        timeout: float = 10.0,
        transfer_allowlist: Collection[str] | None = None,
    ) -> None:
        problems = []
        if not account_sid:
            problems.append("TWILIO_ACCOUNT_SID is not set")
        elif not account_sid.startswith("AC"):
            problems.append("TWILIO_ACCOUNT_SID must be the account SID (starts with 'AC')")
        if api_key or api_secret:
            if not (api_key and api_secret):
                problems.append("TWILIO_API_KEY and TWILIO_API_SECRET must be set together")
            elif not api_key.startswith("SK"):
                problems.append("TWILIO_API_KEY must be an API key SID (starts with 'SK')")
        elif not auth_token:
            problems.append("set TWILIO_AUTH_TOKEN, or TWILIO_API_KEY and TWILIO_API_SECRET")
        if problems:
            raise CallControlError("Twilio call control is not configured: " + "; ".join(problems))
        assert account_sid is not None
        if api_key and api_secret:
            username, password = api_key, api_secret
        else:
            assert auth_token is not None
            username, password = account_sid, auth_token
        self.account_sid = account_sid
        self.base_url = base_url
        self.transfer_allowlist = (
            None if transfer_allowlist is None else frozenset(transfer_allowlist)
        )
        self._password = password
        http_client = (
            RebasedHttpClient(base_url, timeout) if base_url else TwilioHttpClient(timeout=timeout)
        )
        self._http = http_client
        self._client = Client(
            username, password.reveal(), account_sid=account_sid, http_client=http_client
        )

    @classmethod
    def from_settings(cls, settings: Settings, *, base_url: str | None = None) -> TwilioCalls:
        """Call control with the credentials and ``TRANSFER_NUMBERS`` from ``settings``.

        Raises :class:`CallControlError` naming the missing variables.
        """
        return cls(
            settings.twilio_account_sid,
            auth_token=settings.twilio_auth_token,
            api_key=settings.twilio_api_key,
            api_secret=settings.twilio_api_secret,
            base_url=base_url,
            transfer_allowlist=settings.transfer_numbers,
        )

    def __repr__(self) -> str:
        return f"TwilioCalls(account_sid={self.account_sid!r}, base_url={self.base_url!r})"

    def close(self) -> None:
        """Release pooled HTTP connections."""
        if self._http.session is not None:
            self._http.session.close()

    # -- operations ---------------------------------------------------------------------

    async def hang_up(self, call_sid: str) -> bool:
        """End the call (``Status=completed``).

        Returns ``True`` if this request ended it and ``False`` if it had already ended
        (Twilio error 21220): both mean "the call is over", which is all a caller of
        ``hang_up`` needs, and the race with the caller hanging up is routine.
        """
        try:
            await self._run(
                "hang up the call",
                lambda: self._client.calls(call_sid).update(status="completed"),
            )
        except CallControlError as error:
            if error.call_ended:
                return False
            raise
        return True

    async def transfer(self, call_sid: str, target: str, *, caller_id: str | None = None) -> None:
        """Replace the call's TwiML with ``<Dial>target</Dial>``.

        This ends the Media Stream (Twilio sends ``stop`` and closes the socket) and
        bridges the caller to ``target`` (E.164 or ``sip:``).  Raises
        :class:`CallControlError` if the target is invalid or not allowed, or if the call
        has already ended (``error.call_ended``).
        """
        if not is_transfer_target(target):
            raise CallControlError(
                f"transfer target {target!r} is not an E.164 number (+15551234567) or sip: URI"
            )
        if self.transfer_allowlist is not None and target not in self.transfer_allowlist:
            raise CallControlError(
                f"transfer target {target!r} is not listed in TRANSFER_NUMBERS; refusing to dial it"
            )
        twiml = dial_twiml(target, caller_id=caller_id)
        if len(twiml) > _MAX_INLINE_TWIML:
            raise CallControlError(
                f"transfer TwiML exceeds Twilio's {_MAX_INLINE_TWIML}-char limit"
            )
        await self._run(
            "transfer the call", lambda: self._client.calls(call_sid).update(twiml=twiml)
        )

    async def place_call(
        self, to: str, from_: str, twiml_url: str, status_callback: str | None = None
    ) -> str:
        """Dial ``to`` from ``from_`` (a Twilio number); Twilio fetches ``twiml_url`` by
        POST when answered.  Returns the new CallSid.

        With ``status_callback``, Twilio POSTs every progress event (initiated, ringing,
        answered, completed) there, not only ``completed``, so the call record can show
        calls that never connected.
        """
        if not is_transfer_target(to):
            raise CallControlError(f"'to' {to!r} is not an E.164 number or sip: URI")
        if not _E164.fullmatch(from_):
            raise CallControlError(f"'from' {from_!r} is not an E.164 number (+15551234567)")
        extra: dict[str, Any] = {}
        if status_callback:
            extra = {
                "status_callback": status_callback,
                "status_callback_method": "POST",
                "status_callback_event": ["initiated", "ringing", "answered", "completed"],
            }
        call = await self._run(
            "place the call",
            lambda: self._client.calls.create(
                to=to, from_=from_, url=twiml_url, method="POST", **extra
            ),
        )
        return str(call.sid)

    async def configure_number(
        self, phone_number: str, voice_url: str, status_callback: str | None = None
    ) -> ConfiguredNumber:
        """Point an owned number's incoming-call webhook at ``voice_url`` (POST).

        Twilio's ``PhoneNumber`` filter is a pattern match, so the exact number is picked
        from the results.  ``status_callback`` (POST) receives the call status events of
        calls to this number.
        """
        if not _E164.fullmatch(phone_number):
            raise CallControlError(
                f"phone number {phone_number!r} is not in E.164 form (+15551234567)"
            )
        found = await self._run(
            "look up the phone number",
            lambda: self._client.incoming_phone_numbers.list(phone_number=phone_number, limit=50),
        )
        matches = [n for n in found if n.phone_number == phone_number]
        if not matches:
            raise CallControlError(
                f"{phone_number} is not an incoming number of account {self.account_sid}; "
                "buy or port it first, or check TWILIO_ACCOUNT_SID",
                status=404,
            )
        number = matches[0]
        extra: dict[str, Any] = {}
        if status_callback:
            extra = {"status_callback": status_callback, "status_callback_method": "POST"}
        updated = await self._run(
            "configure the phone number",
            lambda: self._client.incoming_phone_numbers(number.sid).update(
                voice_url=voice_url, voice_method="POST", **extra
            ),
        )
        warnings = []
        if updated.voice_application_sid:
            warnings.append(
                f"{phone_number} uses TwiML App {updated.voice_application_sid}, so Twilio "
                "ignores its Voice URL; remove the app from the number"
            )
        if updated.trunk_sid:
            warnings.append(
                f"{phone_number} belongs to SIP trunk {updated.trunk_sid}, so Twilio ignores "
                "its Voice URL; remove it from the trunk"
            )
        return ConfiguredNumber(
            sid=str(updated.sid),
            phone_number=phone_number,
            voice_url=str(updated.voice_url),
            status_callback=updated.status_callback or None,
            warnings=tuple(warnings),
        )

    # -- plumbing -----------------------------------------------------------------------

    async def _run(self, action: str, operation: Callable[[], T]) -> T:
        """Run a blocking client call in a thread; translate failures for humans."""
        try:
            return await asyncio.to_thread(operation)
        except TwilioRestException as exc:
            error = self._rest_error(action, exc.status, exc.code, exc.msg)
        except TwilioException as exc:
            # Listing raises a bare TwilioException("Unable to fetch page", response).
            response = exc.args[1] if len(exc.args) > 1 else None
            status = getattr(response, "status_code", None)
            code, message = _error_body(getattr(response, "text", ""))
            error = self._rest_error(action, status, code or status, message or str(exc.args[0]))
        except requests.RequestException as exc:
            # Not chained: requests exceptions hold the prepared request, headers included.
            error = CallControlError(
                f"could not reach Twilio to {action}: {type(exc).__name__}"
                + (f" ({self.base_url})" if self.base_url else "")
            )
        raise error from None

    def _rest_error(
        self, action: str, status: int | None, code: int | None, message: str
    ) -> CallControlError:
        if status == 401 or code == _AUTHENTICATE:
            text = (
                f"Twilio rejected the credentials (HTTP {status}, error {code}) trying to "
                f"{action}: {_CREDENTIAL_HINT}"
            )
        else:
            text = f"Twilio refused to {action} (HTTP {status}, error {code}): {message}"
        return CallControlError(self._scrub(text), status=status, code=code)

    def _scrub(self, text: str) -> str:
        secret = self._password.reveal()
        return text.replace(secret, "***") if secret else text


def _error_body(text: str) -> tuple[int | None, str]:
    """``(code, message)`` from a Twilio error body, tolerating anything."""
    try:
        body = json.loads(text)
    except (TypeError, ValueError):
        return None, ""
    if not isinstance(body, dict):
        return None, ""
    code = body.get("code")
    return (code if isinstance(code, int) else None), str(body.get("message", ""))
