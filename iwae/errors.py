"""The one exception type that the command line turns into a one-line message."""


class UserError(Exception):
    """A problem with the user's input (a path, a value, a file): reported in one line, no
    traceback, non-zero exit. The message must name the file, key or value at fault."""


class Diverged(UserError):
    """A non-finite objective or parameter during training; the last good checkpoint is kept."""


class Interrupted(Exception):
    """SIGTERM or SIGINT during training: a checkpoint was written, the run can be resumed."""

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.signum = signum
