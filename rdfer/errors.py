"""The errors rdfer raises for ordinary mistakes and bad input, each with the exit code its command line
returns (see rdfer.cli). Their messages name the file or key, what is wrong and what to do."""

from __future__ import annotations


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
