"""Placeholder until this command lands."""

from __future__ import annotations

import argparse


def add_replay_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = sub.add_parser("replay", help="not available yet")
    parser.set_defaults(func=lambda args: 1)
