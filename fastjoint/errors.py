"""The one exception type for user mistakes."""


class UserError(Exception):
    """A mistake the user can fix: printed as one line, exit status 2, no traceback.

    The message names the file or key at fault and what is wrong with it.
    """
