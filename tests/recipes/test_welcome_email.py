"""Proof for docs/recipes/welcome-email.md: after commit, once, retried only when it may help."""

from __future__ import annotations

import contextlib
import logging
import smtplib
import socket
import threading
import time
import uuid
from datetime import datetime, timedelta

import django
import pytest
from celery.signals import before_task_publish
from celery.utils.time import get_exponential_backoff_interval
from django.db import connections, transaction
from django.utils import timezone
from hypothesis import HealthCheck, assume, example, given, settings

from snippets.recipes.models import Member
from snippets.recipes.welcome_email import (
    PermanentSMTPError,
    reconcile_welcome_emails,
    register_member,
    send_welcome_email,
)
from snippets.recipes.welcome_email_naive import (
    invite_all_naive,
    register_naive,
    send_welcome_email_naive,
)
from tests.harness.db import Rollback
from tests.harness.net import free_port
from tests.harness.publishes import recording_publishes
from tests.harness.redelivery import deliver_again, received
from tests.harness.wait import wait_until
from tests.recipes.helpers import (
    BAD_IDS,
    RECIPE_WORKER,
    coerces_to,
    recipe_worker_settings,
    run_web_process,
)

pytestmark = pytest.mark.django_db(transaction=True)

LOGGER = "snippets.recipes.welcome_email"


def sends_of(published: list[dict], task=send_welcome_email) -> list[dict]:
    return [p for p in published if p["name"] == task.name]


def backend_result(task_id: str) -> object:
    """The stored result, read again (AsyncResult caches a ready result)."""
    return send_welcome_email.backend.get_task_meta(task_id, cache=False)["result"]


def result_of(task_id: str, timeout: float = 30) -> object:
    return send_welcome_email.AsyncResult(task_id).get(timeout=timeout)


def test_registration_sends_one_welcome_email_after_commit(celery_worker, published, mailoutbox):
    """one publish with the id, one email."""
    member = register_member("Ada", "ada@example.com")

    [sent] = sends_of(published)
    assert sent["args"] == [member.pk]  # an id, not the instance
    assert result_of(sent["id"]) == "sent"
    [email] = mailoutbox
    assert email.to == ["ada@example.com"]
    assert "Hi Ada" in email.body
    member.refresh_from_db()
    assert member.welcome_sent_at is not None


def test_rollback_sends_nothing(celery_worker, published, mailoutbox):
    """the registration rolls back: no publish, no email."""
    with pytest.raises(Rollback), transaction.atomic():
        register_member("Ghost", "ghost@example.com")
        raise Rollback

    assert sends_of(published) == []
    assert not Member.objects.exists()
    assert mailoutbox == []


def test_redelivered_task_sends_exactly_once(celery_worker, published, mailoutbox, caplog):
    """The same message delivered twice (same task id: what a redelivery is): one email."""
    caplog.set_level(logging.INFO, logger=LOGGER)
    member = register_member("Grace", "grace@example.com")
    [first] = sends_of(published)
    assert result_of(first["id"]) == "sent"

    send_welcome_email.apply_async((member.pk,), task_id=first["id"])  # the redelivery
    wait_until(
        lambda: [r for r in caplog.records if r.name == LOGGER and "already" in r.getMessage()],
        what="the second delivery ran",
    )
    assert len(mailoutbox) == 1


@pytest.mark.proves_idempotent(task=send_welcome_email)
@pytest.mark.proves_idempotent(task=reconcile_welcome_emails)
@pytest.mark.services("broker")
@RECIPE_WORKER
def test_the_job_and_the_email_delivered_again_send_nothing_more(worker_process, smtp_server):
    """On a worker subprocess, over SMTP: a member who joined an hour ago is still owed her
    email (its publish was lost); the reconciliation job publishes it and it is sent. Then the
    job's message and the email's, each delivered again with its task id: the job finds nobody
    owed and the email finds its claim taken. The SMTP server has one message."""
    # Without `welcome_sent_at__isnull=True` in the claim the email goes twice; without it in
    # the job's query the job publishes it again (1, not 0).
    member = Member.objects.create(
        name="Ada", email="ada@example.com", date_joined=timezone.now() - timedelta(hours=1)
    )
    queue = f"welcome-{uuid.uuid4().hex[:8]}"
    wp = worker_process(queue=queue, env=recipe_worker_settings(queue, smtp_server))

    job = reconcile_welcome_emails.apply_async(queue=wp.queue)
    assert job.get(timeout=60) == 1
    [email] = wait_until(lambda: received(wp, send_welcome_email), what="the owed email")
    assert result_of(email, timeout=60) == "sent"

    assert deliver_again(wp, reconcile_welcome_emails, (), job.id) == 0
    assert deliver_again(wp, send_welcome_email, (member.pk,), email) == "already-handled"
    assert received(wp, send_welcome_email) == [email, email]  # the job published no other
    [message] = smtp_server.messages
    assert "ada@example.com" in message["to"][0]


def test_concurrent_deliveries_wait_for_the_claim(smtp_server):
    """Two deliveries at once: the second UPDATE waits for the first transaction, then
    matches no row. The task body runs in two threads, each with its own DB connection."""
    member = Member.objects.create(name="Edsger", email="edsger@example.com")
    smtp_server.data_delay = 1.0
    results: dict[str, str] = {}

    def deliver(label: str) -> None:
        try:
            results[label] = send_welcome_email.run(member.pk)
        finally:
            connections.close_all()

    first = threading.Thread(target=deliver, args=("first",))
    first.start()
    wait_until(lambda: smtp_server.connections == 1, what="the first delivery is sending")
    second = threading.Thread(target=deliver, args=("second",))
    second.start()
    first.join(30)
    second.join(30)

    assert results == {"first": "sent", "second": "already-handled"}
    assert len(smtp_server.messages) == 1
    assert smtp_server.connections == 1


@pytest.mark.antipattern(task=send_welcome_email_naive)
def test_why_naive_task_sends_twice_on_redelivery(celery_worker, published, mailoutbox):
    """The naive task keeps no record of what it sent: each delivery sends again."""
    member = register_naive("Alan", "alan@example.com")
    [first] = sends_of(published, send_welcome_email_naive)
    wait_until(lambda: len(mailoutbox) == 1, what="the first email")

    send_welcome_email_naive.apply_async((member.pk,), task_id=first["id"])  # the redelivery
    wait_until(lambda: len(mailoutbox) == 2, what="the second email")
    assert [m.to for m in mailoutbox] == [["alan@example.com"], ["alan@example.com"]]


def test_a_loop_of_registrations_publishes_each_id(celery_worker, published, mailoutbox):
    """register_member binds each id when it is called: three members, three ids, three emails."""
    with transaction.atomic():
        members = [register_member(n, f"{n}@example.com") for n in ("ann", "bob", "cyd")]
    assert sorted(p["args"][0] for p in sends_of(published)) == [m.pk for m in members]
    wait_until(lambda: len(mailoutbox) == 3, what="three emails")
    assert sorted(m.to[0] for m in mailoutbox) == [
        "ann@example.com",
        "bob@example.com",
        "cyd@example.com",
    ]


@pytest.mark.antipattern(task=send_welcome_email_naive)
def test_why_lambda_in_a_loop_emails_the_last_member_n_times(celery_worker, published, mailoutbox):
    """A lambda built in a loop captures the variable, not its value: the last member gets every
    email."""
    members = invite_all_naive([(n, f"{n}@example.com") for n in ("ann", "bob", "cyd")])

    last = members[-1].pk
    assert [p["args"] for p in sends_of(published, send_welcome_email_naive)] == [[last]] * 3
    wait_until(lambda: len(mailoutbox) == 3, what="three emails")
    assert {m.to[0] for m in mailoutbox} == {"cyd@example.com"}  # ann and bob get nothing


def test_transient_smtp_failure_is_retried_with_bounded_backoff_then_sent_once(
    celery_worker, smtp_server
):
    """ "421 try again later" at connect, then "450 mailbox busy" for the address: two
    retries, each delay within the policy's bound, then the message is accepted."""
    smtp_server.busy_connections = 1
    smtp_server.rcpt_refusals = ["450 4.2.1 Mailbox busy, try again"]
    publishes: list[tuple[float, dict]] = []

    def record(sender=None, headers=None, **_kw) -> None:
        if sender == send_welcome_email.name:
            publishes.append((time.time(), headers))

    before_task_publish.connect(record, weak=False)
    try:
        member = register_member("Linus", "linus@example.com")
        task_id = publishes[0][1]["id"]
        wait_until(
            lambda: backend_result(task_id) == "sent",
            timeout=60,
            what="sent after the retries",
        )
    finally:
        before_task_publish.disconnect(record)

    assert smtp_server.connections == 3  # 421, 450, delivered
    [message] = smtp_server.messages
    assert "linus@example.com" in message["to"][0]
    assert [h["retries"] for _t, h in publishes] == [0, 1, 2]
    for published_at, headers in publishes[1:]:
        eta = headers["eta"]  # None when the jittered countdown came out as 0
        delay = datetime.fromisoformat(eta).timestamp() - published_at if eta else 0
        bound = min(send_welcome_email.retry_backoff_max, 2 * 2 ** (headers["retries"] - 1))
        assert -1 <= delay <= bound + 1, (headers["retries"], delay)
    member.refresh_from_db()
    assert member.welcome_sent_at is not None


@pytest.mark.django_db  # no worker, no committed rows needed: skip the flush
def test_the_retry_policy_is_jittered_and_capped():
    """autoretry computes each countdown with get_exponential_backoff_interval and these options:
    full jitter spreads the retries of many tasks; the cap bounds the longest wait."""
    task = send_welcome_email
    transient = (smtplib.SMTPException, ConnectionError, TimeoutError, socket.gaierror)
    assert (task.autoretry_for, task.retry_jitter, task.max_retries) == (transient, True, 6)
    samples = [
        get_exponential_backoff_interval(
            factor=task.retry_backoff, retries=5, maximum=task.retry_backoff_max, full_jitter=True
        )
        for _ in range(300)
    ]
    assert len(set(samples)) > 10  # spread, not one synchronized wave
    assert max(samples) <= 64
    worst = [
        get_exponential_backoff_interval(task.retry_backoff, n, task.retry_backoff_max, False)
        for n in range(task.max_retries)
    ]
    assert worst == [2, 4, 8, 16, 32, 64]  # at most ~2 minutes of retrying in all
    assert get_exponential_backoff_interval(task.retry_backoff, 9, task.retry_backoff_max) == 120


@pytest.mark.django_db  # no worker, no committed rows needed: skip the flush
@pytest.mark.parametrize(
    "task", [send_welcome_email, reconcile_welcome_emails], ids=["send", "job"]
)
def test_each_task_has_its_own_finite_limits_below_the_projects_default(celery_app, task):
    """(3) on the task, and the job's 60/90 s: soft before hard, both set on the task itself and
    below the project's default budget (the proofs run in seconds, far from either limit)."""
    assert 0 < task.soft_time_limit < task.time_limit < celery_app.conf.task_time_limit


def test_permanent_refusal_is_recorded_and_not_retried(
    celery_worker, smtp_server, published, caplog
):
    """550 No such user: no retry, the refusal stored on the row and logged with context."""
    caplog.set_level(logging.INFO, logger=LOGGER)
    smtp_server.rcpt_refusals = ["550 5.1.1 No such user"]
    member = register_member("Nobody", "nobody@example.com")
    [sent] = sends_of(published)

    assert result_of(sent["id"]) == "refused"
    assert len(sends_of(published)) == 1  # no retry was published
    member.refresh_from_db()
    assert member.welcome_sent_at is None
    assert member.welcome_error.startswith("SMTP 550")
    [record] = [r for r in caplog.records if r.name == LOGGER and r.levelno == logging.ERROR]
    assert (record.member_id, record.task_id) == (member.pk, sent["id"])
    # ... and the reconciliation job leaves it alone.
    assert reconcile_welcome_emails.delay(min_age_seconds=0).get(timeout=30) == 0


def test_a_refused_sender_fails_at_once_and_is_left_for_reconciliation(
    celery_worker, smtp_server, published
):
    """550 to MAIL FROM is our problem (configuration), not the member's: no retry, the task
    fails loudly, and the member is still owed the email."""
    smtp_server.refuse_sender = True
    member = register_member("Frances", "frances@example.com")
    [sent] = sends_of(published)

    with pytest.raises(PermanentSMTPError, match="550"):
        result_of(sent["id"])
    assert len(sends_of(published)) == 1  # no retry
    member.refresh_from_db()
    assert (member.welcome_sent_at, member.welcome_error) == (None, "")
    assert smtp_server.messages == []


def test_missing_member_is_logged_with_context_and_not_retried(celery_worker, published, caplog):
    """A member that does not exist: a warning with the member and task ids, and no retry."""
    caplog.set_level(logging.INFO, logger=LOGGER)
    result = send_welcome_email.delay(987654)

    assert result.get(timeout=30) == "no-such-member"
    assert result.state == "SUCCESS"
    assert len(sends_of(published)) == 1  # no retry
    [record] = [r for r in caplog.records if r.name == LOGGER and r.levelno >= logging.WARNING]
    assert (record.member_id, record.task_id, record.retries) == (987654, result.id, 0)
    assert "987654" in record.getMessage()


@pytest.mark.antipattern(task=send_welcome_email_naive)
def test_why_naive_task_hides_a_missing_user(celery_worker, caplog):
    """The naive task swallows a missing user: SUCCESS, and no warning names the id."""
    caplog.set_level(logging.DEBUG)
    result = send_welcome_email_naive.delay(987654)

    assert result.get(timeout=30) is None  # SUCCESS: the dashboard is green
    assert not [
        r for r in caplog.records if r.levelno >= logging.WARNING and "987654" in r.getMessage()
    ]


@pytest.mark.antipattern(task=send_welcome_email_naive)
@pytest.mark.services("broker")
def test_why_naive_retries_a_permanent_error_on_a_fixed_schedule(worker_process, celery_app):
    """Bad data (a newline in the address) is retried like a network blip, exactly 60 s
    later: no jitter, so every failure of a burst comes back in the same second."""
    member = Member.objects.create(name="Mallory", email="m@example.com\nBcc: all@example.com")
    wp = worker_process()
    before = time.time()
    result = send_welcome_email_naive.apply_async((member.pk,), queue=wp.queue)

    wait_until(lambda: result.state == "RETRY", what="the retry")
    assert isinstance(result.info, ValueError)  # a permanent error, retried anyway
    [entry] = wait_until(
        lambda: celery_app.control.inspect([wp.hostname], timeout=2).scheduled().get(wp.hostname),
        what="the retry waiting in the worker",
    )
    delay = datetime.fromisoformat(entry["eta"]).timestamp() - before
    assert 58 <= delay <= 66, delay


# One "web process" whose broker is down (a closed port) registers three ways: the pattern,
# the naive version, and robust=True with a functools.partial. Django takes seconds to start
# on a busy machine, so the three share one process.
WEB_PROCESS_BROKER_DOWN = """
import logging, sys, traceback
from functools import partial
logging.basicConfig(stream=sys.stdout, level=logging.ERROR, format="LOG %(name)s %(message)s")
from django.db import connections, transaction
from snippets.recipes.welcome_email import register_member, send_welcome_email
from snippets.recipes.welcome_email_naive import register_naive

member = register_member("Barbara", "barbara@example.com")
print("pattern returned", member.pk, flush=True)
try:
    register_naive("Naive", "naive@example.com")
    print("naive returned", flush=True)
except Exception as exc:
    print("naive raised", type(exc).__name__, flush=True)
try:
    with transaction.atomic():
        transaction.on_commit(partial(send_welcome_email.delay, 1), robust=True)
    print("partial survived", flush=True)
except Exception as exc:
    print("partial raised", type(exc).__name__, exc, flush=True)
"""


def test_broker_down_at_commit_the_member_exists_and_the_email_follows_once(
    celery_worker, published, mailoutbox
):
    """The web process cannot reach the broker. The pattern: the registration succeeds, the
    failure is logged, and the reconciliation job sends the email once the broker is back.
    The naive version (why): OperationalError after the commit, a 500 for a registration
    that worked. And robust=True with a functools.partial fails on Django 5.2 (its error log
    reads func.__qualname__, which a partial lacks); Django 6.1 logs it."""
    web = run_web_process(
        WEB_PROCESS_BROKER_DOWN, CELERY_BROKER_URL=f"redis://127.0.0.1:{free_port()}/0"
    )
    assert web.returncode == 0, web.stderr
    out = web.stdout
    # The pattern: the client gets its 201, the publish failure is logged by Django.
    assert "pattern returned" in out
    assert "LOG django.db.backends.base Error calling" in out
    member = Member.objects.get(email="barbara@example.com")
    assert member.welcome_sent_at is None
    assert sends_of(published) == []  # nothing reached our broker either
    # The naive version: the row is committed, then the caller gets the exception.
    assert "naive raised OperationalError" in out
    assert Member.objects.filter(email="naive@example.com").exists()
    # robust=True needs a named callback on Django 5.2.
    if django.VERSION < (6, 0):
        assert "partial raised AttributeError 'functools.partial' object has no attribute" in out
    else:
        assert "partial survived" in out

    # The broker is back: the job finds both members (the column records the debt, whoever
    # registered them) and each gets exactly one email, however often the job runs.
    assert reconcile_welcome_emails.delay(min_age_seconds=0).get(timeout=30) == 2
    wait_until(lambda: len(mailoutbox) == 2, what="the owed emails")
    assert reconcile_welcome_emails.delay(min_age_seconds=0).get(timeout=30) == 0
    time.sleep(0.5)
    assert sorted(m.to[0] for m in mailoutbox) == ["barbara@example.com", "naive@example.com"]
    member.refresh_from_db()
    assert member.welcome_sent_at is not None


@pytest.mark.django_db
def test_the_reconciliation_is_scheduled_by_its_registered_name(celery_app):
    """Beat, configured from the settings module as the project's beat is, schedules the job
    every five minutes under the name the worker registered it with."""
    from celery import Celery
    from celery.beat import Scheduler

    app = Celery("snippets", set_as_current=False)
    app.config_from_object("snippets.recipes.welcome_email_settings", namespace="CELERY")
    entry = Scheduler(app=app).schedule["reconcile-welcome-emails"]
    assert entry.task == reconcile_welcome_emails.name
    assert entry.task in celery_app.tasks
    assert entry.schedule.run_every == timedelta(minutes=5)


# Property-based: member ids the outside world controls (BAD_IDS).
@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(bad_id=BAD_IDS)
@example(bad_id=2**63)
@example(bad_id="abc")
def test_property_a_bad_member_id_is_logged_once_and_the_valid_email_still_goes(
    celery_worker, mailoutbox, caplog, bad_id
):
    """Hypothesis, 30 generated ids: unknown, negative, out-of-range, text, floats, lists, `null`:
    no retry; an id of no member returns `no-such-member` with a warning that carries the member and
    task ids, anything that is not an id fails once through the failure logger; then a valid member
    gets exactly one email from the same worker."""
    Member.objects.all().delete()
    mailoutbox.clear()
    member = Member.objects.create(name="Ada", email="ada@example.com")  # nothing published
    assume(not coerces_to(bad_id, member.pk))
    caplog.clear()
    caplog.set_level(logging.INFO)

    with recording_publishes() as published:
        result = send_welcome_email.delay(bad_id)
        with contextlib.suppress(Exception):
            result.get(timeout=30)
        assert send_welcome_email.delay(member.pk).get(timeout=30) == "sent"

    assert len(sends_of(published)) == 2  # no retry of the bad one
    [record] = [r for r in caplog.records if getattr(r, "task_id", None) == result.id]
    if result.state == "SUCCESS":  # an id of no member: the task says so, with its context
        assert result.result == "no-such-member"
        assert (record.name, record.levelno, record.retries) == (LOGGER, logging.WARNING, 0)
        assert "does not exist" in record.getMessage()
    else:  # no id at all: the failure logger has the task, its args and the error
        assert result.state == "FAILURE"
        assert (record.name, record.levelno) == ("snippets.tasks", logging.ERROR)
        assert record.task_name == send_welcome_email.name
    [email] = mailoutbox  # the valid member's, once
    assert email.to == ["ada@example.com"]
