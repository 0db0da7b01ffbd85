"""The guardian: a tiny process that outlives a SIGKILLed daemon.

The daemon starts it as ``python3 -S -I guardian.py FD PROGRAM [ARGS...]``: a bare
interpreter (no site, no environment) running this file alone, which imports nothing
beyond ``os`` (already loaded by the interpreter itself), so it stays a few MiB resident
for the daemon's whole life instead of a second copy of the CLI.  FD is the read end of a
pipe whose only write end the daemon holds: ``read`` returns end-of-file exactly when the
daemon is gone, however it died (no pid to recycle, no race with an early death).  Then
it execs PROGRAM, the full ``memcgctl daemon --guard INSTANCE``, which releases what that
instance left held.
"""

import os  # the only import: no "from __future__" either (that is a module too)


def wait_for_eof(fd: int) -> None:
    """Block until every write end of the pipe is closed (the daemon died)."""
    while True:
        try:
            if not os.read(fd, 64):
                return
        except InterruptedError:  # pragma: no cover - PEP 475 retries for us
            continue
        except OSError:
            return


def main(argv: list[str]) -> int:
    if len(argv) < 3 or not argv[1].isdigit():
        os.write(2, b"guardian: usage: guardian.py FD PROGRAM [ARGS...]\n")
        return 2
    fd = int(argv[1])
    wait_for_eof(fd)
    os.close(fd)
    try:
        os.execv(argv[2], argv[2:])
    except OSError as exc:
        os.write(2, f"guardian: cannot run {argv[2]}: {exc.strerror}\n".encode())
    return 1


if __name__ == "__main__":
    import sys  # built in, loaded before any script runs: no import cost

    raise SystemExit(main(sys.argv))
