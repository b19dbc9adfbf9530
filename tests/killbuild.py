"""Run ``convmatrix build`` in child processes and SIGKILL them at chosen points.

A zygote process imports convmatrix, Dask and Zarr once (starting no thread), then
forks one child per request: the child arms its kill point and runs the command line's
``main`` as ``python -m convmatrix`` does, so every run is a real process that a real
SIGKILL ends, at a cost of a fork instead of an interpreter start.

Kill points ``(event, n)``: the child kills itself with SIGKILL just before its n-th
(1-based) call of

- ``"chunk"``: a file of a block landing in ``blocks/`` (Zarr writes every file to a
  temporary name and renames it: metadata and chunks alike), i.e. during the blocks;
- ``"marker"``: a block's completion marker being renamed into ``done/``;
- ``"delete"``: ``os.remove`` / ``os.unlink`` / ``os.rmdir`` (``--overwrite`` deleting the
  old store, file by file).

Used by tests/test_distributed_faults.py; ``python tests/killbuild.py`` is the zygote.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

EVENTS = ("chunk", "marker", "delete")


def _arm(event: str, n: int) -> None:
    """Patch the os functions so that the n-th call of ``event`` kills this process first."""
    count = [0]

    def hit():
        count[0] += 1
        if count[0] == n:
            os.kill(os.getpid(), signal.SIGKILL)

    if event in ("chunk", "marker"):
        folder = os.sep + ("blocks" if event == "chunk" else "done") + os.sep
        replace = os.replace

        def patched_replace(src, dst, *args, **kwargs):
            if folder in os.fspath(dst):
                hit()
            return replace(src, dst, *args, **kwargs)

        os.replace = patched_replace
    elif event == "delete":
        for name in ("remove", "unlink", "rmdir"):
            original = getattr(os, name)

            def patched(*args, _original=original, **kwargs):
                hit()
                return _original(*args, **kwargs)

            setattr(os, name, patched)
    else:
        raise ValueError(f"event must be one of {EVENTS} or None, got {event!r}")


def _child(request: dict) -> None:
    """In the forked child: output to files in the request's folder, arm, run the CLI, exit."""
    from convmatrix.cli import main

    os.chdir(request["cwd"])
    for fd, name in ((1, "stdout.txt"), (2, "stderr.txt")):
        out = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        os.dup2(out, fd)
        os.close(out)
    sys.stdout = os.fdopen(1, "w", buffering=1)
    sys.stderr = os.fdopen(2, "w", buffering=1)
    if request.get("event"):
        _arm(request["event"], int(request["n"]))
    try:
        rc = main(request["argv"])
    except SystemExit as exc:
        rc = exc.code if isinstance(exc.code, int) else 1
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(rc)


def zygote() -> None:
    """Serve requests (one JSON line each) on stdin: fork, report the child's pid, then how it ended."""
    import numpy as np

    import convmatrix.cli  # noqa: F401 - imported once, before any fork
    import convmatrix.distributed

    for dtype in (np.float32, np.float64):  # numba compiles pydata sparse's checks here, once (no thread)
        convmatrix.distributed.dask_matrix(np.ones((1, 1, 2), dtype=dtype), (1, 4))

    for line in sys.stdin:
        request = json.loads(line)
        pid = os.fork()
        if pid == 0:
            _child(request)
        print(json.dumps({"pid": pid}), flush=True)
        _, status = os.waitpid(pid, 0)
        print(json.dumps({"signal": os.WTERMSIG(status) if os.WIFSIGNALED(status) else 0,
                          "rc": os.WEXITSTATUS(status) if os.WIFEXITED(status) else None}), flush=True)


class Killer:
    """The parent's end: ``run(argv, cwd, event, n)`` runs ``convmatrix ARGV`` in a child process."""

    def __init__(self):
        self.proc = subprocess.Popen([sys.executable, __file__], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     text=True, env=os.environ)

    def start(self, argv, cwd, event=None, n=0) -> int:
        """Start the child; return its pid (finish with :meth:`wait`)."""
        request = {"argv": [str(a) for a in argv], "cwd": str(cwd), "event": event, "n": n}
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()
        return json.loads(self.proc.stdout.readline())["pid"]

    def wait(self, cwd) -> tuple[int, int | None, str, str]:
        """(signal that ended it or 0, exit status or None, its stdout, its stderr)."""
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError("the zygote process died")
        end = json.loads(line)
        read = lambda name: open(os.path.join(cwd, name)).read()  # noqa: E731
        return end["signal"], end["rc"], read("stdout.txt"), read("stderr.txt")

    def run(self, argv, cwd, event=None, n=0):
        self.start(argv, cwd, event, n)
        return self.wait(cwd)

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=30)


if __name__ == "__main__":
    zygote()
