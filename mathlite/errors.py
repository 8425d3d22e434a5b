"""The errors a user can cause and fix, at the bottom of the package (it imports nothing).

Every one of them is a `UserError`: `runs.run_main` prints it as one red line and exits with code 2.
The subclasses also keep the standard base a caller would expect (`DataError` is a ValueError,
`ModelNotFound` a FileNotFoundError), so library code can catch them either way.
"""


class UserError(Exception):
    """An error the user can fix (bad flag, missing file, incompatible run). Printed as one line, exit 2."""


class DataError(UserError, ValueError):
    """Bad or unreachable data: a one-line message naming the file/line or source."""


class ModelNotFound(UserError, FileNotFoundError):
    """A model or adapter path that does not exist or cannot be loaded (one-line message)."""


class ResultsError(UserError, ValueError):
    """A results.json that cannot be read; the message is one line naming the file."""
