"""The cascade model backend: streaming STT -> a chat LLM -> streaming TTS.

It behaves towards the call core exactly like a Realtime server (same events, same
order), so barge-in, truncation, tools and transcripts are written once in the core.
See ``docs/cascade.md``.
"""
