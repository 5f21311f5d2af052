"""The ``hpckpt`` command line: ``ls``, ``inspect``, ``verify``, ``diff``, ``export``.

Runs on one process without an MPI launcher. Every command prints a
human-readable report, or one JSON document on stdout with ``--json``. Errors
are one line on stderr (never a traceback) and a non-zero exit code:

* 0: success (``verify``: every tensor intact);
* 1: a damaged checkpoint or state file (checksum mismatch, truncated or hostile file);
* 2: a missing path, no checkpoint there, or a command-line usage error;
* 3: ``diff --exit-code`` only: the checkpoints differ;
* 4: any other error (permission denied, disk full, unexpected failure, a checkpoint
  replaced again and again while being read: JSON kind ``changed``).

Set ``HPCKPT_CLI_DEBUG=1`` to get the traceback of an unexpected failure.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from .._version import __version__
from ..errors import CheckpointChangedError, CheckpointError, CorruptCheckpointError
from . import diff, export, inspect, ls, verify
from .common import EXIT_DAMAGED, EXIT_IO, EXIT_NOT_FOUND, CliError, dump_json

__all__ = ["build_parser", "main"]

_COMMANDS = (ls, inspect, verify, diff, export)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``hpckpt`` with every subcommand."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--json", action="store_true", help="print one JSON document on stdout instead of text"
    )
    common.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="show a progress bar on stderr (default: when stderr is a terminal and the "
        "read exceeds 64 MiB)",
    )
    parser = argparse.ArgumentParser(
        prog="hpckpt",
        description=(
            "Inspect, verify, compare and export hpckpt checkpoints. Runs without an MPI "
            "launcher. Exit codes: 0 ok, 1 damaged checkpoint, 2 not found or usage error, "
            "3 diff --exit-code found differences, 4 other error."
        ),
    )
    parser.add_argument("--version", action="version", version=f"hpckpt {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for mod in _COMMANDS:
        mod.add_parser(sub, [common])
    return parser


def _fail(message: str, code: int, kind: str, as_json: bool) -> int:
    message = " ".join(str(message).split())  # one line
    sys.stderr.write(f"hpckpt: error: {message}\n")
    if as_json:
        dump_json({"ok": False, "error": {"kind": kind, "message": message, "exit_code": code}})
    return code


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code.

    Args:
        argv: The arguments (``sys.argv[1:]`` by default).
    """
    for stream in (sys.stdout, sys.stderr):
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is not None:
            reconfigure(errors="backslashreplace")
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # --help, --version, usage errors (exit 2)
        return int(e.code or 0) if not isinstance(e.code, str) else EXIT_NOT_FOUND
    if args.command is None:
        parser.print_help(sys.stderr)
        return EXIT_NOT_FOUND
    as_json = bool(args.json)
    try:
        code = int(args.run(args))
        sys.stdout.flush()  # a closed pipe shows up here, inside the handlers below
        return code
    except CliError as e:
        return _fail(str(e), e.exit_code, e.kind, as_json)
    except CheckpointChangedError as e:  # not damaged: replaced while being read
        return _fail(str(e), EXIT_IO, "changed", as_json)
    except CorruptCheckpointError as e:
        return _fail(f"damaged checkpoint: {e}", EXIT_DAMAGED, "damaged", as_json)
    except CheckpointError as e:
        return _fail(str(e), EXIT_DAMAGED, "damaged", as_json)
    except (FileNotFoundError, NotADirectoryError) as e:  # includes hpckpt.NotFoundError
        return _fail(_os_message(e), EXIT_NOT_FOUND, "not_found", as_json)
    except ValueError as e:
        return _fail(str(e), EXIT_NOT_FOUND, "usage", as_json)
    except BrokenPipeError:
        # The reader of stdout went away (``hpckpt ls DIR | head``): not an error.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    except OSError as e:
        return _fail(_os_message(e), EXIT_IO, "io", as_json)
    except KeyboardInterrupt:
        sys.stderr.write("hpckpt: interrupted\n")
        return 130
    except Exception as e:
        if os.environ.get("HPCKPT_CLI_DEBUG"):
            raise
        return _fail(
            f"unexpected {type(e).__name__}: {e} (set HPCKPT_CLI_DEBUG=1 for a traceback)",
            EXIT_IO,
            "internal",
            as_json,
        )


def _os_message(e: OSError) -> str:
    if e.filename is not None and e.strerror:
        return f"{e.strerror}: {e.filename!r}"
    return str(e)


if __name__ == "__main__":
    sys.exit(main())
