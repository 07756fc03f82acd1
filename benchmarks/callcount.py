"""Run a module with its Python function calls counted:

    BENCH_CALLS_FILE=out python -m benchmarks.callcount MODULE [ARGS...]

(not a ``JOG_`` name: the gateway reads those as settings)

On SIGUSR1 the calls counted so far (cProfile's count, calls into C functions included, the
main thread's: the gateway's event loop) are written to ``$BENCH_CALLS_FILE``. The sign-in
benchmark runs the gateway and the bare server this way once more after the timed runs:
CPU time on a shared virtual machine moves from run to run, calls per operation do not, so
they show what a change did to the work itself.
"""

from __future__ import annotations

import cProfile
import os
import runpy
import signal
import sys
from pathlib import Path
from types import FrameType


def main() -> None:
    module = sys.argv[1]
    sys.argv = sys.argv[1:]
    out = Path(os.environ["BENCH_CALLS_FILE"])
    profile = cProfile.Profile()

    def dump(_signum: int, _frame: FrameType | None) -> None:
        profile.create_stats()  # stops counting for the snapshot
        calls = sum(stat[1] for stat in profile.stats.values())  # type: ignore[attr-defined]
        partial = out.with_name(out.name + ".tmp")
        partial.write_text(str(calls))
        partial.replace(out)
        profile.enable()

    signal.signal(signal.SIGUSR1, dump)
    profile.enable()
    runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
