"""`minirec simulate` (being written)."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The command's options."""


def run(args: argparse.Namespace) -> int:
    raise NotImplementedError("minirec simulate is being written")
