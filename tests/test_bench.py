"""Smoke test of the load benchmark: two short calls through a real bridge process.

No speed assertions (speed lives in bench/ and docs/performance.md): only that
the run completes and every summary field is present and sane.
"""

from __future__ import annotations

import json

import pytest

from bridge.__main__ import main
from bridge.devtools.bench.load import BenchOptions, run_bench, summary_line

pytestmark = pytest.mark.e2e


def test_bench_two_calls_summary_is_sane() -> None:
    s = run_bench(BenchOptions(calls=2, duration=2.0, ramp=0.5, barge_every=0,
                               log_level="WARNING", warmup=False))
    assert s["calls"] == 2
    assert s["calls_failed"] == 0
    assert s["window_s"] >= 2.0
    assert s["cpu_ms_per_call_s"] is not None and s["cpu_ms_per_call_s"] >= 0
    assert s["rss_idle_kib"] > 0 and s["rss_steady_kib"] > 0
    for key in ("upstream_ms", "downstream_ms", "start_to_model_ready_ms", "gen_loop_lag_ms"):
        dist = s[key]
        assert set(dist) >= {"n", "p50", "p95", "p99", "max"}
    # 2 calls x 2 s of 20 ms frames: the upstream side always has samples.
    assert s["upstream_ms"]["n"] > 100
    assert 0 <= s["upstream_ms"]["p50"] <= s["upstream_ms"]["p99"]
    assert s["start_to_model_ready_ms"]["n"] == 2
    assert s["dropped_up_bytes"] == 0
    assert s["garbled_frames"] == 0
    assert s["model_sockets_open_1s_after_hangup"] == 0
    line = summary_line(s)
    assert line.startswith("bench: calls=2 ")
    json.dumps(s, default=str)


def test_bench_cli_registered(capsys: object) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["bench", "--help"])
    assert exc.value.code == 0


def test_resampler_micro_benchmark_prints_its_figures(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "--resampler", "--frames", "5", "--runs", "1"]) == 0
    out = capsys.readouterr().out
    up = next(line for line in out.splitlines() if line.startswith("up   8k -> 24k"))
    us, delay, rejection = (float(v) for v in up.split()[4:7])
    assert us > 0
    assert abs(delay - 2.958) < 0.01  # measured from the impulse response
    assert rejection < -60
    assert "down, 100 ms deltas" in out


def test_floor_forwarder_moves_every_byte_and_reports_its_cpu() -> None:
    """The floor is only meaningful if it really carries the load's traffic, both ways."""
    from bridge.devtools.bench import floor

    result = floor.floor_bench(calls=3, duration=2.0, forwarder_cpu=None, gen_cpu=None)
    up_per_s = floor.CALLER_FRAMES_PER_S * floor.CALLER_FRAME_BYTES + (
        floor.MARK_ECHOES_PER_S * floor.MARK_ECHO_BYTES)
    down_per_s = floor.MODEL_DELTAS_PER_S * floor.MODEL_DELTA_BYTES + (
        floor.MODEL_OTHER_EVENTS_PER_S * floor.MODEL_OTHER_EVENT_BYTES)
    expected_up = 3 * up_per_s * result.window_s
    expected_down = 3 * down_per_s * result.window_s
    # Forwarded on the sockets' own schedule: within a fifth of the nominal rate.
    assert 0.8 * expected_up <= result.bytes_up <= 1.2 * expected_up
    assert 0.8 * expected_down <= result.bytes_down <= 1.2 * expected_down
    assert result.cpu_ms_per_call_s > 0
    assert result.line().startswith("bench[floor]: calls=3 ")
