"""Developer tooling shipped in the package, apart from the runtime.

The simulators (a Realtime server, a Twilio caller, Twilio REST and OpenAI REST
stand-ins), the keyless demo, the load and resampler benchmarks, and tape replay
and authoring.  The running bridge never imports any of it; tests, the demo and
``python -m bridge bench|replay|tape`` do.
"""
