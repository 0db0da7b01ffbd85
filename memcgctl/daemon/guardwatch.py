"""The guardian's resident part as a bash watcher (issue 22: daemon + guardian ≤ 20 MiB
resident; a bare ``python3 -S`` alone is 8.5 MiB, a bash blocked in ``read`` 3 MiB).

The daemon starts ``bash --norc --noprofile -c SCRIPT memcgctl-guardian ARGS...``
(:func:`argv`; bash as found on ``PATH`` at start, else the Python guardian of
:mod:`~memcgctl.daemon.guardian`).  Every value — the proc root, the daemon's pid and
start time, the pipe's fd, the timings and the release's whole command line — is a
positional argument: the script's text is a constant, and cgroup paths or state
directories with spaces, quotes, ``$(...)`` or newlines stay data.

Liveness comes through an anonymous pipe (:meth:`Heartbeat.pipe
<memcgctl.daemon.guardian.Heartbeat.pipe>`): the daemon holds the only write end
(close-on-exec, non-blocking) and writes a byte per beat; the watcher blocks in
``read -t`` on the read end:

* a byte: the daemon beats;
* end of file: every write end is closed, the daemon is gone (DIED, at once; the
  release checks that it is: a daemon still running keeps its marks and the release
  execs the Python guardian instead);
* silence for :data:`~memcgctl.daemon.guardian.STALE_S` once it has beaten: its
  ``/proc/PID/stat`` (the start time checked, the fields after the comm's last ``)``)
  says STOPPED (state ``T``) or HUNG; before the first beat it looks every
  :data:`~memcgctl.daemon.guardian.START_POLL_S` and says STOPPED after
  :data:`~memcgctl.daemon.guardian.STOPPED_POLLS` looks in a row (the first rescan may
  take long: not a hang).

Only then does Python run: the release's own command line (``python3 -S -c`` of
:func:`memcgctl.daemon.guardrelease.main`) with the state added, which restores the marks
and leaves the *released* note (STOPPED, HUNG; the watcher then waits for the next
byte, RUNNING again, or the end of file, looking at its stat each STALE_S) or, at DIED, unlinks the heartbeat and the note
(the watcher execs it: its last act)."""

from __future__ import annotations

import os

from memcgctl.daemon.guardian import STALE_S, START_POLL_S, STOPPED_POLLS

NAME = "memcgctl-guardian"  # the watcher's $0: what ps shows

# $1 PROC_ROOT  $2 PID  $3 START_TIME  $4 FD  $5 STALE_S  $6 START_POLL_S  $7 STOPPED_POLLS
# then the release's command line; the state (died, stopped, hung) goes after it.
# Builtins only until it acts: no fork while the daemon is well.
SCRIPT = r"""set -f
proc=$1 pid=$2 start=$3 fd=$4 stale=$5 poll=$6 polls=$7
shift 7
look() {
    local s= rest
    local -a f
    { read -r -d '' s <"$proc/$pid/stat"; } 2>/dev/null
    rest=${s##*\)}
    f=($rest)
    if [[ ${f[19]-} != "$start" || ${f[0]-Z} == [ZX] ]]; then seen=died
    elif [[ ${f[0]} == T ]]; then seen=stopped
    else seen=running
    fi
}
beating=0 stopped=0
while :; do
    if ((beating)); then t=$stale; else t=$poll; fi
    read -r -t "$t" -n 1 -u "$fd" b
    rc=$?
    if ((rc == 0)); then beating=1 stopped=0; continue; fi
    ((rc > 128)) || break
    look
    [[ $seen == died ]] && break
    if ((beating)); then
        [[ $seen == stopped ]] && state=stopped || state=hung
    elif [[ $seen == stopped ]]; then
        ((++stopped >= polls)) || continue
        state=stopped
    else
        stopped=0
        continue
    fi
    "$@" "$state"
    while :; do # released: wait for a beat (running again) or the end (died)
        read -r -t "$stale" -n 1 -u "$fd" b
        rc=$?
        ((rc == 0)) && break
        ((rc > 128)) || break 2
        look
        [[ $seen == died ]] && break 2
    done
    beating=1 stopped=0
done
exec "$@" died
"""


def find_bash(environ: dict[str, str]) -> str | None:
    """bash on ``environ``'s PATH (absolute entries only), or None."""
    for directory in os.get_exec_path(environ):
        if not os.path.isabs(directory):
            continue
        path = os.path.join(directory, "bash")
        if os.path.isfile(path) and os.access(path, os.X_OK):
            return path
    return None


def argv(
    bash: str, fd: int, proc_root: str, pid: int, start_time: int, release: list[str]
) -> list[str]:
    """The watcher's command line: ``release`` (a command line) runs with the state
    added as its last argument."""
    timings = [f"{STALE_S:.3f}", f"{START_POLL_S:.3f}", str(STOPPED_POLLS)]
    head = [bash, "--norc", "--noprofile", "-c", SCRIPT, NAME]
    return [*head, proc_root, str(pid), str(start_time), str(fd), *timings, *release]
