"""The one test harness: processes, waiting, ports, service gates, Celery workers and beat.

Every proof that waits, waits through :func:`tests.harness.wait.wait_until`; every process a
proof starts is a :class:`tests.harness.process.Process`. Nothing under ``tests/`` outside this
package calls ``subprocess.Popen(`` or writes a deadline loop (``tests/test_harness.py``).
"""
