"""Phone a running bridge (or a fleet behind a balancer) the way Twilio does.

    python -m bridge.devtools.sim.phone --calls 4 [--public-url URL] [--via URL]

For each call: POST the signed ``/twiml`` webhook (signature over ``PUBLIC_URL/twiml``
with ``TWILIO_AUTH_TOKEN``, as Twilio computes it), read the ``<Connect><Stream>`` it
answers, open the stream it names with a signed upgrade and the ``<Parameter>`` values
(stream token included), speak a scripted question, listen, hang up.  Prints one line
per call.  Used by ``compose.yaml``'s ``caller`` service and the fleet test; nothing
here leaves the machine, and the auth token is never printed.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import sys
import urllib.error
import urllib.request
import xml.etree.ElementTree as ET
from urllib.parse import urlencode

from twilio.request_validator import RequestValidator

from bridge.devtools.sim.twilio_caller import CallResult, TwilioCaller


def incoming_call(
    via_url: str, public_url: str, auth_token: str, call_sid: str
) -> tuple[int, str, dict[str, str]]:
    """Twilio's webhook step, sent to ``via_url``: (status, stream url, parameters)."""
    form = {
        "AccountSid": "AC" + "0" * 32,
        "CallSid": call_sid,
        "From": "+15550001111",
        "To": "+15559990000",
        "CallStatus": "ringing",
        "Direction": "inbound",
        "ApiVersion": "2010-04-01",
    }
    signature = RequestValidator(auth_token).compute_signature(public_url + "/twiml", form)
    request = urllib.request.Request(
        via_url.rstrip("/") + "/twiml",
        data=urlencode(form).encode(),
        headers={
            "Content-Type": "application/x-www-form-urlencoded",
            "X-Twilio-Signature": str(signature),
        },
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            status, body = response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, "", {}
    stream = ET.fromstring(body).find("./Connect/Stream")
    if stream is None:
        return status, "", {}
    params = {p.get("name", ""): p.get("value", "") for p in stream.findall("Parameter")}
    return status, stream.get("url", ""), params


async def one_call(public_url: str, via_url: str, auth_token: str, duration_ms: float) -> str:
    sid = "CA" + secrets.token_hex(16)
    status, url, params = await asyncio.to_thread(
        incoming_call, via_url, public_url, auth_token, sid
    )
    if status != 200 or not url:
        return f"{sid}: webhook answered {status}"
    caller = TwilioCaller(
        url=url,
        call_sid=sid,
        custom_parameters=params,
        auth_token=auth_token,
        script=[(200, "caller_question")],
        duration_ms=duration_ms,
    )
    result: CallResult = await caller.run()
    heard_ms = result.outbound_bytes // 8
    return f"{sid}: stream {url} -> agent audio {heard_ms} ms, ended by {result.closed_by}"


async def _main(args: argparse.Namespace, auth_token: str) -> int:
    via = args.via or args.public_url
    lines = await asyncio.gather(
        *(one_call(args.public_url, via, auth_token, args.duration_ms) for _ in range(args.calls))
    )
    for line in lines:
        print(line)
    return 0 if all("ended by caller" in line for line in lines) else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bridge.devtools.sim.phone",
        description="Place simulated Twilio calls against a running bridge or fleet.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--public-url",
        default=os.environ.get("PUBLIC_URL", ""),
        help="the bridge's PUBLIC_URL (what signatures cover) ($PUBLIC_URL)",
    )
    parser.add_argument(
        "--via", default=None, help="where to send the webhook, if not PUBLIC_URL itself"
    )
    parser.add_argument("--calls", type=int, default=1)
    parser.add_argument("--duration-ms", type=float, default=4000)
    args = parser.parse_args(argv)
    token = os.environ.get("TWILIO_AUTH_TOKEN", "")
    if not args.public_url or not token:
        print("phone: set PUBLIC_URL (or --public-url) and TWILIO_AUTH_TOKEN", file=sys.stderr)
        return 2
    return asyncio.run(_main(args, token))


if __name__ == "__main__":
    raise SystemExit(main())
