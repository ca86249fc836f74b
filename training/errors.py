"""The one error a command stops on: what the user gave cannot go on as asked.

Every module's own error (a bad dataset, file, model, repository) derives from it, so the
command line catches one class and imports nothing heavy to do so: a CSV's problems are
reported before TensorFlow is imported."""

from __future__ import annotations


class Refused(Exception):
    """A command refused: its message says what was wrong and what to give instead."""
