"""Errors a user can cause or must act on: shown as one line by the CLI (exit code 2), never a traceback."""


class UserError(Exception):
    """A problem with the user's input (files, options, run folders) described in one line."""


class TrainingStopped(Exception):
    """Training could not go on (e.g. non-finite losses in a row); the message says where and what to try."""
