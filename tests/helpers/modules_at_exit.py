"""``python3 modules_at_exit.py OUT -m MODULE ARGS...``: run MODULE as ``python3 -m``
would, and when the process exits write the names of every module it had imported to
OUT, one a line (the import set of a real run, not of a guess)."""

import atexit
import runpy
import signal
import sys

# SIGINT ends the run (the tests send it): also when the test ran in a background job of
# a shell, which starts its children with SIGINT ignored (and Python keeps it ignored)
signal.signal(signal.SIGINT, signal.default_int_handler)

out = sys.argv.pop(1)
assert sys.argv.pop(1) == "-m"
module = sys.argv.pop(1)


def dump() -> None:
    with open(out, "w") as f:
        f.write("\n".join(sorted(sys.modules)) + "\n")


atexit.register(dump)
sys.argv[0] = module
runpy.run_module(module, run_name="__main__", alter_sys=True)
