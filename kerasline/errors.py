"""The one exception type users see: the CLI prints it as one line and exits with code 2."""


class UserError(Exception):
    """Bad input from the user (config, data, paths): a message naming the key or file."""


class ConfigError(UserError):
    """An experiment file or override that does not fit the schema."""


class DataError(UserError):
    """A data file or record that cannot be used."""


class Diverged(UserError):
    """Training stopped on a non-finite loss or weights; the run keeps its last good checkpoint."""


class Preempted(Exception):
    """Training stopped on SIGTERM after writing a checkpoint; rerunning the same command resumes it."""
