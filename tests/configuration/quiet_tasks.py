"""Two tasks of the quiet-results proof (tests/configuration/test_result_backends.py), loaded
into its worker with ``--include``: one that keeps the settings' default, one that opts in."""

from celery import shared_task


@shared_task(name="quiet.plain")
def plain(n: int) -> int:
    """Declares nothing: under CELERY_TASK_IGNORE_RESULT = True it stores no result."""
    return n


@shared_task(name="quiet.read", ignore_result=False)
def read(n: int) -> int:
    """Opts in, as a task whose result a page polls must."""
    return n
