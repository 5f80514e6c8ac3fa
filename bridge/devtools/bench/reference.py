"""``bench --reference DIR``: this bridge and the public reference sample, back to back.

Why in one command: this host's speed moves by up to 3x from hour to hour, so a figure
for the reference measured at another time (or on another machine) says nothing about a
figure for this bridge measured now.  A pair runs the same load (calls, duration, ramp,
barge-ins, clocks, simulator script) with the same pinning, first against this bridge and
right after against the reference, and reports the ratios; a resampler micro-benchmark
on the bridge's core before and after the pair marks how fast the host was.

The reference is the unmodified sample (FastAPI, ``websockets``) served by its folder's
``run_reference.py`` against our Realtime simulator.  It needs its own interpreter with
its pinned ``requirements.txt`` (FastAPI is no dependency of this project): pass one with
``--reference-python``, or let :func:`reference_python` build a venv once and cache it
under ``~/.cache/twilio-realtime-bridge/`` (keyed by the requirements' hash and this
Python's version), with pip from the package index.
"""

from __future__ import annotations

import hashlib
import os
import platform
import statistics
import subprocess
import sys
import venv
from dataclasses import replace
from pathlib import Path
from typing import Any

from bridge.devtools.bench.load import BenchOptions, run_bench, summary_line

REFERENCE_IMPORTS = "import fastapi, uvicorn, websockets, twilio, dotenv"
"""What the sample's main.py imports (and run_reference.py needs) beyond the stdlib."""

RATIO_KEYS: tuple[tuple[str, str], ...] = (
    ("cpu_ms_per_call_s", "cpu_ms_per_call_s"),
    ("up_p99_ms", "upstream_ms.p99"),
    ("down_p99_ms", "downstream_ms.p99"),
    ("rss_kib_per_call", "rss_per_call_kib"),
)
"""Figures compared as reference ÷ this bridge (above 1: this bridge is cheaper/faster)."""


class ReferenceEnvError(RuntimeError):
    """The reference's requirements could not be installed or imported."""


def _cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(Path.home(), ".cache")
    return Path(base) / "twilio-realtime-bridge"


def check_reference_dir(ref_dir: str) -> Path:
    """The folder must hold the sample and its runner; say which file is missing."""
    d = Path(ref_dir).resolve()
    for name in ("main.py", "requirements.txt", "run_reference.py"):
        if not (d / name).is_file():
            raise ReferenceEnvError(f"{d} has no {name} (expected the reference sample folder)")
    return d


def _imports_ok(python: str) -> str | None:
    """None when ``python`` can import the sample's dependencies, else the error tail."""
    proc = subprocess.run([python, "-c", REFERENCE_IMPORTS], capture_output=True, text=True,
                          timeout=120, check=False)
    if proc.returncode == 0:
        return None
    lines = (proc.stderr or proc.stdout).strip().splitlines()
    return lines[-1] if lines else f"exit {proc.returncode}"


def reference_python(ref_dir: str, explicit: str | None = None,
                     cache_dir: str | None = None) -> str:
    """An interpreter that can run the reference: ``explicit``, or a cached venv.

    The venv is built once per (requirements.txt content, Python version) so repeated
    benchmark runs do not reinstall; a marker file is written only after pip succeeded
    and the imports work, so an interrupted install is redone rather than trusted.
    """
    d = check_reference_dir(ref_dir)
    if explicit is not None:
        problem = _imports_ok(explicit)
        if problem is not None:
            raise ReferenceEnvError(f"--reference-python {explicit} cannot import the "
                                    f"sample's requirements: {problem}")
        return explicit
    req = (d / "requirements.txt").read_bytes()
    key = hashlib.sha256(req + platform.python_version().encode()).hexdigest()[:12]
    root = Path(cache_dir) if cache_dir else _cache_root()
    env_dir = root / f"reference-venv-{key}"
    python = str(env_dir / "bin" / "python")
    done = env_dir / ".installed"
    if done.is_file() and _imports_ok(python) is None:
        return python
    print(f"bench: building the reference's venv in {env_dir} (once; pip install -r "
          f"{d / 'requirements.txt'})", file=sys.stderr, flush=True)
    try:
        venv.EnvBuilder(with_pip=True, clear=True).create(env_dir)
    except (OSError, subprocess.CalledProcessError) as exc:
        raise ReferenceEnvError(f"cannot create a venv in {env_dir}: {exc}") from exc
    proc = subprocess.run(
        [python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
         "-r", str(d / "requirements.txt")],
        capture_output=True, text=True, timeout=900, check=False)
    if proc.returncode != 0:
        tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-5:])
        raise ReferenceEnvError(f"pip could not install the reference's requirements:\n{tail}")
    problem = _imports_ok(python)
    if problem is not None:
        raise ReferenceEnvError(f"the reference's venv cannot import its requirements: {problem}")
    done.write_text("ok\n", encoding="utf-8")
    return python


def host_marker_us(cpu: int | None, frames: int = 1000, runs: int = 7) -> float:
    """Resampler (8 -> 24 kHz) µs per 20 ms frame, measured on ``cpu``: the host's speed now.

    Run on the bridge's core because that is the core whose speed the CPU figures depend
    on; the affinity is restored afterwards.
    """
    from bridge.audio import Upsampler
    from bridge.audio.resampler import LOW_RATE
    from bridge.devtools.bench.resampler import _frames, _us_per_frame

    before = os.sched_getaffinity(0)
    try:
        if cpu is not None:
            os.sched_setaffinity(0, {cpu})
        return round(_us_per_frame(Upsampler().process, _frames(LOW_RATE, frames), runs), 2)
    finally:
        os.sched_setaffinity(0, before)


def _get(summary: dict[str, Any], dotted: str) -> float | None:
    v: Any = summary
    for part in dotted.split("."):
        if not isinstance(v, dict):
            return None
        v = v.get(part)
    return float(v) if isinstance(v, int | float) else None


def ratios(this: dict[str, Any], ref: dict[str, Any]) -> dict[str, float | None]:
    """reference ÷ this bridge for each figure in RATIO_KEYS (None if either is missing/0)."""
    out: dict[str, float | None] = {}
    for name, key in RATIO_KEYS:
        a, b = _get(ref, key), _get(this, key)
        out[name] = round(a / b, 2) if a is not None and b else None
    return out


def reference_options(opts: BenchOptions, ref_dir: str, ref_python: str) -> BenchOptions:
    """The same load, pinning and duration as ``opts``, aimed at the reference sample."""
    return replace(opts, reference_dir=str(Path(ref_dir).resolve()),
                   reference_python=ref_python, ws=None, loop=None, http=None,
                   json_lib=None, lean_stream=False, stream_server=None, profile=None)


def run_pair(opts: BenchOptions, ref_dir: str, ref_python: str,
             floor: bool = False) -> dict[str, Any]:
    """One pair: host marker, this bridge, the reference, (the floor,) host marker."""
    marker_before = host_marker_us(opts.bridge_cpu)
    this = run_bench(opts)
    ref = run_bench(reference_options(opts, ref_dir, ref_python))
    pair: dict[str, Any] = {"this": this, "reference": ref, "ratios": ratios(this, ref)}
    if floor:
        from bridge.devtools.bench.floor import floor_bench

        pair["floor"] = floor_bench(opts.calls, opts.duration, opts.bridge_cpu,
                                    opts.gen_cpu).as_dict()
    pair["host_marker_us_per_frame"] = [marker_before, host_marker_us(opts.bridge_cpu)]
    return pair


def floor_line(pair: dict[str, Any]) -> str:
    """How far above the floor each bridge is, and the most any bridge could gain."""
    low = pair["floor"]["cpu_ms_per_call_s"]
    ref = pair["reference"]["cpu_ms_per_call_s"]
    this = pair["this"]["cpu_ms_per_call_s"]
    return (f"bench: floor: cpu_ms_per_call_s reference/floor {ref}/{low}={ref / low:.2f}x "
            f"this/floor {this}/{low}={this / low:.2f}x "
            f"(reference/floor is the most any bridge moving these messages could reach)")


def _fmt(v: float | None) -> str:
    return "n/a" if v is None else f"{v:g}"


def ratio_line(pair: dict[str, Any], prefix: str = "bench: reference/this",
               marker_label: str = "before/after") -> str:
    """The headline: each figure as reference/this = ratio, then sockets and the host marker."""
    this, ref, rat = pair["this"], pair["reference"], pair["ratios"]
    parts = []
    for name, key in RATIO_KEYS:
        parts.append(f"{name} {_fmt(_get(ref, key))}/{_fmt(_get(this, key))}="
                     f"{_fmt(rat[name])}x")
    sockets = (f"open_model_sockets_1s {ref['model_sockets_open_1s_after_hangup']}/"
               f"{this['model_sockets_open_1s_after_hangup']}")
    mb, ma = pair["host_marker_us_per_frame"]
    return (f"{prefix}: " + " ".join(parts) + f" {sockets} "
            f"host_marker_us_per_frame={mb}/{ma} (resampler up, {marker_label}, bridge core)")


def side_line(summary: dict[str, Any], side: str) -> str:
    """One bridge's summary line, labelled with which side of the pair it is."""
    return summary_line(summary).replace("bench:", f"bench[{side}]:", 1)


def pair_lines(pair: dict[str, Any]) -> list[str]:
    lines = [side_line(pair["this"], "this"), side_line(pair["reference"], "reference")]
    if "floor" in pair:
        from bridge.devtools.bench.floor import FloorResult

        lines.append(FloorResult(**pair["floor"]).line())
    lines.append(ratio_line(pair))
    if "floor" in pair:
        lines.append(floor_line(pair))
    return lines


def median_pair(pairs: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians over several pairs of every figure on the ratio line (and their spread)."""

    def med(values: list[float | None]) -> float | None:
        vs = [v for v in values if v is not None]
        return round(statistics.median(vs), 3) if vs else None

    def side(name: str) -> dict[str, Any]:
        out: dict[str, Any] = {"upstream_ms": {}, "downstream_ms": {}}
        out["cpu_ms_per_call_s"] = med([_get(p[name], "cpu_ms_per_call_s") for p in pairs])
        out["rss_per_call_kib"] = med([_get(p[name], "rss_per_call_kib") for p in pairs])
        out["upstream_ms"]["p99"] = med([_get(p[name], "upstream_ms.p99") for p in pairs])
        out["downstream_ms"]["p99"] = med([_get(p[name], "downstream_ms.p99") for p in pairs])
        out["model_sockets_open_1s_after_hangup"] = med(
            [_get(p[name], "model_sockets_open_1s_after_hangup") for p in pairs])
        return out

    rat = {name: med([p["ratios"][name] for p in pairs]) for name, _ in RATIO_KEYS}
    spread = {name: [p["ratios"][name] for p in pairs] for name, _ in RATIO_KEYS}
    markers = [m for p in pairs for m in p["host_marker_us_per_frame"]]
    return {"this": side("this"), "reference": side("reference"), "ratios": rat,
            "ratio_spread": spread,
            "host_marker_us_per_frame": [min(markers), max(markers)]}


def median_line(med: dict[str, Any], n: int) -> str:
    """Medians of several pairs: each side's median, then the median of the pair ratios
    (not the ratio of the medians: a pair's two runs share the host's state, so their
    ratio is the figure that survives the host's drift)."""
    this, ref, rat, spread = med["this"], med["reference"], med["ratios"], med["ratio_spread"]
    parts = []
    for name, key in RATIO_KEYS:
        values = "/".join(_fmt(v) for v in spread[name])
        parts.append(f"{name} {_fmt(_get(ref, key))}/{_fmt(_get(this, key))} "
                     f"ratio={_fmt(rat[name])}x ({values})")
    lo, hi = med["host_marker_us_per_frame"]
    return (f"bench: median of {n} pairs, reference/this: " + " ".join(parts) +
            f" open_model_sockets_1s {_fmt(ref['model_sockets_open_1s_after_hangup'])}/"
            f"{_fmt(this['model_sockets_open_1s_after_hangup'])}"
            f" host_marker_us_per_frame={lo}-{hi}")


__all__ = ["ReferenceEnvError", "host_marker_us", "median_line", "median_pair", "pair_lines",
           "ratio_line", "ratios", "reference_python", "run_pair"]
