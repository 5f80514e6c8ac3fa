"""The call store, run against SQLite *and* a real PostgreSQL server.

Outages are real: for SQLite another connection holds the write lock (or the database's
directory does not exist yet); for PostgreSQL the test server is stopped mid-test and
started again.  Nothing in the store is mocked.  The ``pg_server`` fixture lives in
``tests/conftest_pg.py``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from bridge.config import ConfigError, Secret
from bridge.store import (
    CallStore,
    Prices,
    Store,
    StoreError,
    TokenUsage,
    open_store,
    redact_url,
)
from bridge.store import cli as store_cli
from bridge.store.schema import LATEST_VERSION
from bridge.store.sqlite import SQLiteBackend
from bridge.store.urls import scrub, sqlite_target

pytestmark = pytest.mark.e2e

BACKENDS = ["sqlite", "postgres"]

USAGE_EVENT: dict[str, Any] = {
    "total_tokens": 1500,
    "input_tokens": 1000,
    "output_tokens": 500,
    "input_token_details": {"text_tokens": 200, "audio_tokens": 800, "cached_tokens": 100},
    "output_token_details": {"text_tokens": 100, "audio_tokens": 400},
}
# 200 text in (of which cached 20) + 800 audio in (cached 80), 100 text out, 400 audio out:
# (180*4 + 720*32 + 20*0.4 + 80*0.4 + 100*16 + 400*64) / 1e6
USAGE_COST = (180 * 4 + 720 * 32 + 20 * 0.4 + 80 * 0.4 + 100 * 16 + 400 * 64) / 1e6
T0 = datetime(2025, 3, 4, 5, 6, 7, tzinfo=UTC)


# --------------------------------------------------------------------- fixtures


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def database_url(backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if backend == "postgres":
        server = request.getfixturevalue("pg_server")
        return str(server.create_database())
    return f"sqlite:///{tmp_path}/bridge.db"


StoreFactory = Callable[..., Awaitable[CallStore]]


@pytest.fixture
async def make_store(database_url: str) -> AsyncIterator[StoreFactory]:
    """Open started stores with quick retries; close them all at the end."""
    opened: list[CallStore] = []

    async def make(url: str | None = None, **options: Any) -> CallStore:
        options.setdefault("retry_initial_s", 0.02)
        options.setdefault("retry_max_s", 0.2)
        options.setdefault("prices", Prices())
        store = open_store(url or database_url, **options)
        opened.append(store)
        await store.start()
        return store

    yield make
    for store in opened:
        await store.close(timeout=2.0)


@contextmanager
def sqlite_write_lock(database_url: str) -> Iterator[None]:
    """Hold SQLite's write lock from another connection: writers get 'database is locked'."""
    conn = sqlite3.connect(sqlite_target(database_url).path, isolation_level=None)
    try:
        conn.execute("BEGIN EXCLUSIVE")
        yield
    finally:
        conn.execute("ROLLBACK")
        conn.close()


@asynccontextmanager
async def outage(backend: str, database_url: str, request: pytest.FixtureRequest) -> Any:
    """The database is unreachable inside the block and comes back after it."""
    if backend == "postgres":
        server = request.getfixturevalue("pg_server")
        server.stop()
        try:
            yield
        finally:
            server.start()
    else:
        with sqlite_write_lock(database_url):
            yield


async def wait_for(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.01)


def retried(store: CallStore, times: int) -> Callable[[], bool]:
    """A condition: the store's writer has retried at least ``times`` times."""
    return lambda: store.stats.retries >= times


def record_sample_call(store: CallStore, call_sid: str = "CA" + "1" * 32) -> str:
    store.record_call_started(
        call_sid,
        stream_sid="MZ" + "2" * 32,
        from_number="+15550001111",
        to_number="+15550002222",
        agent="support",
        audio_mode="passthrough",
        dialect="ga",
        started_at=T0,
    )
    store.record_turn(call_sid, 0, "agent", "Hi, how can I help?", start_ms=120, end_ms=1850)
    store.record_turn(call_sid, 1, "caller", "What's my balance?", start_ms=2300, end_ms=3900)
    store.record_turn(
        call_sid, 2, "agent", "Your balance is", start_ms=4100, end_ms=4900, interrupted=True
    )
    store.record_turn(call_sid, 3, "system", "DTMF 5", start_ms=5000, end_ms=5000)
    store.record_usage(
        call_sid, "resp_1", USAGE_EVENT, audio_in_s=3.5, audio_out_s=4.25, status="completed"
    )
    store.record_usage(call_sid, "resp_2", {"total_tokens": 0}, status="cancelled")
    store.record_call_ended(call_sid, "caller-hangup", ended_at=T0 + timedelta(seconds=64.5))
    return call_sid


# -------------------------------------------------------------- both backends


async def test_round_trip(make_store: StoreFactory) -> None:
    store = await make_store()
    call_sid = record_sample_call(store)
    store.record_twilio_status(call_sid, "completed", 65)
    assert await store.flush(5.0)
    assert await store.backend.schema_version() == LATEST_VERSION

    call = await store.get_call(call_sid)
    assert call is not None
    assert (call.stream_sid, call.from_number, call.to_number) == (
        "MZ" + "2" * 32,
        "+15550001111",
        "+15550002222",
    )
    assert (call.agent, call.audio_mode, call.dialect) == ("support", "passthrough", "ga")
    assert call.started_at == T0
    assert call.ended_at == T0 + timedelta(seconds=64.5)
    assert call.end_reason == "caller-hangup"
    assert (call.twilio_status, call.twilio_duration_s, call.duration_s) == ("completed", 65, 65)
    assert [(t.seq, t.speaker, t.interrupted) for t in call.turns] == [
        (0, "agent", False),
        (1, "caller", False),
        (2, "agent", True),
        (3, "system", False),
    ]
    assert call.turns[1].text == "What's my balance?"
    assert (call.turns[1].start_ms, call.turns[1].end_ms) == (2300, 3900)
    assert [r.response_id for r in call.responses] == ["resp_1", "resp_2"]
    assert call.responses[0].tokens == TokenUsage(1500, 1000, 500, 200, 800, 100, 100, 400)
    assert call.responses[1].status == "cancelled"
    assert call.totals.responses == 2
    assert call.totals.total_tokens == 1500
    assert call.totals.audio_out_s == pytest.approx(4.25)
    assert call.totals.cost_usd == pytest.approx(USAGE_COST)

    [summary] = await store.list_calls()
    assert summary.call_sid == call_sid
    assert summary.turn_count == 4
    assert summary.cost_usd == pytest.approx(USAGE_COST)
    assert await store.get_call("CA-unknown") is None


async def test_store_protocol_and_text_cleaning(make_store: StoreFactory) -> None:
    store: Store = await make_store()
    assert isinstance(store, Store)
    store.record_call_started("CA-nul", started_at=T0)
    store.record_turn("CA-nul", 0, "caller", "a\x00b ünïcødé ☎")
    assert await store.flush()
    call = await store.get_call("CA-nul")
    assert call is not None and call.turns[0].text == "ab ünïcødé ☎"


async def test_same_logical_schema_in_both_backends(tmp_path: Path, pg_server: Any) -> None:
    sqlite_store = open_store(f"sqlite:///{tmp_path}/s.db", prices=Prices())
    pg_store = open_store(pg_server.create_database(), prices=Prices())
    columns: dict[str, dict[str, list[str]]] = {}
    for name, store, query in (
        ("sqlite", sqlite_store, "SELECT name FROM pragma_table_info(?) ORDER BY cid"),
        (
            "postgres",
            pg_store,
            "SELECT column_name AS name FROM information_schema.columns "
            "WHERE table_name = ? AND table_schema = 'public' ORDER BY ordinal_position",
        ),
    ):
        await store.backend.connect()
        columns[name] = {
            table: [row["name"] for row in await store.backend.fetch(query, (table,))]
            for table in ("schema_version", "calls", "turns", "responses")
        }
        assert await store.backend.schema_version() == LATEST_VERSION
        await store.close()
    assert columns["sqlite"] == columns["postgres"]
    assert columns["sqlite"]["turns"][:3] == ["call_sid", "seq", "speaker"]


async def test_records_survive_restart(make_store: StoreFactory) -> None:
    first = await make_store()
    call_sid = record_sample_call(first)
    assert await first.close()  # close() flushes without an explicit flush()
    second = await make_store()
    call = await second.get_call(call_sid)
    assert call is not None and len(call.turns) == 4 and len(call.responses) == 2


async def test_status_callback_before_the_call_record(make_store: StoreFactory) -> None:
    store = await make_store()
    call_sid = "CA" + "3" * 32
    store.record_twilio_status(call_sid, "completed", 42)
    assert await store.flush()
    early = await store.get_call(call_sid)
    assert early is not None
    assert (early.twilio_status, early.started_at, early.turns) == ("completed", None, ())

    record_sample_call(store, call_sid)
    assert await store.flush()
    call = await store.get_call(call_sid)
    assert call is not None
    assert (call.twilio_status, call.twilio_duration_s) == ("completed", 42)
    assert (call.started_at, call.end_reason, len(call.turns)) == (T0, "caller-hangup", 4)


async def test_status_callback_after_the_call_ended(make_store: StoreFactory) -> None:
    store = await make_store()
    call_sid = record_sample_call(store)
    assert await store.flush()
    store.record_twilio_status(call_sid, "in-progress")
    store.record_twilio_status(call_sid, "completed", 66)
    store.record_twilio_status(call_sid, "ringing")  # late and out of order: ignored
    store.record_call_ended(call_sid, "server-shutdown")  # a consequence: first reason wins
    assert await store.flush()
    call = await store.get_call(call_sid)
    assert call is not None
    assert (call.twilio_status, call.twilio_duration_s) == ("completed", 66)
    assert call.end_reason == "caller-hangup"
    assert call.agent == "support"  # status upserts never blank the bridge's fields


async def test_turn_recorded_again_is_replaced(make_store: StoreFactory) -> None:
    store = await make_store()
    store.record_call_started("CA-r", started_at=T0)
    store.record_turn("CA-r", 0, "agent", "Let me", start_ms=100)
    store.record_turn("CA-r", 0, "agent", "Let me check.", start_ms=100, end_ms=900)
    store.record_usage("CA-r", "resp_1", USAGE_EVENT)
    store.record_usage("CA-r", "resp_1", USAGE_EVENT)  # a retried response.done
    assert await store.flush()
    call = await store.get_call("CA-r")
    assert call is not None
    assert [(t.text, t.end_ms) for t in call.turns] == [("Let me check.", 900)]
    assert call.totals.responses == 1


async def test_writes_are_batched(make_store: StoreFactory) -> None:
    store = await make_store(batch_size=200)
    store.record_call_started("CA-batch", started_at=T0)
    for seq in range(999):
        store.record_turn("CA-batch", seq, "caller", f"line {seq}", start_ms=seq * 10)
    assert store.stats.written == 0  # nothing was written inside record_*
    assert await store.flush(10.0)
    stats = store.stats
    assert stats.written == 1000
    assert 5 <= stats.batches <= 10  # 1000 records in batches of at most 200
    call = await store.get_call("CA-batch")
    assert call is not None and call.turn_count == 999


async def test_bad_record_is_dropped_alone(
    make_store: StoreFactory, caplog: pytest.LogCaptureFixture
) -> None:
    store = await make_store()
    store.record_call_started("CA-bad", started_at=T0)
    store.record_turn("CA-bad", 0, "caller", "fine")
    store.record_turn("CA-bad", 2**70, "caller", "seq too large for any integer column")
    store.record_turn("CA-bad", 1, "agent", "also fine")
    with caplog.at_level(logging.ERROR, logger="bridge.store"):
        assert await store.flush()
    call = await store.get_call("CA-bad")
    assert call is not None and [t.seq for t in call.turns] == [0, 1]
    assert store.stats.dropped_bad == 1
    assert "dropping call record turn CA-bad#" in caplog.text
    with pytest.raises(ValueError):
        store.record_turn("CA-bad", 3, "robot", "unknown speaker")  # type: ignore[arg-type]


async def test_outage_records_are_kept_and_land_after_recovery(
    backend: str,
    database_url: str,
    make_store: StoreFactory,
    request: pytest.FixtureRequest,
    caplog: pytest.LogCaptureFixture,
) -> None:
    store = await make_store(fast_url(database_url, backend))
    call_sid = "CA" + "4" * 32
    store.record_call_started(call_sid, from_number="+15550003333", started_at=T0)
    assert await store.flush()

    with caplog.at_level(logging.INFO, logger="bridge.store"):
        async with outage(backend, database_url, request):
            loop = asyncio.get_running_loop()
            began = loop.time()
            for seq in range(50):
                store.record_turn(call_sid, seq, "caller", f"said {seq}", start_ms=seq * 100)
            store.record_usage(call_sid, "resp_1", USAGE_EVENT)
            store.record_call_ended(call_sid, "caller-hangup")
            store.record_twilio_status(call_sid, "completed", 30)
            # record_* only enqueue: they returned without waiting on the dead database.
            assert loop.time() - began < 0.5
            await wait_for(retried(store, 3))
            assert store.stats.failing and store.stats.pending == 53
            assert not await store.flush(0.1)
        assert await store.flush(10.0)

    stats = store.stats
    assert (stats.pending, stats.failing, stats.dropped_overflow, stats.dropped_bad) == (
        0,
        False,
        0,
        0,
    )
    call = await store.get_call(call_sid)
    assert call is not None
    assert call.turn_count == 50 and call.totals.responses == 1
    assert (call.end_reason, call.twilio_status) == ("caller-hangup", "completed")
    assert "cannot write call records" in caplog.text
    assert "recovered" in caplog.text


def fast_url(database_url: str, backend: str) -> str:
    """For SQLite, a short lock wait so the outage test retries quickly."""
    return database_url + "?timeout=0.05" if backend == "sqlite" else database_url


async def test_queue_bound_refuses_new_records_with_a_warning(
    backend: str,
    database_url: str,
    make_store: StoreFactory,
    request: pytest.FixtureRequest,
    caplog: pytest.LogCaptureFixture,
) -> None:
    store = await make_store(fast_url(database_url, backend), max_pending=5)
    with caplog.at_level(logging.WARNING, logger="bridge.store"):
        async with outage(backend, database_url, request):
            for seq in range(8):
                store.record_turn("CA-full", seq, "caller", "x")
            assert store.stats.dropped_overflow == 3
            assert "queue is full" in caplog.text
        assert await store.flush(10.0)
    call_turns = await store.backend.fetch("SELECT seq FROM turns ORDER BY seq")
    assert [r["seq"] for r in call_turns] == [0, 1, 2, 3, 4]


async def test_close_gives_up_after_its_timeout(
    backend: str,
    database_url: str,
    make_store: StoreFactory,
    request: pytest.FixtureRequest,
    caplog: pytest.LogCaptureFixture,
) -> None:
    store = await make_store(fast_url(database_url, backend))
    async with outage(backend, database_url, request):
        store.record_call_started("CA-lost", started_at=T0)
        with caplog.at_level(logging.ERROR, logger="bridge.store"):
            began = asyncio.get_running_loop().time()
            assert not await store.close(timeout=0.3)
            assert asyncio.get_running_loop().time() - began < 3.0
        assert "1 call records not written" in caplog.text


# ------------------------------------------------------------ SQLite specifics


async def test_sqlite_unreachable_at_start_then_appears(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    folder = tmp_path / "not-yet"
    url = f"sqlite:///{folder}/bridge.db"
    store = open_store(url, retry_initial_s=0.02, retry_max_s=0.1, prices=Prices())
    with caplog.at_level(logging.WARNING, logger="bridge.store"):
        await store.start()  # the bridge starts even though its database cannot be opened
        store.record_call_started("CA-late", started_at=T0)
        await wait_for(retried(store, 2))
    assert "unavailable at start-up" in caplog.text
    folder.mkdir()
    assert await store.flush(5.0)
    assert [c.call_sid for c in await store.list_calls()] == ["CA-late"]
    mode = await store.backend.fetch("PRAGMA journal_mode")
    assert mode[0]["journal_mode"] == "wal"
    await store.close()


async def test_sqlite_in_memory(make_store: StoreFactory) -> None:
    store = await make_store("sqlite:///:memory:")
    record_sample_call(store)
    assert await store.flush()
    assert len(await store.list_calls()) == 1


def test_sqlite_url_forms(tmp_path: Path) -> None:
    assert sqlite_target("sqlite:///relative.db").path == "relative.db"
    assert sqlite_target("sqlite:////abs/path.db").path == "/abs/path.db"
    assert sqlite_target("sqlite:///:memory:").in_memory
    assert sqlite_target("sqlite://").in_memory
    assert sqlite_target("bridge.db").path == "bridge.db"
    assert sqlite_target("sqlite:///x.db?timeout=0.5").busy_timeout_s == 0.5
    assert SQLiteBackend("sqlite:///x.db").target.path == "x.db"


def test_listing_is_newest_first_and_limited(database_url: str) -> None:
    async def fill() -> list[str]:
        async with open_store(Secret(database_url), prices=Prices()) as store:
            for i in range(5):
                store.record_call_started(f"CA{i}", started_at=T0 + timedelta(minutes=i))
            store.record_twilio_status("CA-status-only", "no-answer")
            await store.flush()
            return [c.call_sid for c in await store.list_calls(limit=3)]

    # The status-only row has no start time and sorts by when it arrived (now).
    assert asyncio.run(fill()) == ["CA-status-only", "CA4", "CA3"]


# ------------------------------------------------------------------ redaction


def test_redact_url_and_scrub() -> None:
    url = "postgresql://bridge:s3cr%40t@db.example.com:5432/calls"
    assert redact_url(url) == "postgresql://bridge:***@db.example.com:5432/calls"
    assert redact_url("postgres://u:pw@[::1]/x") == "postgres://u:***@[::1]/x"
    assert redact_url("sqlite:///bridge.db") == "sqlite:///bridge.db"
    assert redact_url("postgresql://u@h/db") == "postgresql://u@h/db"
    message = f"could not connect to {url} with password s3cr@t"
    cleaned = scrub(message, url)
    assert "s3cr" not in cleaned and "***" in cleaned
    try:  # without asyncpg installed this raises, and the error must be redacted too
        shown = repr(open_store(url, prices=Prices()))
    except StoreError as exc:
        shown = str(exc)
    assert "s3cr" not in shown and "***" in shown


async def test_postgres_password_never_logged(
    pg_server: Any, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    wrong = "Wr0ng-" + pg_server.password
    refused_port = pg_server.url(password=wrong).replace(str(pg_server.port), "1")
    for url in (pg_server.url(password=wrong), refused_port):
        store = open_store(url, retry_initial_s=0.02, retry_max_s=0.05, prices=Prices())
        with caplog.at_level(logging.DEBUG):
            await store.start()
            store.record_call_started("CA-secret", started_at=T0)
            await wait_for(retried(store, 2))
            assert not await store.close(timeout=0.2)
        assert "Wr0ng" not in repr(store)
    assert "cannot write call records" in caplog.text
    assert "Wr0ng" not in caplog.text
    assert pg_server.password not in caplog.text
    await asyncio.to_thread(store_cli.main, [], pg_server.url(password=wrong))
    err = capsys.readouterr().err
    assert "error:" in err and "Wr0ng" not in err and "***" in err


# ------------------------------------------------------------------------- CLI


def test_cli_text_and_json(
    backend: str, database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    async def fill() -> str:
        async with open_store(database_url, prices=Prices()) as store:
            call_sid = record_sample_call(store)
            store.record_twilio_status(call_sid, "completed", 65)
            await store.flush()
            return call_sid

    call_sid = asyncio.run(fill())

    assert store_cli.main([], database_url) == 0
    listing = capsys.readouterr().out
    row = next(line for line in listing.splitlines() if call_sid in line)
    for cell in ("2025-03-04 05:06:07Z", "+15550001111", "+15550002222", "support", "1:05"):
        assert cell in row
    assert "caller-hangup" in row and f"${USAGE_COST:.4f}" in row
    assert row.split()[-2] == "4"  # turns

    assert store_cli.main(["--json", "--limit", "5"], database_url) == 0
    data = json.loads(capsys.readouterr().out)
    [entry] = data["calls"]
    assert entry["call_sid"] == call_sid and entry["turn_count"] == 4
    assert entry["started_at"] == "2025-03-04T05:06:07+00:00"
    assert entry["duration_s"] == 65 and entry["cost_usd"] == pytest.approx(USAGE_COST)

    assert store_cli.main(["show", call_sid], database_url) == 0
    shown = capsys.readouterr().out
    assert "00:00.120–00:01.850  agent   Hi, how can I help?" in shown
    assert "00:02.300–00:03.900  caller  What's my balance?" in shown
    assert "00:04.100–00:04.900  agent   Your balance is [interrupted]" in shown
    assert "00:05.000–00:05.000  system  DTMF 5" in shown
    assert "Usage (2 responses)" in shown and f"est. cost ${USAGE_COST:.4f}" in shown

    assert store_cli.main(["show", call_sid, "--json"], database_url) == 0
    detail = json.loads(capsys.readouterr().out)
    assert [t["speaker"] for t in detail["turns"]] == ["agent", "caller", "agent", "system"]
    assert detail["turns"][2]["interrupted"] is True
    assert detail["totals"]["cost_usd"] == pytest.approx(USAGE_COST)
    assert detail["responses"][0]["tokens"]["output_audio_tokens"] == 400

    assert store_cli.main(["show", "CA-nope"], database_url) == 1
    assert "no call CA-nope" in capsys.readouterr().err


def test_cli_missing_sqlite_file_is_not_created(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"sqlite:///{tmp_path}/absent.db"
    assert store_cli.main([], url) == 0
    assert "no calls recorded yet" in capsys.readouterr().out
    assert not (tmp_path / "absent.db").exists()
    assert store_cli.main(["--bogus"], url) == 2
    assert store_cli.main([], "mysql://u:p@h/db") == 3
    assert "p@h" not in capsys.readouterr().err


def test_cli_offsets() -> None:
    assert store_cli.offset(0) == "00:00.000"
    assert store_cli.offset(61_234) == "01:01.234"
    assert store_cli.offset(None) == "--:--.---"


# --------------------------------------------------------------------- pricing


def test_prices_defaults_and_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    usage = TokenUsage.from_event(USAGE_EVENT)
    assert Prices().cost(usage) == pytest.approx(USAGE_COST)
    split = dict(USAGE_EVENT)
    split["input_token_details"] = {
        **USAGE_EVENT["input_token_details"],
        "cached_tokens_details": {"text_tokens": 100, "audio_tokens": 0},
    }
    expected = (100 * 4 + 800 * 32 + 100 * 0.4 + 100 * 16 + 400 * 64) / 1e6
    assert Prices().cost(TokenUsage.from_event(split)) == pytest.approx(expected)

    monkeypatch.setenv("BRIDGE_PRICES", '{"audio_out": 0, "text_out": 0}')
    cheaper = Prices.from_env()
    assert cheaper.audio_out == 0 and cheaper.audio_in == 32
    assert open_store("sqlite:///:memory:").prices == cheaper

    for bad in ("{", "[1]", '{"audio_in": -1}', '{"video_in": 3}'):
        monkeypatch.setenv("BRIDGE_PRICES", bad)
        with pytest.raises(ConfigError):
            Prices.from_env()
    assert Prices.from_env({}) == Prices()
    assert TokenUsage.from_event({"total_tokens": "junk", "input_token_details": None}) == (
        TokenUsage()
    )


async def test_search_by_number_and_date_and_recording_path(make_store: StoreFactory) -> None:
    store = await make_store()
    day = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)
    store.record_call_started("CA1", from_number="+15550001111", to_number="+15559990000",
                              started_at=day)
    store.record_call_started("CA2", from_number="+15557770000", to_number="+15559990000",
                              started_at=day + timedelta(days=2))
    store.record_call_started("BR3", from_number="browser", started_at=day + timedelta(days=3))
    store.record_recording("CA2", "/recordings/20260312-CA2.wav")
    assert await store.flush()

    async def ids(**query: Any) -> list[str]:
        return [c.call_sid for c in await store.search_calls(**query)]

    assert await ids() == ["BR3", "CA2", "CA1"]
    assert await ids(number="0001111") == ["CA1"]
    assert await ids(number="999") == ["CA2", "CA1"]  # either side of the call
    assert await ids(number="4242") == []
    assert await ids(number="%") == ["BR3", "CA2", "CA1"]  # wildcards are not special
    assert await ids(since=day + timedelta(days=1)) == ["BR3", "CA2"]
    assert await ids(until=day + timedelta(days=1)) == ["CA1"]
    assert await ids(since=day, until=day + timedelta(days=2, hours=1), number="+1555") == [
        "CA2", "CA1"]
    assert await ids(limit=1) == ["BR3"]
    record = await store.get_call("CA2")
    assert record is not None and record.recording_path == "/recordings/20260312-CA2.wav"
    assert (await store.get_call("CA1")).recording_path is None  # type: ignore[union-attr]
