"""Proof for docs/task-design/idempotency.md: a redelivered task does its work once."""

import os
import signal
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta

import pytest

from snippets.task_design.idempotency import (
    KEY_RETENTION,
    PURGE_SCHEDULE,
    charge_order,
    charge_order_key_first,
    credit_account,
    credit_account_retrying,
    credit_account_without_key,
    credit_batch_then_pay,
    mark_invoice_paid,
    purge_processed_keys,
)
from snippets.task_design.models import Account, Charge, Invoice, ProcessedKey
from tests.harness.celery import delete_queues, queue_length
from tests.harness.redelivery import deliver_again, outcomes, wait_succeeded
from tests.harness.wait import wait_until
from tests.task_design import provider as fake
from tests.task_design.helpers import kill_pool_child, kill_worker, task_pid

pytestmark = pytest.mark.django_db(transaction=True)
LONG = 60.0  # the "rest of the task" after the commit: the window the SIGKILL falls into
REST = {"SNIPPETS_REST_OF_TASK_SECONDS": str(LONG)}  # the stand-in's duration on the worker
rest_of_task_deviation = pytest.mark.deviation(
    f"SNIPPETS_REST_OF_TASK_SECONDS={LONG:g}",
    reason="the stand-in for the rest of the task takes a minute, so the kill lands inside it",
)


def redeliver_unacked(app) -> None:
    """Hand back the messages of a dead node now. RabbitMQ requeues them (redelivered) when
    its connection drops; Redis only after `visibility_timeout` (an hour here): do what
    kombu's `QoS.restore_visible` does then (kombu/transport/redis.py), with a zero timeout."""
    if not app.conf.broker_url.startswith("redis"):
        return
    with app.connection_for_write(transport_options={"visibility_timeout": 0}) as conn:
        conn.default_channel.qos.restore_visible()


def balance(account: Account) -> int:
    account.refresh_from_db()
    return account.balance_cents


def test_the_same_key_delivered_twice_credits_once(celery_worker, unique_key):
    """On the in-thread worker: the same key delivered twice credits once."""
    account = Account.objects.create()

    first = credit_account.delay(account.pk, 100, unique_key)
    assert first.get(timeout=20) == "applied"
    second = credit_account.delay(account.pk, 100, unique_key)  # a duplicate delivery
    assert second.get(timeout=20) == "duplicate"

    assert balance(account) == 100
    assert ProcessedKey.objects.filter(key=unique_key).count() == 1


def test_an_unknown_account_fails_loudly_and_keeps_no_key(celery_worker, unique_key):
    """An unknown account fails the task and stores no key, so a fixed rerun can still apply."""
    result = credit_account.delay(987654, 100, unique_key)
    with pytest.raises(Account.DoesNotExist, match="account 987654 does not exist"):
        result.get(timeout=20)
    assert result.state == "FAILURE"
    # The key rolled back with the failed credit: a corrected retry is not mistaken for a duplicate.
    assert not ProcessedKey.objects.filter(key=unique_key).exists()


@pytest.mark.proves_idempotent(task=credit_account)
@rest_of_task_deviation
def test_sigkill_mid_task_runs_it_again_and_the_key_credits_once(worker_process, unique_key):
    """acks_late + reject_on_worker_lost: the killed run is redelivered; the key holds."""
    wp = worker_process(env=REST)  # a real prefork worker subprocess
    account = Account.objects.create()
    result = credit_account.apply_async((account.pk, 100, unique_key), queue=wp.queue)

    pid = task_pid(result)
    wait_until(lambda: ProcessedKey.objects.filter(key=unique_key).exists(), what="the commit")
    os.kill(pid, signal.SIGKILL)  # after the credit committed, before the task returned (acked)

    assert result.get(timeout=60) == "duplicate"  # it ran again, and the key stopped it
    assert balance(account) == 100
    log = wp.log()
    assert f"pid:{pid} exited with 'signal 9 (SIGKILL)'" in log
    # The log names the redelivery (delivery_info, on Redis and RabbitMQ alike).
    skipped = f"key '{unique_key}' already applied to account {account.pk}, skipping"
    assert f"{skipped} (redelivered=True)" in log
    assert f"[{result.id}] retry:" not in log  # requeued by the broker, not re-sent as a retry


@pytest.mark.services("broker")
@pytest.mark.antipattern(task=credit_account_without_key)
@pytest.mark.deviation(
    "DJANGO_SETTINGS_MODULE=tests.task_design.dedupe_settings",
    reason="the recommended settings plus worker_deduplicate_successful_tasks, shown not to help",
)
def test_why_without_a_key_the_redelivery_credits_twice_even_with_deduplication(worker_process):
    """No key: the rerun credits again. worker_deduplicate_successful_tasks does not help,
    because the killed run never stored SUCCESS."""
    env = {"DJANGO_SETTINGS_MODULE": "tests.task_design.dedupe_settings"}
    wp = worker_process(env=env)
    account = Account.objects.create()
    result = credit_account_without_key.apply_async((account.pk, 100, LONG), queue=wp.queue)

    wait_until(lambda: balance(account) == 100, what="the first credit")
    kill_pool_child(wp)
    wait_until(lambda: balance(account) == 200, what="the second credit")  # done twice

    log = wp.log()
    assert "signal 9 (SIGKILL)" in log
    assert "already completed successfully" not in log  # deduplication did not step in

    # Positive control, same message and settings: once SUCCESS is stored (standing in for a
    # run that finished but whose ack was lost), the redelivery after a node loss is skipped.
    credit_account_without_key.backend.mark_as_done(result.id, "applied")
    kill_worker(wp)  # the whole node: nobody acks the message, nobody checks the backend
    redeliver_unacked(credit_account_without_key.app)
    again = worker_process(env=env, queue=wp.queue)
    ignored = f"Task {credit_account_without_key.name}[{result.id}] Task already completed"
    wait_until(lambda: ignored in again.log(), what="the deduplicated redelivery")
    assert balance(account) == 200  # not credited a third time


@pytest.mark.proves_idempotent(task=credit_account_retrying)
@rest_of_task_deviation
def test_retry_on_worker_lost_sends_a_retry_and_the_key_credits_once(worker_process, unique_key):
    """Celery 5.7: the lost task is re-sent like retry(): retries=1, after default_retry_delay."""
    wp = worker_process(env=REST)
    account = Account.objects.create()
    result = credit_account_retrying.apply_async((account.pk, 100, unique_key), queue=wp.queue)

    pid = task_pid(result)
    wait_until(lambda: ProcessedKey.objects.filter(key=unique_key).exists(), what="the commit")
    # Still acks_late: the retry covers a dead child, the unacked message a dead node.
    assert wp.acked_while_running(result.id) is False
    os.kill(pid, signal.SIGKILL)

    assert result.get(timeout=60) == "duplicate"
    assert balance(account) == 100
    assert f"[{result.id}] retry: Retry in 1s: WorkerLostError" in wp.log()


@pytest.mark.antipattern(task=credit_account_without_key)
def test_why_without_a_key_a_duplicate_delivery_credits_twice(celery_worker):
    account = Account.objects.create()
    for _ in range(2):
        assert credit_account_without_key.delay(account.pk, 100).get(timeout=20) == "applied"
    assert balance(account) == 200


def test_a_conditional_update_lets_one_delivery_win(celery_worker):
    """Two deliveries of a conditional `UPDATE ... WHERE` state change: exactly one wins."""
    invoice = Invoice.objects.create()

    assert mark_invoice_paid.delay(invoice.pk).get(timeout=20) is True
    assert mark_invoice_paid.delay(invoice.pk).get(timeout=20) is False  # the duplicate

    invoice.refresh_from_db()
    assert invoice.status == Invoice.Status.PAID
    assert mark_invoice_paid.delay(987654).get(timeout=20) is False  # unknown: logged, no error


@pytest.mark.proves_idempotent(task=mark_invoice_paid)
def test_a_redelivered_transition_moves_nothing(shared_prefork_worker):
    """The transition delivered again to a prefork worker (same task id: a redelivery) moves
    nothing: it answers False and the invoice keeps the `paid_at` of the delivery that moved
    it. Without `status=OPEN` in the UPDATE the second delivery would pay it again, later."""
    wp = shared_prefork_worker
    invoice = Invoice.objects.create()
    first = mark_invoice_paid.apply_async((invoice.pk,), queue=wp.queue)
    assert first.get(timeout=30) is True
    invoice.refresh_from_db()
    paid_at = invoice.paid_at

    assert deliver_again(wp, mark_invoice_paid, (invoice.pk,), first.id) is False
    invoice.refresh_from_db()
    assert (invoice.status, invoice.paid_at) == (Invoice.Status.PAID, paid_at)


@pytest.fixture
def provider() -> Iterator[fake.Provider]:
    """A fake payment provider that holds the first request, so the test can kill its client."""
    state = fake.Provider(hold_first=True)
    server = fake.start(state)
    yield state
    state.release.set()
    server.shutdown()


def kill_while_the_provider_holds(wp, provider: fake.Provider, result) -> int:
    """SIGKILL the pool child while its charge request is in the provider's hands."""
    pid = task_pid(result)
    wait_until(provider.holding.is_set, what="the charge request at the provider", context=wp)
    os.kill(pid, signal.SIGKILL)
    wait_until(lambda: pid not in wp.pool_pids(), what="the killed child gone", context=wp)
    provider.release.set()
    return pid


@pytest.mark.services("broker")
@pytest.mark.proves_idempotent(task=charge_order)
@pytest.mark.deviation("PAYMENT_PROVIDER_URL", reason="the fake payment provider of the test")
@pytest.mark.parametrize("charged", [True, False], ids=["provider-charged", "provider-dropped"])
def test_a_crash_after_the_provider_charged_charges_once(worker_process, provider, charged):
    """The child dies while the provider has the request. Either the provider charged it (the
    answer was lost) or it dropped it: the rerun finds the charge pending, asks again with the
    same key, and the provider ends with exactly one charge."""
    provider.charge_if_client_gone = charged
    wp = worker_process(env={"PAYMENT_PROVIDER_URL": provider.url})
    result = charge_order.apply_async((7, 1500, "order-7-charge"), queue=wp.queue)
    assert wp.acked_while_running(result.id) is False  # acks_late: a dead node's is redelivered
    pid = kill_while_the_provider_holds(wp, provider, result)

    assert result.get(timeout=90) == "charged"  # the rerun (a retry after WorkerLostError)
    assert provider.requests == ["order-7-charge", "order-7-charge"]  # asked twice...
    assert list(provider.charges) == ["order-7-charge"]  # ...charged once
    charge = Charge.objects.get(key="order-7-charge")
    assert (charge.status, charge.provider_charge_id) == ("charged", "ch_1")
    assert f"pid:{pid} exited with 'signal 9 (SIGKILL)'" in wp.log()
    assert f"[{result.id}] retry: Retry in 5s: WorkerLostError" in wp.log()  # default_retry_delay
    # delivered once more (a duplicate publish): the recorded state answers, no call at all
    assert charge_order.apply_async((7, 1500, "order-7-charge"), queue=wp.queue).get(60) == (
        "duplicate"
    )
    assert len(provider.requests) == 2


@pytest.mark.services("broker")
@pytest.mark.antipattern(task=charge_order_key_first)
@pytest.mark.deviation("PAYMENT_PROVIDER_URL", reason="the fake payment provider of the test")
def test_why_a_database_key_before_the_call_skips_the_charge_forever(worker_process, provider):
    """The database-key pattern around an external call: the key commits, the child dies
    before the provider took the charge, and the rerun sees the key and skips. The task
    reports success; the order is never charged. Without a crash the same code looks right
    (why it ships): it charges, and a second delivery is skipped."""
    provider.charge_if_client_gone = False
    wp = worker_process(env={"PAYMENT_PROVIDER_URL": provider.url})
    result = charge_order_key_first.apply_async((8, 1500, "order-8-charge"), queue=wp.queue)
    kill_while_the_provider_holds(wp, provider, result)

    assert result.get(timeout=90) == "duplicate"  # "already done", says the rerun
    assert ProcessedKey.objects.filter(key="order-8-charge").exists()
    assert provider.requests == ["order-8-charge"]  # asked once, by the run that died
    assert provider.charges == {}  # and never charged: at most once, not exactly once

    for expected in ("charged", "duplicate"):  # no crash: once, then skipped
        sent = charge_order_key_first.apply_async((9, 1500, "order-9-charge"), queue=wp.queue)
        assert sent.get(timeout=30) == expected
    assert list(provider.charges) == ["order-9-charge"]


def test_the_key_retention_outlasts_every_second_delivery():
    """KEY_RETENTION is longer than the Redis visibility timeout, RabbitMQ's consumer_timeout
    (the server's, or its 30 min default) and the retry span of every keyed task; the purge
    runs more often than that, and a stale purge expires before the next is sent."""
    from snippets.project.celery import app
    from tests.test_checklist import rabbitmq_consumer_timeout, redis_visibility_timeout

    windows = {
        "visibility_timeout": redis_visibility_timeout(),
        "consumer_timeout": rabbitmq_consumer_timeout() or 30 * 60,
    }
    for task in (credit_account, credit_account_retrying):
        hard = task.time_limit or app.conf.task_time_limit
        retries = task.max_retries if task.retry_on_worker_lost else 0
        windows[task.name] = hard + retries * (task.default_retry_delay + hard)
    retention = KEY_RETENTION.total_seconds()
    assert all(seconds < retention for seconds in windows.values()), windows
    [entry] = PURGE_SCHEDULE.values()
    assert entry["task"] == purge_processed_keys.name
    assert 0 < entry["options"]["expires"] < entry["schedule"].total_seconds() < retention


def test_the_purge_has_a_soft_limit_below_a_hard_limit_that_ends_it_before_the_next():
    """The purge's own budget (a first DELETE over a large backlog must not run unbounded):
    soft first, and the hard limit below the Redis visibility timeout and the schedule's
    interval, so a purge ends before it could be delivered again or the next one is sent."""
    from tests.test_checklist import redis_visibility_timeout

    [entry] = PURGE_SCHEDULE.values()
    soft, hard = purge_processed_keys.soft_time_limit, purge_processed_keys.time_limit
    assert 0 < soft < hard < min(redis_visibility_timeout(), entry["schedule"].total_seconds())


def age_keys(*keys: str, by: timedelta) -> None:
    """Back-date keys, as if they had been written `by` ago."""
    from django.utils import timezone

    ProcessedKey.objects.filter(key__in=keys).update(created_at=timezone.now() - by)


@pytest.mark.proves_idempotent(task=purge_processed_keys)
def test_the_purge_deletes_only_keys_past_the_retention_and_a_redelivery_stays_a_duplicate(
    shared_prefork_worker, unique_key
):
    """On a prefork worker: keys older than KEY_RETENTION go, younger ones stay; the credit
    delivered again after the purge (its key inside the window) is still a duplicate; and the
    purge delivered again deletes nothing more."""
    wp = shared_prefork_worker
    account = Account.objects.create()
    credit = credit_account.apply_async((account.pk, 100, unique_key), queue=wp.queue)
    assert credit.get(timeout=30) == "applied"
    ProcessedKey.objects.bulk_create(ProcessedKey(key=k) for k in ("old-1", "old-2", "edge"))
    age_keys("old-1", "old-2", by=KEY_RETENTION + timedelta(minutes=1))
    age_keys("edge", by=KEY_RETENTION - timedelta(minutes=1))

    purge = purge_processed_keys.apply_async(queue=wp.queue)
    assert purge.get(timeout=30) == 2
    assert set(ProcessedKey.objects.values_list("key", flat=True)) == {unique_key, "edge"}

    assert deliver_again(wp, credit_account, (account.pk, 100, unique_key), credit.id) == (
        "duplicate"
    )
    assert balance(account) == 100
    assert deliver_again(wp, purge_processed_keys, (), purge.id) == 0


def test_why_a_key_purged_inside_the_redelivery_window_credits_twice(
    shared_prefork_worker, unique_key
):
    """A retention shorter than the redelivery window: the key is gone when the message comes
    back, and the same message credits the account a second time."""
    wp = shared_prefork_worker
    account = Account.objects.create()
    credit = credit_account.apply_async((account.pk, 100, unique_key), queue=wp.queue)
    assert credit.get(timeout=30) == "applied"
    ProcessedKey.objects.filter(key=unique_key).delete()  # purged too early

    assert deliver_again(wp, credit_account, (account.pk, 100, unique_key), credit.id) == (
        "applied"
    )
    assert balance(account) == 200


@contextmanager
def published_messages() -> Iterator[dict[str, dict]]:
    """The messages this process publishes inside the block, by task id: headers and embed
    (protocol 2's callbacks, errbacks, chain, chord), to deliver one again as it was."""
    from celery.signals import before_task_publish

    sent: dict[str, dict] = {}

    def record(sender=None, body=None, headers=None, **_kw) -> None:
        sent[headers["id"]] = {
            "task": sender,
            "args": tuple(body[0]),
            "headers": headers,
            "embed": body[2],
        }

    before_task_publish.connect(record, weak=False)
    try:
        yield sent
    finally:
        before_task_publish.disconnect(record)


def chord_results_recorded(celery_app, group_id: str) -> int:
    """How many member results the Redis result backend holds for the chord (its join key)."""
    backend = celery_app.backend
    key = backend.get_key_for_group(group_id, ".j")
    ordered = backend.client.type(key) == b"zset"  # result_chord_ordered (the default)
    return backend.client.zcard(key) if ordered else backend.client.llen(key)


@pytest.mark.services("redis")
def test_a_chord_member_delivered_again_is_counted_once(shared_prefork_worker, celery_app):
    """The first member of a two-member chord runs, and its message (same id, group and chord)
    is delivered again while the second member waits in a queue nobody consumes yet. The rerun
    is a duplicate (its key), the Redis backend records one result for it, and the body does
    not start: it runs once, after the second member, and the invoice is paid once."""
    wp = shared_prefork_worker
    held = f"{wp.queue}-held-{uuid.uuid4().hex[:8]}"  # its own: the shared worker outlives it
    first_account, second_account = Account.objects.create(), Account.objects.create()
    invoice = Invoice.objects.create()
    work = credit_batch_then_pay(invoice.pk, [(first_account.pk, 100), (second_account.pk, 50)])
    first, second = work.tasks
    first.set(queue=wp.queue)
    second.set(queue=held)  # not consumed yet: the chord cannot complete before the rerun
    work.body.set(queue=wp.queue)
    try:
        with published_messages() as sent:
            result = work.apply_async()
        group_id = result.parent.id
        [first_id] = [i for i, m in sent.items() if m["headers"]["group_index"] == 0]
        message = sent[first_id]
        assert wait_succeeded(wp, first_id, 1) == ["'applied'"]

        again = deliver_again(
            wp, celery_app.tasks[message["task"]], message["args"], first_id,
            group_id=group_id, group_index=0, chord=message["embed"]["chord"],
        )  # fmt: skip
        assert again == "duplicate"  # the member's key
        assert chord_results_recorded(celery_app, group_id) == 1  # counted once, not twice
        assert queue_length(celery_app, held) == 1  # the second member has not run
        assert result.state == "PENDING"  # and the body has not been sent

        celery_app.control.add_consumer(held, destination=[wp.hostname], reply=True)
        assert result.get(timeout=60) is True  # the body: the invoice moved to paid
        assert [balance(first_account), balance(second_account)] == [100, 50]
        # The body's result is stored before its worker logs the run (celery/app/trace.py):
        # wait for the line, then there must be exactly one.
        assert wait_succeeded(wp, result.id, 1) == ["True"]  # the body ran once
    finally:
        celery_app.control.cancel_consumer(held, destination=[wp.hostname], reply=True)
        delete_queues(celery_app, held)


def test_a_chain_step_delivered_again_sends_the_next_step_again(shared_prefork_worker):
    """A two-step chain ran; its first step's message is delivered again (same id, same rest of
    the chain). The rerun is a duplicate, and yet it publishes the next step once more, with the
    id the chain gave it: the next step runs twice, and only its own condition keeps the second
    run from paying the invoice again."""
    from celery import chain

    wp = shared_prefork_worker
    account, invoice = Account.objects.create(), Invoice.objects.create()
    steps = chain(
        credit_account.si(account.pk, 100, f"invoice-{invoice.pk}-{account.pk}").set(
            queue=wp.queue
        ),
        mark_invoice_paid.si(invoice.pk).set(queue=wp.queue),
    )
    with published_messages() as sent:
        result = steps.apply_async()
    [(first_id, message)] = sent.items()  # the worker publishes the second step
    assert result.get(timeout=30) is True
    assert wait_succeeded(wp, first_id, 1) == ["'applied'"]

    again = deliver_again(
        wp, credit_account, message["args"], first_id, chain=message["embed"]["chain"]
    )
    assert again == "duplicate"
    assert wait_succeeded(wp, result.id, 2) == ["True", "False"]  # sent again, ran again
    assert balance(account) == 100


@pytest.mark.services("broker", "postgres")
def test_why_on_the_django_db_backend_a_member_delivered_again_counts_twice(
    worker_process, monkeypatch
):
    """The same chord on django-celery-results' `django-db` backend (its ChordCounter counts
    down once per member run, with no check of which member ran): the rerun of the first
    member counts the chord down to zero while the second has not run. When it does run, the
    counter is gone: the body is never sent, the invoice never paid, and nothing fails."""
    from celery import Celery, chord
    from django_celery_results.models import ChordCounter

    monkeypatch.setenv("CELERY_RESULT_BACKEND", "django-db")  # Celery reads it before settings
    wp = worker_process(env={"CELERY_RESULT_BACKEND": "django-db"})
    app = Celery("snippets", set_as_current=False)
    app.config_from_object("django.conf:settings", namespace="CELERY")
    held = f"{wp.queue}-held"
    accounts = [Account.objects.create(), Account.objects.create()]
    invoice = Invoice.objects.create()
    members = [
        app.signature(credit_account.name, (a.pk, 100, f"invoice-{invoice.pk}-{a.pk}"), queue=q)
        for a, q in zip(accounts, (wp.queue, held), strict=True)
    ]
    body = app.signature(mark_invoice_paid.name, (invoice.pk,), immutable=True, queue=wp.queue)
    try:
        with published_messages() as sent:
            result = chord(members)(body)
        group_id = result.parent.id
        ids = {m["headers"]["group_index"]: i for i, m in sent.items() if m["headers"]["group"]}
        assert wait_succeeded(wp, ids[0], 1) == ["'applied'"]
        assert ChordCounter.objects.get(group_id=group_id).count == 1  # one member to go

        again = deliver_again(
            wp, credit_account, sent[ids[0]]["args"], ids[0],
            group_id=group_id, group_index=0, chord=sent[ids[0]]["embed"]["chord"],
        )  # fmt: skip
        assert again == "duplicate"  # the member's key holds...
        assert not ChordCounter.objects.filter(group_id=group_id).exists()  # ...the count not

        app.control.add_consumer(held, destination=[wp.hostname], reply=True)
        assert wait_succeeded(wp, ids[1], 1) == ["'applied'"]
        wait_until(
            lambda: f"Can't find ChordCounter for Group {group_id}" in wp.log(),
            what="the second member finding no counter",
            context=wp,
        )
        assert outcomes(wp, result.id) == []  # the body was never sent
        invoice.refresh_from_db()
        assert invoice.status == Invoice.Status.OPEN
        assert result.state == "PENDING"
    finally:
        delete_queues(app, held)
