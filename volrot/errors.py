"""Errors a user can cause.

`UserError` is raised for anything the user can fix (bad recipe key, unreadable file, unknown
arch, missing dataset file...). The CLI prints its message on one line and exits with code 2;
no traceback is shown unless `--debug` is given. Any other exception is a bug and keeps its
traceback.
"""

from __future__ import annotations


class UserError(Exception):
    """A problem the user can fix. The message is one line, naming the file/key and the problem."""

    exit_code = 2

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))
