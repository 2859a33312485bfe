"""The one exception type that the command line turns into a one-line message."""


class UserError(Exception):
    """A problem with the user's input (a path, a value, a file): reported in one line, no
    traceback, non-zero exit. The message must name the file, key or value at fault."""
