"""`python -m tests.harness.interpreter_report`: what an interpreter sees at its start, as JSON
on stdout (tests/test_harness.py compares a forked one with a fresh one)."""

import json
import os
import signal
import sys

if __name__ == "__main__":
    import wsgiref.handlers

    import billiard.common

    report = {
        "argv": sys.argv,
        "path": sys.path,
        "cwd": os.getcwd(),
        "main": sorted(k for k in vars(sys.modules["__main__"]) if not k.startswith("__")),
        "environ": dict(os.environ),
        "wsgiref": dict(wsgiref.handlers.BaseHandler.os_environ),
        "remap_sigterm": billiard.common.REMAP_SIGTERM,
        # The handler's name (a bound method's repr carries its object's address).
        "signals": {
            s.name: getattr(signal.getsignal(s), "__qualname__", str(signal.getsignal(s)))
            for s in (signal.SIGTERM, signal.SIGINT)
        },
        "session_leader": os.getsid(0) == os.getpid(),
        "descriptors": sorted(int(fd) for fd in os.listdir("/proc/self/fd")),
        "coverage": "coverage" in sys.modules and bool(sys.modules["coverage"].Coverage.current()),
    }
    print(json.dumps(report))
    sys.exit(int(os.environ.get("REPORT_EXIT", "0")))
