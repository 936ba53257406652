"""The ``polydiff`` command. Its subcommands are whatever is registered (``polydiff.registry.register_command``):
train, sample, demo and info come with polydiff, modalities and plugins add theirs.

Exit codes: 0 done; 2 a problem with the user's input or environment (a missing file, a bad recipe or
option, an unreadable model folder, a full disk), said in one line; 1 a run that had to stop (one line
saying why) or a bug (one line saying so; ``--debug`` shows the traceback); 128 + N stopped by signal N
after writing a checkpoint (130 for Ctrl-C, 143 for SIGTERM).
"""

from __future__ import annotations

import argparse
import signal
import sys

EXIT_USER_ERROR = 2
EXIT_STOPPED = 1
EXIT_BUG = 1


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # argparse's own errors: one line, exit 2
        command = self.prog.split()
        hint = "polydiff --help" if len(command) == 1 else f"polydiff {command[-1]} --help"
        self.exit(EXIT_USER_ERROR, f"polydiff: error: {message} (see '{hint}')\n")


def build_parser() -> argparse.ArgumentParser:
    """The parser with one subcommand per registered command."""
    from .registry import components

    parser = _Parser(prog="polydiff", description="Train and sample diffusion models.")
    parser.add_argument("--debug", action="store_true", help="show tracebacks for errors")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for command in components("command"):
        p = sub.add_parser(command.name, help=command.info["help"], description=command.info["help"])
        if command.info.get("arguments"):
            command.info["arguments"](p)
        p.set_defaults(func=command.target)
    return parser


def _one_line(err: BaseException) -> str:
    """The error's message on one line; for an error re-raised from a DataLoader worker (whose message is the
    worker's whole traceback), the original message only."""
    text = str(err)
    if "Original Traceback" in text:
        last = [line for line in text.splitlines() if line.strip()][-1]
        text = last.split(": ", 1)[1] if ": " in last else last
    return " ".join(text.split()) if text.strip() else type(err).__name__


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from .errors import TrainingStopped, UserError
    from .train.interrupt import Interrupted

    try:
        return args.func(args)
    except UserError as err:
        if args.debug:
            raise
        print(f"polydiff: error: {_one_line(err)}", file=sys.stderr)
        return EXIT_USER_ERROR
    except TrainingStopped as err:
        if args.debug:
            raise
        print(f"polydiff: training stopped: {_one_line(err)}", file=sys.stderr)
        return EXIT_STOPPED
    except Interrupted as err:
        name = signal.Signals(err.signum).name
        print(f"polydiff: interrupted by {name} {err}; continue with --resume", file=sys.stderr)
        return 128 + err.signum
    except KeyboardInterrupt:
        print("polydiff: interrupted", file=sys.stderr)
        return 128 + signal.SIGINT
    except Exception as err:
        if args.debug:
            raise
        print(f"polydiff: internal error (a bug in polydiff or a plugin, please report it): "
              f"{type(err).__name__}: {_one_line(err)[:300]}; run with --debug for the traceback", file=sys.stderr)
        return EXIT_BUG


if __name__ == "__main__":
    raise SystemExit(main())
