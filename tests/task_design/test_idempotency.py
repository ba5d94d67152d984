"""Proof for docs/task-design/idempotency.md: a redelivered task does its work once."""

import os
import signal

import pytest

from snippets.task_design.idempotency import (
    credit_account,
    credit_account_retrying,
    credit_account_without_key,
    mark_invoice_paid,
)
from snippets.task_design.models import Account, Invoice, ProcessedKey
from tests.harness.wait import wait_until
from tests.task_design.helpers import kill_pool_child, kill_worker, task_pid

pytestmark = pytest.mark.django_db(transaction=True)
LONG = 60.0  # the "rest of the task" after the commit: the window the SIGKILL falls into


def balance(account: Account) -> int:
    account.refresh_from_db()
    return account.balance_cents


def test_the_same_key_delivered_twice_credits_once(celery_worker, unique_key):
    account = Account.objects.create()

    first = credit_account.delay(account.pk, 100, unique_key)
    assert first.get(timeout=20) == "applied"
    second = credit_account.delay(account.pk, 100, unique_key)  # a duplicate delivery
    assert second.get(timeout=20) == "duplicate"

    assert balance(account) == 100
    assert ProcessedKey.objects.filter(key=unique_key).count() == 1


def test_an_unknown_account_fails_loudly_and_keeps_no_key(celery_worker, unique_key):
    result = credit_account.delay(987654, 100, unique_key)
    with pytest.raises(Account.DoesNotExist, match="account 987654 does not exist"):
        result.get(timeout=20)
    assert result.state == "FAILURE"
    # The key rolled back with the failed credit: a corrected retry is not mistaken for a duplicate.
    assert not ProcessedKey.objects.filter(key=unique_key).exists()


def test_sigkill_mid_task_runs_it_again_and_the_key_credits_once(shared_prefork_worker, unique_key):
    """acks_late + reject_on_worker_lost: the killed run is redelivered; the key holds."""
    wp = shared_prefork_worker  # a real prefork worker subprocess
    account = Account.objects.create()
    result = credit_account.apply_async((account.pk, 100, unique_key, LONG), queue=wp.queue)

    pid = task_pid(result)
    wait_until(lambda: ProcessedKey.objects.filter(key=unique_key).exists(), what="the commit")
    os.kill(pid, signal.SIGKILL)  # after the credit committed, before the task returned (acked)

    assert result.get(timeout=60) == "duplicate"  # it ran again, and the key stopped it
    assert balance(account) == 100
    log = wp.log()
    assert f"pid:{pid} exited with 'signal 9 (SIGKILL)'" in log
    assert f"key '{unique_key}' already applied" in log


@pytest.mark.services("broker")
@pytest.mark.antipattern("credit_account_without_key")
@pytest.mark.deviation(
    "DJANGO_SETTINGS_MODULE=tests.task_design.dedupe_settings",
    reason="the recommended settings plus worker_deduplicate_successful_tasks, shown not to help",
)
def test_why_without_a_key_the_redelivery_credits_twice_even_with_deduplication(worker_process):
    """No key: the rerun credits again. worker_deduplicate_successful_tasks does not help,
    because the killed run never stored SUCCESS."""
    wp = worker_process(env={"DJANGO_SETTINGS_MODULE": "tests.task_design.dedupe_settings"})
    account = Account.objects.create()
    credit_account_without_key.apply_async((account.pk, 100, LONG), queue=wp.queue)

    wait_until(lambda: balance(account) == 100, what="the first credit")
    kill_pool_child(wp)
    wait_until(lambda: balance(account) == 200, what="the second credit")  # done twice

    log = wp.log()
    assert "signal 9 (SIGKILL)" in log
    assert "already completed successfully" not in log  # deduplication did not step in
    kill_worker(wp)  # the rerun is sleeping in its own 60 s window; no need to wait for it


def test_retry_on_worker_lost_sends_a_retry_and_the_key_credits_once(
    shared_prefork_worker, unique_key
):
    """Celery 5.7: the lost task is re-sent like retry(): retries=1, after default_retry_delay."""
    wp = shared_prefork_worker
    account = Account.objects.create()
    result = credit_account_retrying.apply_async(
        (account.pk, 100, unique_key, LONG), queue=wp.queue
    )

    pid = task_pid(result)
    wait_until(lambda: ProcessedKey.objects.filter(key=unique_key).exists(), what="the commit")
    os.kill(pid, signal.SIGKILL)

    assert result.get(timeout=60) == "duplicate"
    assert balance(account) == 100
    assert f"[{result.id}] retry: Retry in 1s: WorkerLostError" in wp.log()


@pytest.mark.antipattern("credit_account_without_key")
def test_why_without_a_key_a_duplicate_delivery_credits_twice(celery_worker):
    account = Account.objects.create()
    for _ in range(2):
        assert credit_account_without_key.delay(account.pk, 100).get(timeout=20) == "applied"
    assert balance(account) == 200


def test_a_conditional_update_lets_one_delivery_win(celery_worker):
    invoice = Invoice.objects.create()

    assert mark_invoice_paid.delay(invoice.pk).get(timeout=20) is True
    assert mark_invoice_paid.delay(invoice.pk).get(timeout=20) is False  # the duplicate

    invoice.refresh_from_db()
    assert invoice.status == Invoice.Status.PAID
    assert mark_invoice_paid.delay(987654).get(timeout=20) is False  # unknown: logged, no error
