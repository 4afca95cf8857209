"""The error a user can cause: a message naming the file and the problem (exit code 2)."""

from __future__ import annotations


class InputError(Exception):
    """Bad input: a message that names the file and the problem."""
