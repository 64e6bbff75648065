"""The errors rdfer raises for ordinary mistakes and bad input, each with the exit code its command line
returns (see rdfer.cli). Their messages name the file or key, what is wrong and what to do."""

from __future__ import annotations

_WORKER = "Original Traceback"


def one_line(error: BaseException) -> str:
    """An error's message on one line; one re-raised from a DataLoader worker ("Caught DataError in DataLoader
    worker process 0. Original Traceback ... DataError: msg") keeps only its own message."""
    text = str(error).strip()
    if _WORKER in text:
        last = text.splitlines()[-1]
        text = last.split(": ", 1)[1] if last.startswith(type(error).__module__) else last
    return " ".join(line.strip() for line in text.splitlines() if line.strip())


class RdferError(Exception):
    exit_code = 1


class ConfigError(RdferError, ValueError):
    """A usage or config mistake: an unknown key, a bad value, a missing argument."""

    exit_code = 2


class DataError(RdferError, ValueError):
    """Bad input data: the message names the file and the problem."""


class CheckpointError(RdferError, ValueError):
    """A checkpoint that is missing, unreadable, refused or not rdfer's: the message names the file."""


class TrainingError(RdferError, RuntimeError):
    """A training run that cannot go on (e.g. its loss stopped being finite)."""
