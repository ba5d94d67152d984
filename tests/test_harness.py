"""The harness itself: a worker subprocess really runs the snippets project's tasks."""

import os
import signal

import pytest

from snippets.django_integration.models import Report
from snippets.django_integration.transactions import render_report


@pytest.mark.django_db(transaction=True)
def test_worker_process_sees_committed_rows_and_survives_a_killed_child(worker_process):
    wp = worker_process(concurrency=1)
    report = Report.objects.create(title="from a subprocess")
    result = render_report.apply_async((report.pk,), queue=wp.queue)
    assert result.get(timeout=30) == "from a subprocess"

    [child] = wp.pool_pids()
    os.kill(child, signal.SIGKILL)
    second = Report.objects.create(title="after the kill")
    assert (
        render_report.apply_async((second.pk,), queue=wp.queue).get(timeout=30) == "after the kill"
    )
    assert wp.pool_pids() != [child]
    assert wp.stop() == 0
