"""User-facing errors: one line, no traceback, exit code 2 from the CLI."""


class IfheError(Exception):
    """A problem with what the user handed us (file, config, argument), not a bug in the engine."""


class CheckpointError(IfheError):
    """A weights/state file that is missing, corrupt, unsafe or does not fit the model."""


class DataError(IfheError):
    """Data that cannot be found or does not have the expected layout."""


class DivergenceError(IfheError):
    """A loss term became NaN or infinite."""
