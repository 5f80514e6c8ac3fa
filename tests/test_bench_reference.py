"""``bench --reference``: both bridges under the same short load, both lines printed.

Needs the public reference sample (``../shared/reference/twilio-sample`` beside the repo,
or ``BRIDGE_REFERENCE_DIR``) and its requirements (a venv built once with pip and cached,
or ``BRIDGE_REFERENCE_PYTHON``); without either the test skips and says which. No speed
assertion: only that every figure on both lines and the ratio line is a finite number.
"""

from __future__ import annotations

import math
import os
import re
from pathlib import Path

import pytest

from bridge.__main__ import main
from bridge.devtools.bench.reference import ReferenceEnvError, check_reference_dir, reference_python

REPO = Path(__file__).resolve().parent.parent
DEFAULT_DIR = REPO.parent / "shared" / "reference" / "twilio-sample"

pytestmark = pytest.mark.e2e


def _reference_dir() -> str:
    ref = os.environ.get("BRIDGE_REFERENCE_DIR") or str(DEFAULT_DIR)
    try:
        check_reference_dir(ref)
    except ReferenceEnvError as exc:
        pytest.skip(f"reference sample not available: {exc} (set BRIDGE_REFERENCE_DIR)")
    return ref


def _number(line: str, key: str) -> float:
    m = re.search(rf"{re.escape(key)}=([^ ]+)", line)
    assert m is not None, f"{key} missing from: {line}"
    value = float(m.group(1).split("/")[-1])
    assert math.isfinite(value), f"{key} not finite in: {line}"
    return value


def test_bench_reference_prints_both_lines_with_finite_figures(
        capsys: pytest.CaptureFixture[str]) -> None:
    ref = _reference_dir()
    try:
        python = reference_python(ref, os.environ.get("BRIDGE_REFERENCE_PYTHON"))
    except ReferenceEnvError as exc:
        pytest.skip(f"the reference's requirements cannot be installed: {exc}")
    cpus = sorted(os.sched_getaffinity(0))
    pin = ["--bridge-cpu", str(cpus[0]), "--gen-cpu", str(cpus[-1])]
    rc = main(["bench", "--calls", "3", "--duration", "3", "--ramp", "0.5", "--barge-every", "0",
               "--log-level", "WARNING", "--no-warmup", *pin,
               "--reference", ref, "--reference-python", python])
    out = capsys.readouterr().out
    assert rc == 0, out
    lines = {line.split(":", 1)[0]: line for line in out.splitlines() if line.startswith("bench")}
    assert {"bench[this]", "bench[reference]", "bench"} <= set(lines), out
    for side in ("bench[this]", "bench[reference]"):
        line = lines[side]
        assert "calls=3 " in line and "failed=0 " in line, line
        assert _number(line, "cpu_ms_per_call_s") > 0
        assert _number(line, "rss_kib_per_call") == _number(line, "rss_kib_per_call")
        for key in ("up_ms_p50/95/99", "down_ms_p50/95/99"):
            p99 = _number(line, key)
            assert p99 >= 0
        assert _number(line, "open_model_sockets_1s") >= 0
    ratio = lines["bench"]
    assert ratio.startswith("bench: reference/this: ")
    for name in ("cpu_ms_per_call_s", "up_p99_ms", "down_p99_ms"):
        m = re.search(rf"{name} ([0-9.]+)/([0-9.]+)=([0-9.]+)x", ratio)
        assert m is not None, f"{name} ratio missing or not finite: {ratio}"
        a, b, r = (float(g) for g in m.groups())
        assert r == pytest.approx(a / b, rel=0.02, abs=0.01)
    assert re.search(r"open_model_sockets_1s \d+/0 ", ratio), ratio
    marker = re.search(r"host_marker_us_per_frame=([0-9.]+)/([0-9.]+)", ratio)
    assert marker is not None and all(float(g) > 0 for g in marker.groups()), ratio
