"""Checks that a webhook or a Media Stream WebSocket really comes from Twilio.

Twilio signs every request with ``X-Twilio-Signature``: HMAC-SHA1, keyed with the
account's auth token, over the exact URL Twilio requested plus the sorted form
parameters (PROTOCOLS.md A4).  We let :class:`twilio.request_validator.RequestValidator`
compute and compare it (constant-time), and take care of the one thing it cannot know:
*which URL Twilio requested*.

That URL is always rebuilt from the configured ``PUBLIC_URL`` and never from the
request's ``Host``, ``X-Forwarded-Host`` or ``X-Forwarded-Proto`` headers.  Behind a
tunnel or load balancer those headers describe the internal hop (so honest requests
would fail), and an attacker controls them outright (so trusting them would let a
signature captured for one host be replayed against another).

Nothing here logs the auth token or the signature; failures are logged at DEBUG with
the URL only.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from twilio.request_validator import RequestValidator

from bridge.config import Secret, http_url

__all__ = ["SIGNATURE_HEADER", "signed_url", "validate_http_request", "validate_websocket"]

log = logging.getLogger(__name__)

#: Header name as Twilio sends it on the WebSocket upgrade (all lowercase there; HTTP
#: header lookups in Starlette are case-insensitive, so this works for webhooks too).
SIGNATURE_HEADER = "x-twilio-signature"


def signed_url(public_url: str, path: str, query: str = "") -> str:
    """The URL Twilio signed: ``PUBLIC_URL`` (with any base path) + ``path`` + ``?query``.

    ``path`` is the route's path relative to ``PUBLIC_URL`` (e.g. ``"/twiml"``); ``query``
    is the raw query string without ``?`` (Twilio signs it as sent, so it must not be
    re-encoded or re-ordered).
    """
    url = http_url(public_url, path if path.startswith("/") else "/" + path)
    return f"{url}?{query}" if query else url


def validate_http_request(
    auth_token: Secret,
    public_url: str,
    path: str,
    query: str,
    form: Mapping[str, str],
    signature: str | None,
) -> bool:
    """True when ``signature`` is Twilio's signature of this form-encoded webhook.

    ``form`` is the parsed ``application/x-www-form-urlencoded`` body (a dict or
    Starlette's ``FormData``; multi-valued fields are handled by the library).  A missing
    or empty signature, or a missing auth token, is simply invalid: the caller decides
    whether ``BRIDGE_INSECURE_DEV`` lets it through.

    JSON-bodied webhooks (``?bodySHA256=``) are not used by Voice and are not supported
    here.
    """
    if not signature or not auth_token:
        return False
    url = signed_url(public_url, path, query)
    valid = bool(RequestValidator(auth_token.reveal()).validate(url, form, signature))
    if not valid:
        log.debug("rejected Twilio webhook: signature does not match %s", url)
    return valid


def validate_websocket(auth_token: Secret, wss_url: str, signature: str | None) -> bool:
    """True when ``signature`` (the upgrade's ``x-twilio-signature``) signs ``wss_url``.

    Twilio signs the Media Stream upgrade over the ``wss://`` URL from the ``<Stream>``
    verb with *no* parameters (the upgrade is a GET without body), so pass
    ``Settings.stream_url`` -- not the ``https://``/``ws://`` URL the framework reports.

    The signature is the same for every call to that URL, so anyone who has seen one can
    replay it: treat this as a first filter and also check the per-call stream token
    (:mod:`bridge.twilio.stream_token`) in the ``start`` message before bridging.
    """
    if not signature or not auth_token:
        return False
    valid = bool(RequestValidator(auth_token.reveal()).validate(wss_url, {}, signature))
    if not valid:
        log.debug("rejected Media Stream upgrade: signature does not match %s", wss_url)
    return valid
