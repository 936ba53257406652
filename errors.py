"""The errors polydiff shows as one line: what a user caused or must act on (exit code 2), and a run that
had to stop (exit code 1). Anything else that escapes is a bug: the CLI says so and exits with code 1
(``--debug`` shows the traceback)."""


class UserError(Exception):
    """A problem with the user's input or environment (files, options, run folders, disk space), described in
    one line that names the file or key and what was expected."""


class TrainingStopped(Exception):
    """Training could not go on (e.g. non-finite losses in a row); the message says where and what to try."""
