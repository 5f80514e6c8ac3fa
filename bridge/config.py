"""Settings from the environment, validated once at start-up.

Every problem is collected and reported together, one line each, so a
developer fixing a deployment sees the whole list instead of playing
whack-a-mole with tracebacks.  Secret values are wrapped in :class:`Secret`
so that no ``repr``, log line or error message can leak them by accident.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Literal
from urllib.parse import urlsplit, urlunsplit

if TYPE_CHECKING:
    from bridge.cascade.settings import CascadeSettings

Dialect = Literal["ga", "beta", "azure"]
AudioMode = Literal["passthrough", "pcm16"]
SoftphoneAudio = Literal["mulaw", "pcm16"]
VadType = Literal["server_vad", "semantic_vad", "none"]
BackendName = Literal["realtime", "cascade"]
BACKENDS = ("realtime", "cascade")

VOICES = ("alloy", "ash", "ballad", "coral", "echo", "sage", "shimmer", "verse", "marin", "cedar")
DEFAULT_INSTRUCTIONS = (
    "You are a friendly, concise voice assistant answering a phone call. "
    "Keep answers short and conversational; the caller can interrupt you at any time."
)


class Secret:
    """A string that refuses to show itself in reprs, logs and f-strings."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

    def __bool__(self) -> bool:
        return bool(self._value)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


class ConfigError(Exception):
    """One or more settings are wrong; ``problems`` holds one line per problem."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("invalid configuration:\n" + "\n".join(f"  - {p}" for p in problems))


@dataclass(frozen=True)
class TurnDetection:
    """The model's turn detection; ``type='none'`` means the bridge never expects VAD."""

    type: VadType = "server_vad"
    threshold: float = 0.5
    silence_duration_ms: int = 500
    prefix_padding_ms: int = 300
    eagerness: str = "auto"
    create_response: bool = True
    interrupt_response: bool = True

    @property
    def server_interrupts(self) -> bool:
        """True when the model cancels its own response on caller speech."""
        return self.type != "none" and self.interrupt_response


@dataclass(frozen=True)
class AgentConfig:
    """What the voice agent is: its prompt, voice, greeting, turn taking and tools."""

    name: str = "default"
    instructions: str = DEFAULT_INSTRUCTIONS
    voice: str = "marin"
    greeting: str | None = None
    turn_detection: TurnDetection = field(default_factory=TurnDetection)
    transcription_model: str | None = "gpt-4o-transcribe"
    tools: tuple[str, ...] = ()
    dtmf_length: int | None = None
    """Digits in a complete keypad entry (an account number...): the agent answers then,
    without waiting for ``#`` or a pause."""
    on_model_failure: Literal["hang_up", "transfer", "retry"] = "hang_up"
    """When the model cannot be reached: apologise and hang up, apologise and transfer to
    ``fallback_number``, or keep retrying for ``model_retry_s`` (then hang up)."""
    fallback_number: str | None = None
    model_retry_s: int = 60
    backend: BackendName = "realtime"
    """Which model backend serves this agent's calls: one speech-to-speech Realtime
    session, or the STT -> chat LLM -> TTS cascade (``docs/cascade.md``)."""
    cascade: tuple[tuple[str, str], ...] = ()
    """Per-agent overrides of the process's ``CASCADE_*`` stage settings, as
    ``(key, value)`` pairs (``llm_model``, ``tts_voice``...); a tuple so profiles stay
    hashable and comparable."""


@dataclass(frozen=True)
class Settings:
    """Everything the service needs, validated.  Build with :func:`load_settings`."""

    openai_api_key: Secret | None = None
    realtime_url: str = "wss://api.openai.com/v1/realtime"
    realtime_model: str = "gpt-realtime"
    dialect: Dialect = "ga"
    audio_mode: AudioMode = "passthrough"
    public_url: str | None = None
    agent: AgentConfig = field(default_factory=AgentConfig)
    twilio_account_sid: str | None = None
    twilio_auth_token: Secret | None = None
    twilio_api_key: str | None = None
    twilio_api_secret: Secret | None = None
    twilio_api_base_url: str | None = None
    insecure_dev: bool = False
    max_calls: int = 200
    max_call_seconds: int = 3600
    max_message_bytes: int = 256 * 1024
    transfer_numbers: tuple[str, ...] = ()
    database_url: Secret = field(default_factory=lambda: Secret("sqlite:///bridge.db"))
    tapes_dir: str | None = None
    tapes_gzip: bool = False
    agents_file: str | None = None
    log_level: str = "INFO"
    overflow: Literal["busy", "fallback"] = "busy"
    json_codec: Literal["stdlib", "orjson"] = "stdlib"
    #: Who serves ``/media-stream``: ``lean`` (bridge.web.lean_stream, no ASGI, measured
    #: cheaper per call-second) or ``asgi`` (the Starlette route, as before).
    stream_server: Literal["lean", "asgi"] = "lean"
    tool_filler_after_ms: int = 3000
    tool_filler_instructions: str | None = None
    preconnect: bool = True
    #: This replica's own Media Streams URL (a fleet routes it to this replica, so the
    #: stream reaches the socket the webhook pre-opened); default: PUBLIC_URL's.
    replica_stream_url: str | None = None
    metrics_port: int | None = None
    metrics_host: str = "0.0.0.0"
    metrics_token: Secret | None = None
    log_format: Literal["text", "json"] = "text"
    allow_http: bool = False
    #: When the shared replay ledger (the database) cannot answer: ``refuse`` the stream
    #: (single use holds fleet-wide) or accept on this replica's memory (``local``).
    replay_outage: Literal["refuse", "local"] = "refuse"
    max_pending_streams: int = 500
    start_timeout_s: float = 5.0
    reconnect: bool = True
    reconnect_budget_s: float = 10.0
    filler_after_ms: int = 1200
    rollover_after_s: float = 3300.0
    filler_audio: str | None = None
    #: The cascade's stage settings from ``CASCADE_*`` (None: the defaults), read here so
    #: the bridge's environment is read in one place and its problems reported together.
    cascade: CascadeSettings | None = None
    apology_audio: str | None = None
    operator_token: Secret | None = None
    recordings_dir: str | None = None
    recordings_retention_days: int = 30
    #: The softphone page's wire encoding when it offers both (see bridge.operator.softphone).
    softphone_audio: SoftphoneAudio = "mulaw"

    @property
    def stream_url(self) -> str | None:
        """The ``wss://`` Media Streams URL Twilio connects to, derived from PUBLIC_URL."""
        if self.replica_stream_url:
            return self.replica_stream_url
        if not self.public_url:
            return None
        return websocket_url(self.public_url, "/media-stream")

    def with_changes(self, **changes: object) -> Settings:
        return replace(self, **changes)  # type: ignore[arg-type]


def websocket_url(public_url: str, path: str) -> str:
    """Map the https base URL to the ws(s) URL of ``path`` (http→ws, https→wss)."""
    parts = urlsplit(public_url)
    scheme = {"https": "wss", "http": "ws"}.get(parts.scheme, parts.scheme)
    base = parts.path.rstrip("/")
    return urlunsplit((scheme, parts.netloc, base + path, "", ""))


def http_url(public_url: str, path: str) -> str:
    parts = urlsplit(public_url)
    return urlunsplit((parts.scheme, parts.netloc, parts.path.rstrip("/") + path, "", ""))


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


class _Reader:
    """Reads typed values from the environment, collecting problems instead of raising."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self.env = env
        self.problems: list[str] = []

    def text(self, name: str, default: str | None = None) -> str | None:
        value = self.env.get(name)
        if value is None or value.strip() == "":
            return default
        return value.strip()

    def secret(self, name: str) -> Secret | None:
        value = self.text(name)
        return Secret(value) if value else None

    def choice(self, name: str, options: tuple[str, ...], default: str) -> str:
        value = (self.text(name, default) or default).lower()
        if value not in options:
            self.problems.append(f"{name}={value!r} is not one of: {', '.join(options)}")
            return default
        return value

    def boolean(self, name: str, default: bool) -> bool:
        value = self.text(name)
        if value is None:
            return default
        if value.lower() in _TRUE:
            return True
        if value.lower() in _FALSE:
            return False
        self.problems.append(f"{name}={value!r} is not a boolean (use 1/0, true/false)")
        return default

    def integer(self, name: str, default: int, low: int, high: int) -> int:
        value = self.text(name)
        if value is None:
            return default
        try:
            number = int(value)
        except ValueError:
            self.problems.append(f"{name}={value!r} is not a whole number")
            return default
        if not low <= number <= high:
            self.problems.append(f"{name}={number} is out of range [{low}, {high}]")
            return default
        return number

    def number(self, name: str, default: float, low: float, high: float) -> float:
        value = self.text(name)
        if value is None:
            return default
        try:
            number = float(value)
        except ValueError:
            self.problems.append(f"{name}={value!r} is not a number")
            return default
        if not low <= number <= high:
            self.problems.append(f"{name}={number} is out of range [{low}, {high}]")
            return default
        return number

    def url(self, name: str, default: str | None, schemes: tuple[str, ...]) -> str | None:
        value = self.text(name, default)
        if value is None:
            return None
        parts = urlsplit(value)
        if parts.scheme not in schemes or not parts.netloc:
            self.problems.append(
                f"{name}={value!r} must be an absolute URL starting with "
                + " or ".join(f"{s}://" for s in schemes)
            )
            return default
        if name == "PUBLIC_URL" and parts.query:
            self.problems.append(f"{name} must not carry a query string")
        return value.rstrip("/")


def load_turn_detection(read: _Reader) -> TurnDetection:
    vad_type = read.choice("VAD_TYPE", ("server_vad", "semantic_vad", "none"), "server_vad")
    return TurnDetection(
        type=vad_type,  # type: ignore[arg-type]
        threshold=read.number("VAD_THRESHOLD", 0.5, 0.0, 1.0),
        silence_duration_ms=read.integer("VAD_SILENCE_MS", 500, 0, 10_000),
        prefix_padding_ms=read.integer("VAD_PREFIX_PADDING_MS", 300, 0, 10_000),
        eagerness=read.choice("VAD_EAGERNESS", ("low", "medium", "high", "auto"), "auto"),
        create_response=read.boolean("VAD_CREATE_RESPONSE", True),
        interrupt_response=read.boolean("VAD_INTERRUPT_RESPONSE", True),
    )


def _prompt_file(read: _Reader, name: str) -> str | None:
    """A configured prompt file, checked now so a bad one stops start-up, not a call."""
    path = read.text(name)
    if path is None:
        return None
    from bridge.audio.prompts import PromptFileError, load_prompt

    try:
        load_prompt(path)
    except PromptFileError as exc:
        read.problems.append(f"{name}: {exc}")
    return path


def _cascade_settings(read: _Reader) -> CascadeSettings | None:
    """``CASCADE_*`` parsed and checked now, whichever agent uses them: a typo in a
    stage setting should stop start-up, not the first cascade call."""
    from bridge.cascade.settings import CascadeSettings  # imports only this module

    try:
        return CascadeSettings.from_env(read.env)
    except ConfigError as exc:
        read.problems.extend(exc.problems)
        return None


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    """Read and validate every setting; raise :class:`ConfigError` listing all problems."""
    read = _Reader(os.environ if env is None else env)
    voice = read.choice("AGENT_VOICE", VOICES, "marin")
    transcription = read.text("AGENT_TRANSCRIPTION_MODEL", "gpt-4o-transcribe")
    agent = AgentConfig(
        instructions=read.text("AGENT_INSTRUCTIONS", DEFAULT_INSTRUCTIONS) or DEFAULT_INSTRUCTIONS,
        voice=voice,
        greeting=read.text("AGENT_GREETING"),
        turn_detection=load_turn_detection(read),
        transcription_model=None if transcription == "none" else transcription,
        tools=tuple(t.strip() for t in (read.text("AGENT_TOOLS") or "").split(",") if t.strip()),
        on_model_failure=read.choice(  # type: ignore[arg-type]
            "AGENT_ON_MODEL_FAILURE", ("hang_up", "transfer", "retry"), "hang_up"
        ),
        fallback_number=read.text("AGENT_FALLBACK_NUMBER"),
        model_retry_s=read.integer("AGENT_MODEL_RETRY_S", 60, 1, 3600),
        backend=read.choice("BRIDGE_BACKEND", BACKENDS, "realtime"),  # type: ignore[arg-type]
    )
    if agent.on_model_failure == "transfer" and not agent.fallback_number:
        read.problems.append(
            "AGENT_ON_MODEL_FAILURE=transfer needs AGENT_FALLBACK_NUMBER (a number in "
            "TRANSFER_NUMBERS)"
        )
    transfer = tuple(
        n.strip() for n in (read.text("TRANSFER_NUMBERS") or "").split(",") if n.strip()
    )
    for number in transfer:
        if not (number.startswith("+") and number[1:].isdigit()) and not number.startswith("sip:"):
            read.problems.append(
                f"TRANSFER_NUMBERS entry {number!r} is not an E.164 number (+15551234567) "
                "or sip: URI"
            )
    settings = Settings(
        openai_api_key=read.secret("OPENAI_API_KEY"),
        realtime_url=read.url(
            "OPENAI_REALTIME_URL", "wss://api.openai.com/v1/realtime", ("ws", "wss")
        )
        or "wss://api.openai.com/v1/realtime",
        realtime_model=read.text("OPENAI_REALTIME_MODEL", "gpt-realtime") or "gpt-realtime",
        dialect=read.choice("OPENAI_REALTIME_DIALECT", ("ga", "beta", "azure"), "ga"),  # type: ignore[arg-type]
        audio_mode=read.choice("BRIDGE_AUDIO", ("passthrough", "pcm16"), "passthrough"),  # type: ignore[arg-type]
        public_url=read.url("PUBLIC_URL", None, ("https", "http")),
        agent=agent,
        twilio_account_sid=read.text("TWILIO_ACCOUNT_SID"),
        twilio_auth_token=read.secret("TWILIO_AUTH_TOKEN"),
        twilio_api_key=read.text("TWILIO_API_KEY"),
        twilio_api_secret=read.secret("TWILIO_API_SECRET"),
        twilio_api_base_url=read.url("TWILIO_API_BASE_URL", None, ("https", "http")),
        insecure_dev=read.boolean("BRIDGE_INSECURE_DEV", False),
        max_calls=read.integer("BRIDGE_MAX_CALLS", 200, 1, 100_000),
        max_call_seconds=read.integer("BRIDGE_MAX_CALL_SECONDS", 3600, 10, 24 * 3600),
        max_message_bytes=read.integer("BRIDGE_MAX_MESSAGE_BYTES", 256 * 1024, 4096, 16 * 2**20),
        transfer_numbers=transfer,
        database_url=Secret(
            read.text("DATABASE_URL", "sqlite:///bridge.db") or "sqlite:///bridge.db"
        ),
        tapes_dir=read.text("BRIDGE_TAPES_DIR"),
        tapes_gzip=read.boolean("BRIDGE_TAPES_GZIP", False),
        agents_file=read.text("BRIDGE_AGENTS_FILE"),
        overflow=read.choice("BRIDGE_OVERFLOW", ("busy", "fallback"), "busy"),  # type: ignore[arg-type]
        json_codec=read.choice("BRIDGE_JSON_CODEC", ("stdlib", "orjson"), "stdlib"),  # type: ignore[arg-type]
        stream_server=read.choice("BRIDGE_STREAM_SERVER", ("lean", "asgi"), "lean"),  # type: ignore[arg-type]
        preconnect=read.boolean("BRIDGE_PRECONNECT", True),
        max_pending_streams=read.integer("BRIDGE_MAX_PENDING_STREAMS", 500, 1, 1_000_000),
        start_timeout_s=read.number("BRIDGE_START_TIMEOUT_S", 5.0, 0.1, 120.0),
        reconnect=read.boolean("BRIDGE_RECONNECT", True),
        reconnect_budget_s=read.number("BRIDGE_RECONNECT_BUDGET_S", 10.0, 0.5, 600.0),
        filler_after_ms=read.integer("BRIDGE_FILLER_AFTER_MS", 1200, 0, 60_000),
        rollover_after_s=read.number("BRIDGE_ROLLOVER_AFTER_S", 3300.0, 5.0, 24 * 3600.0),
        filler_audio=_prompt_file(read, "BRIDGE_FILLER_AUDIO"),
        apology_audio=_prompt_file(read, "BRIDGE_APOLOGY_AUDIO"),
        operator_token=read.secret("BRIDGE_OPERATOR_TOKEN"),
        recordings_dir=read.text("BRIDGE_RECORDINGS_DIR"),
        recordings_retention_days=read.integer("BRIDGE_RECORDINGS_RETENTION_DAYS", 30, 0, 36500),
        softphone_audio=read.choice("BRIDGE_SOFTPHONE_AUDIO", ("mulaw", "pcm16"), "mulaw"),  # type: ignore[arg-type]
        tool_filler_after_ms=read.integer("TOOL_FILLER_AFTER_MS", 3000, 0, 600_000),
        tool_filler_instructions=read.text("TOOL_FILLER_INSTRUCTIONS"),
        log_level=read.choice("LOG_LEVEL", ("debug", "info", "warning", "error"), "info").upper(),
        replica_stream_url=read.url("BRIDGE_REPLICA_STREAM_URL", None, ("wss", "ws")),
        metrics_port=_optional_port(read, "BRIDGE_METRICS_PORT"),
        metrics_host=read.text("BRIDGE_METRICS_HOST", "0.0.0.0") or "0.0.0.0",
        metrics_token=read.secret("BRIDGE_METRICS_TOKEN"),
        log_format=read.choice("LOG_FORMAT", ("text", "json"), "text"),  # type: ignore[arg-type]
        allow_http=read.boolean("BRIDGE_ALLOW_HTTP", False),
        replay_outage=read.choice("BRIDGE_REPLAY_OUTAGE", ("refuse", "local"), "refuse"),  # type: ignore[arg-type]
        cascade=_cascade_settings(read),
    )
    if agent.backend == "cascade" and settings.audio_mode != "passthrough":
        read.problems.append(
            "BRIDGE_BACKEND=cascade needs BRIDGE_AUDIO=passthrough (the cascade sends the "
            "caller's mu-law to the STT and resamples TTS to mu-law itself)"
        )
    if read.problems:
        raise ConfigError(read.problems)
    return settings


def _optional_port(read: _Reader, name: str) -> int | None:
    if read.text(name) is None:
        return None
    return read.integer(name, 0, 1, 65535) or None


LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")


def plain_http_problems(settings: Settings) -> list[str]:
    """``http://`` gives a ``ws://`` stream URL, which Twilio will not connect to.

    Loopback hosts are fine (local tests and the demo, which Twilio never reaches), and
    ``BRIDGE_ALLOW_HTTP=1`` says so explicitly for a private test fleet behind a proxy."""
    problems = []
    for name, url, secure in (
        ("PUBLIC_URL", settings.public_url, "https"),
        ("BRIDGE_REPLICA_STREAM_URL", settings.replica_stream_url, "wss"),
    ):
        if not url or settings.allow_http:
            continue
        parts = urlsplit(url)
        if parts.scheme != secure and (parts.hostname or "") not in LOOPBACK_HOSTS:
            problems.append(
                f"{name} must start with {secure}:// - Twilio only connects Media Streams "
                f"over wss:// (set BRIDGE_ALLOW_HTTP=1 for a private test setup)"
            )
    return problems


def require_for_serving(settings: Settings) -> list[str]:
    """Problems that only matter when serving real calls (not for the demo or tests)."""
    problems = []
    if not settings.openai_api_key:
        problems.append("OPENAI_API_KEY is required to serve calls (it is never logged)")
    if not settings.public_url:
        problems.append(
            "PUBLIC_URL is required to serve calls: the https:// base URL Twilio reaches, "
            "e.g. https://abc123.ngrok.app"
        )
    return problems


def startup_problems(settings: Settings) -> list[str]:
    """Everything that stops ``serve`` from starting safely, one line each."""
    problems = require_for_serving(settings)
    if not settings.twilio_auth_token and not settings.insecure_dev:
        problems.append(
            "TWILIO_AUTH_TOKEN is required: without it nobody can check that requests come "
            "from Twilio. For local experiments only, set BRIDGE_INSECURE_DEV=1"
        )
    token = settings.operator_token
    if token is not None and len(token.reveal()) < 16:
        problems.append(
            "BRIDGE_OPERATOR_TOKEN is too short: use at least 16 random characters "
            "(e.g. python -c 'import secrets; print(secrets.token_urlsafe(24))')"
        )
    if settings.twilio_api_key and not settings.twilio_api_secret:
        problems.append("TWILIO_API_KEY is set but TWILIO_API_SECRET is not")
    problems += plain_http_problems(settings)
    return problems
