"""The one exception type the CLI turns into a single clear line (and exit code 2)."""


class UserError(Exception):
    """Something the user can fix: bad input, a missing file, an unknown name.

    The message must say what is wrong and what to do; the CLI prints it without a traceback.
    """
