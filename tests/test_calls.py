"""Call control: the real twilio client, over real HTTP, against the REST stand-in."""

from __future__ import annotations

import asyncio
import socket
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator, Iterator

import pytest
from twilio.rest import Client

from bridge.config import Secret, Settings
from bridge.devtools.sim.twilio_rest import TwilioRestSimulator
from bridge.twilio.calls import CallControlError, RebasedHttpClient, TwilioCalls

pytestmark = pytest.mark.e2e

ACCOUNT = "AC" + "0" * 31 + "1"
TOKEN = "tok-" + "7" * 28
NUMBER = "+15550100002"


@pytest.fixture
async def sim() -> AsyncIterator[TwilioRestSimulator]:
    async with TwilioRestSimulator(account_sid=ACCOUNT, auth_token=TOKEN) as simulator:
        yield simulator


@pytest.fixture
def control(sim: TwilioRestSimulator) -> Iterator[TwilioCalls]:
    control = TwilioCalls(ACCOUNT, auth_token=Secret(TOKEN), base_url=sim.base_url)
    yield control
    control.close()


def call_path(sid: str) -> str:
    return f"/2010-04-01/Accounts/{ACCOUNT}/Calls/{sid}.json"


async def test_hang_up_sends_status_completed(
    sim: TwilioRestSimulator, control: TwilioCalls
) -> None:
    sid = sim.add_call()
    assert await control.hang_up(sid) is True
    [request] = sim.requests
    assert (request.method, request.path) == ("POST", call_path(sid))
    assert request.form == {"Status": "completed"}
    assert request.username == ACCOUNT
    assert sim.calls[sid]["status"] == "completed"


async def test_hang_up_of_an_ended_call_is_success(
    sim: TwilioRestSimulator, control: TwilioCalls
) -> None:
    sid = sim.add_call(status="completed")
    assert await control.hang_up(sid) is False  # Twilio said 21220; the call is over
    assert len(sim.requests) == 1
    # Twice in a row (bridge and caller racing) is fine too.
    live = sim.add_call()
    assert await control.hang_up(live) is True
    assert await control.hang_up(live) is False


async def test_hang_up_unknown_call_is_an_error(control: TwilioCalls) -> None:
    with pytest.raises(CallControlError) as raised:
        await control.hang_up("CA" + "f" * 32)
    assert raised.value.status == 404 and raised.value.code == 20404
    assert "hang up" in str(raised.value)


async def test_transfer_sends_dial_twiml(sim: TwilioRestSimulator, control: TwilioCalls) -> None:
    sid = sim.add_call()
    await control.transfer(sid, "+15550100003")
    [request] = sim.requests
    assert request.path == call_path(sid) and set(request.form) == {"Twiml"}
    root = ET.fromstring(request.form["Twiml"].encode())
    assert [(el.tag, el.text) for el in root.iter("Number")] == [("Number", "+15550100003")]
    assert root[0].tag == "Dial"
    assert sim.calls[sid]["status"] == "in-progress"  # a redirect, not a hang-up


async def test_transfer_to_sip(sim: TwilioRestSimulator, control: TwilioCalls) -> None:
    sid = sim.add_call()
    await control.transfer(sid, "sip:desk@pbx.example.com")
    root = ET.fromstring(sim.requests[0].form["Twiml"].encode())
    assert root.find("Dial/Sip") is not None


async def test_transfer_of_an_ended_call_says_so(
    sim: TwilioRestSimulator, control: TwilioCalls
) -> None:
    sid = sim.add_call(status="completed")
    with pytest.raises(CallControlError) as raised:
        await control.transfer(sid, "+15550100003")
    assert raised.value.call_ended and raised.value.status == 400
    assert "not in-progress" in str(raised.value)


async def test_transfer_honours_the_allowlist(sim: TwilioRestSimulator) -> None:
    settings = Settings(
        twilio_account_sid=ACCOUNT,
        twilio_auth_token=Secret(TOKEN),
        transfer_numbers=("+15550100003",),
    )
    control = TwilioCalls.from_settings(settings, base_url=sim.base_url)
    sid = sim.add_call()
    with pytest.raises(CallControlError, match="TRANSFER_NUMBERS"):
        await control.transfer(sid, "+19005550100")
    with pytest.raises(CallControlError, match="E.164"):
        await control.transfer(sid, "not a number")
    assert sim.requests == []  # refused before reaching Twilio
    await control.transfer(sid, "+15550100003")
    assert len(sim.requests) == 1


async def test_place_call_sends_the_right_request(
    sim: TwilioRestSimulator, control: TwilioCalls
) -> None:
    sid = await control.place_call(
        "+15550100009",
        NUMBER,
        "https://bridge.example.com/twiml",
        "https://bridge.example.com/status",
    )
    [request] = sim.requests
    assert (request.method, request.path) == ("POST", f"/2010-04-01/Accounts/{ACCOUNT}/Calls.json")
    assert request.form["To"] == "+15550100009"
    assert request.form["From"] == NUMBER
    assert request.form["Url"] == "https://bridge.example.com/twiml"
    assert request.form["Method"] == "POST"
    assert request.form["StatusCallback"] == "https://bridge.example.com/status"
    assert request.form["StatusCallbackMethod"] == "POST"
    assert request.form_lists["StatusCallbackEvent"] == [
        "initiated",
        "ringing",
        "answered",
        "completed",
    ]
    assert sid.startswith("CA") and sim.calls[sid]["status"] == "queued"
    assert sim.calls[sid]["direction"] == "outbound-api"


async def test_place_call_without_status_callback(
    sim: TwilioRestSimulator, control: TwilioCalls
) -> None:
    await control.place_call("+15550100009", NUMBER, "https://bridge.example.com/twiml")
    assert set(sim.requests[0].form) == {"To", "From", "Url", "Method"}
    with pytest.raises(CallControlError, match="from"):
        await control.place_call("+15550100009", "Bridge", "https://bridge.example.com/twiml")


async def test_configure_number_looks_up_then_updates(
    sim: TwilioRestSimulator, control: TwilioCalls
) -> None:
    # Twilio's PhoneNumber filter is a pattern: "+15550100002" also matches this one.
    decoy = sim.add_number(NUMBER + "9")
    pn = sim.add_number(NUMBER, voice_url="https://old.example.com/voice")
    result = await control.configure_number(
        NUMBER, "https://bridge.example.com/twiml", "https://bridge.example.com/status"
    )
    lookup, update = sim.requests
    assert lookup.method == "GET"
    assert lookup.path == f"/2010-04-01/Accounts/{ACCOUNT}/IncomingPhoneNumbers.json"
    assert lookup.query["PhoneNumber"] == NUMBER
    assert (update.method, update.path) == (
        "POST",
        f"/2010-04-01/Accounts/{ACCOUNT}/IncomingPhoneNumbers/{pn}.json",
    )
    assert update.form == {
        "VoiceUrl": "https://bridge.example.com/twiml",
        "VoiceMethod": "POST",
        "StatusCallback": "https://bridge.example.com/status",
        "StatusCallbackMethod": "POST",
    }
    assert result.sid == pn and result.warnings == ()
    assert result.voice_url == "https://bridge.example.com/twiml"
    assert result.status_callback == "https://bridge.example.com/status"
    assert sim.numbers[decoy]["voice_url"] is None


async def test_configure_number_warns_when_voice_url_would_be_ignored(
    sim: TwilioRestSimulator, control: TwilioCalls
) -> None:
    pn = sim.add_number(NUMBER)
    sim.numbers[pn]["voice_application_sid"] = "AP" + "1" * 32
    result = await control.configure_number(NUMBER, "https://bridge.example.com/twiml")
    assert "StatusCallback" not in sim.requests[-1].form
    [warning] = result.warnings
    assert "TwiML App" in warning


async def test_configure_unknown_number_is_a_clear_error(
    sim: TwilioRestSimulator, control: TwilioCalls
) -> None:
    sim.add_number("+15550100777")
    with pytest.raises(CallControlError, match="not an incoming number"):
        await control.configure_number(NUMBER, "https://bridge.example.com/twiml")
    assert [r.method for r in sim.requests] == ["GET"]


async def test_api_key_credentials(sim: TwilioRestSimulator) -> None:
    key, secret = sim.add_api_key()
    control = TwilioCalls.from_settings(
        Settings(twilio_account_sid=ACCOUNT, twilio_api_key=key, twilio_api_secret=Secret(secret)),
        base_url=sim.base_url,
    )
    assert await control.hang_up(sim.add_call())
    assert sim.requests[0].username == key
    assert sim.requests[0].path.startswith(f"/2010-04-01/Accounts/{ACCOUNT}/")


@pytest.mark.parametrize("operation", ["hang_up", "configure_number"])
async def test_bad_credentials_give_a_clear_error_without_secrets(
    sim: TwilioRestSimulator, operation: str
) -> None:
    wrong = "wrong-" + "9" * 26
    control = TwilioCalls(ACCOUNT, auth_token=Secret(wrong), base_url=sim.base_url)
    with pytest.raises(CallControlError) as raised:
        if operation == "hang_up":
            await control.hang_up(sim.add_call())
        else:
            await control.configure_number(NUMBER, "https://bridge.example.com/twiml")
    error = raised.value
    assert (error.status, error.code) == (401, 20003)
    assert "TWILIO_AUTH_TOKEN" in str(error)
    for text in (str(error), repr(error), repr(control)):
        assert wrong not in text and TOKEN not in text
    assert error.__cause__ is None and error.__suppress_context__


def test_missing_credentials_are_listed() -> None:
    with pytest.raises(CallControlError) as raised:
        TwilioCalls.from_settings(Settings())
    message = str(raised.value)
    assert "TWILIO_ACCOUNT_SID" in message and "TWILIO_AUTH_TOKEN" in message
    with pytest.raises(CallControlError, match="together"):
        TwilioCalls(ACCOUNT, api_key="SK" + "1" * 32)
    with pytest.raises(CallControlError, match="starts with 'AC'"):
        TwilioCalls("SK" + "1" * 32, auth_token=Secret(TOKEN))


async def test_unreachable_twilio_is_a_clear_error() -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    control = TwilioCalls(ACCOUNT, auth_token=Secret(TOKEN), base_url=f"http://127.0.0.1:{port}")
    with pytest.raises(CallControlError, match="could not reach Twilio") as raised:
        await control.hang_up("CA" + "1" * 32)
    assert TOKEN not in str(raised.value) and raised.value.status is None


async def test_concurrent_operations(sim: TwilioRestSimulator, control: TwilioCalls) -> None:
    sids = [sim.add_call() for _ in range(8)]
    assert await asyncio.gather(*(control.hang_up(s) for s in sids)) == [True] * 8
    assert all(sim.calls[s]["status"] == "completed" for s in sids)


async def test_on_call_update_hook_sees_redirects() -> None:
    seen: list[tuple[str, dict[str, str]]] = []
    async with TwilioRestSimulator(
        account_sid=ACCOUNT, auth_token=TOKEN, on_call_update=lambda s, f: seen.append((s, f))
    ) as sim:
        control = TwilioCalls(ACCOUNT, auth_token=Secret(TOKEN), base_url=sim.base_url)
        sid = sim.add_call()
        await control.transfer(sid, "+15550100003")
    assert [s for s, _ in seen] == [sid] and "Twiml" in seen[0][1]


def test_simulator_in_a_thread_with_paging_parsed_by_the_real_client() -> None:
    with TwilioRestSimulator(account_sid=ACCOUNT, auth_token=TOKEN) as sim:
        for i in range(5):
            sim.add_number(f"+1555010010{i}")
        client = Client(ACCOUNT, TOKEN, http_client=RebasedHttpClient(sim.base_url, timeout=5))
        numbers = client.incoming_phone_numbers.list(phone_number="+155501001", page_size=2)
        assert sorted(n.phone_number for n in numbers) == [f"+1555010010{i}" for i in range(5)]
        assert len(sim.requests) == 3  # pages of 2, 2 and 1 via next_page_uri
        call = client.calls(sim.add_call(to=NUMBER)).fetch()
        assert (call.to, call.status, call.account_sid) == (NUMBER, "in-progress", ACCOUNT)
        assert call.date_created is not None and call.uri.endswith(f"{call.sid}.json")
