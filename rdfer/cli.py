"""What every `python -m rdfer.*` command shares: an ordinary mistake or bad input ends as one line on stderr
with a documented exit code, not a traceback.

Exit codes: 0 done; 1 a data or runtime problem (an unreadable clip, a checkpoint that cannot be used, a
training that diverged, a file that cannot be written); 2 a usage or config mistake (a bad key or value, a
missing argument); 130 interrupted (Ctrl-C), 143 stopped by SIGTERM. `--debug` or RDFER_DEBUG=1 lets the
traceback through instead. Anything else is a bug in rdfer and keeps its traceback.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

from rdfer import environment, stopping
from rdfer.errors import RdferError, one_line


def debug_enabled(argv: list[str] | None = None) -> bool:
    argv = sys.argv[1:] if argv is None else argv
    return "--debug" in argv or environment.get("RDFER_DEBUG", "0").lower() in ("1", "true", "yes")


def run(main: Callable[[list[str] | None], int], argv: list[str] | None = None) -> int:
    """main(argv) with rdfer's errors turned into one line on stderr and their exit code; SIGTERM stops it as
    Ctrl-C does (rdfer.stopping), with exit code 143."""
    with stopping.handled():
        if debug_enabled(argv):
            return main(argv)
        try:
            return main(argv)
        except RdferError as e:
            print(f"error: {one_line(e)}", file=sys.stderr)
            return e.exit_code
        except OSError as e:  # a folder that cannot be written, a disk that is full
            where = f"{e.filename}: " if getattr(e, "filename", None) else ""
            print(f"error: {where}{e.strerror or e}", file=sys.stderr)
            return 1
        except KeyboardInterrupt as e:
            code = getattr(e, "exit_code", 130)
            print("interrupted (SIGTERM)" if code == 143 else "interrupted", file=sys.stderr)
            return code
