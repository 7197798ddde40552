"""Errors in the user's settings or files: the command line reports them as one message, no traceback."""


class GanZooError(Exception):
    """Base of the errors that name a bad value or file and say what to do instead."""


class ConfigError(GanZooError, ValueError):
    """A configuration that cannot run."""


class DataError(GanZooError, ValueError):
    """Data that is present but unusable (empty, unreadable, inconsistent with the config)."""


class DataNotFoundError(GanZooError, FileNotFoundError):
    """A data set's files are not where they were looked for, and could not be downloaded."""


class NonFiniteError(GanZooError, FloatingPointError):
    """A loss or gradient became NaN or infinite."""


class WriteError(GanZooError):
    """An output file (checkpoint, figure, cache) that could not be written: full disk, read-only file
    system, file-size limit. The previous version of the file is left as it was."""


class CheckpointError(GanZooError):
    """A checkpoint file that is missing, unreadable, foreign, or unsafe to load."""
