"""TwiML documents, parsed back as XML the way Twilio would read them."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from bridge.twilio.twiml import (
    DEFAULT_BUSY_MESSAGE,
    MAX_PARAMETER_CHARS,
    PARAM_AGENT,
    PARAM_CALL_SID,
    PARAM_FROM,
    PARAM_TO,
    busy_twiml,
    connect_stream_twiml,
    dial_twiml,
    hangup_twiml,
    is_transfer_target,
)

STREAM_URL = "wss://bridge.example.com/media-stream"


def parse(twiml: str) -> ET.Element:
    assert twiml.startswith('<?xml version="1.0" encoding="UTF-8"?>')
    root = ET.fromstring(twiml.encode("utf-8"))
    assert root.tag == "Response"
    return root


def test_connect_stream_carries_url_callback_and_parameters() -> None:
    params = {
        "From": "+15550100001",
        "To": "+15550100002",
        "CallSid": "CA" + "1" * 32,
        "token": "v1.abc.123.def.ghi",
        "agent": "front-desk",
    }
    root = parse(connect_stream_twiml(STREAM_URL, params, "https://bridge.example.com/status"))
    [connect] = list(root)
    assert connect.tag == "Connect"  # bidirectional, not <Start>
    [stream] = list(connect)
    assert stream.tag == "Stream"
    assert stream.get("url") == STREAM_URL
    assert stream.get("statusCallback") == "https://bridge.example.com/status"
    assert stream.get("statusCallbackMethod") == "POST"
    got = {p.get("name"): p.get("value") for p in stream.findall("Parameter")}
    assert got == params


def test_connect_stream_without_status_callback_has_no_callback_attributes() -> None:
    stream = parse(connect_stream_twiml(STREAM_URL, {}))[0][0]
    assert stream.get("statusCallback") is None
    assert stream.get("statusCallbackMethod") is None
    assert stream.findall("Parameter") == []


def test_parameter_value_is_truncated_to_twilios_limit() -> None:
    long_value = "x" * 2000
    stream = parse(connect_stream_twiml(STREAM_URL, {"From": long_value, "To": "+1555"}))[0][0]
    params = {p.get("name"): p.get("value") for p in stream.findall("Parameter")}
    assert len("From") + len(params["From"] or "") == MAX_PARAMETER_CHARS  # < 500
    assert params["To"] == "+1555"


def test_parameter_values_are_escaped_and_xml_safe() -> None:
    hostile = '"/><Hangup/><Parameter name="x" value="&amp;\x00\x07'
    stream = parse(connect_stream_twiml(STREAM_URL, {"From": hostile}))[0][0]
    [param] = stream.findall("Parameter")
    assert param.get("value") == '"/><Hangup/><Parameter name="x" value="&amp;'
    assert stream.find("Hangup") is None


@pytest.mark.parametrize("name", ["", "n" * MAX_PARAMETER_CHARS])
def test_bad_parameter_name_is_a_programming_error(name: str) -> None:
    with pytest.raises(ValueError, match="Parameter"):
        connect_stream_twiml(STREAM_URL, {name: "v"})


@pytest.mark.parametrize(
    "url",
    [
        "https://bridge.example.com/media-stream",
        "/media-stream",
        "wss://bridge.example.com/media-stream?token=abc",
    ],
)
def test_stream_url_must_be_a_websocket_url_without_query(url: str) -> None:
    with pytest.raises(ValueError):
        connect_stream_twiml(url, {})


def test_busy_default_says_why_then_hangs_up() -> None:
    root = parse(busy_twiml())
    assert [el.tag for el in root] == ["Say", "Hangup"]
    assert root[0].text == DEFAULT_BUSY_MESSAGE


def test_busy_without_message_rejects_unanswered() -> None:
    root = parse(busy_twiml(None))
    assert [el.tag for el in root] == ["Reject"]
    assert root[0].get("reason") == "busy"


def test_dial_e164_uses_number_noun() -> None:
    root = parse(dial_twiml("+15550100003", caller_id="+15550100002"))
    [dial] = list(root)
    assert dial.tag == "Dial"
    assert dial.get("callerId") == "+15550100002"
    [number] = list(dial)
    assert (number.tag, number.text) == ("Number", "+15550100003")


def test_dial_sip_uses_sip_noun() -> None:
    dial = parse(dial_twiml("sip:frontdesk@pbx.example.com"))[0]
    [sip] = list(dial)
    assert (sip.tag, sip.text) == ("Sip", "sip:frontdesk@pbx.example.com")


@pytest.mark.parametrize("target", ["15550100003", "+0123", "tel:+15550100003", "", "sip:"])
def test_dial_rejects_other_targets(target: str) -> None:
    assert not is_transfer_target(target)
    with pytest.raises(ValueError):
        dial_twiml(target)


def test_hangup() -> None:
    assert [el.tag for el in parse(hangup_twiml())] == ["Hangup"]


def test_static_twiml_bin_follows_the_same_rules() -> None:
    """twiml/connect-stream.xml: same shape and parameter names as the webhook's answer."""
    path = Path(__file__).resolve().parent.parent / "twiml" / "connect-stream.xml"
    root = ET.parse(path).getroot()
    stream = root.find("Connect/Stream")
    assert stream is not None
    url = urlsplit(stream.get("url", ""))
    assert url.scheme == "wss" and url.path == "/media-stream" and not url.query
    names = {p.get("name") for p in stream.findall("Parameter")}
    assert names == {PARAM_FROM, PARAM_TO, PARAM_CALL_SID, PARAM_AGENT}
