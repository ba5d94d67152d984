"""`manage.py celery_audit`: the site's checklist and known traps, run against this project."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from celery import current_app
from celery.app.utils import find_app
from celery.schedules import maybe_schedule
from django.apps import apps
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from ...checks import CHECKS
from ...deployment import read_deployment
from ...findings import ERROR, WARNING, Finding, Periodic, Project, acknowledge
from ...live import consumer_timeout, live
from ...system_check import RABBITMQ_CONSUMER_TIMEOUT


def periodic_entries(app: Any, with_db: bool) -> list[Periodic]:
    """beat_schedule from the settings, then the enabled django-celery-beat rows."""
    entries = [
        Periodic(name, e["task"], maybe_schedule(e["schedule"], app=app), e.get("options", {}))
        for name, e in (app.conf.beat_schedule or {}).items()
    ]
    if with_db and apps.is_installed("django_celery_beat"):
        from django_celery_beat.models import PeriodicTask

        for row in PeriodicTask.objects.filter(enabled=True):
            options = {"queue": row.queue} if row.queue else {}
            entries.append(Periodic(row.name, row.task, row.schedule, options, "database"))
    return entries


# --8<-- [start:command]
class Command(BaseCommand):
    help = "Audit the project's Celery app, settings, tasks, beat and routes against the site."
    requires_system_checks = []  # report the system check's errors as findings, not abort

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--app", help="the Celery app, as for celery -A (default: current)")
        parser.add_argument(
            "--deployment",
            nargs="*",
            type=Path,
            default=None,
            help="systemd units, env files, compose/k8s YAML, scripts, Procfile",
        )
        parser.add_argument(
            "--queues",
            action="append",
            default=[],
            help="a worker's --queues value (repeat per worker)",
        )
        parser.add_argument(
            "--consumer-timeout",
            type=int,
            default=RABBITMQ_CONSUMER_TIMEOUT,
            help="RabbitMQ's consumer_timeout in seconds, if you changed it (--live reads it)",
        )
        parser.add_argument("--rabbitmq-node", help="--live: whose consumer_timeout to read")
        parser.add_argument("--format", choices=["text", "json"], default="text")
        parser.add_argument("--live", action="store_true", help="also ask the broker and workers")
        parser.add_argument("--no-db", action="store_true", help="skip django-celery-beat rows")

    def handle(self, *_args: Any, **options: Any) -> None:
        app = find_app(options["app"]) if options["app"] else current_app
        app.loader.import_default_modules()  # autodiscover_tasks(): what a worker registers
        app.finalize()  # as a worker does; on_after_finalize receivers add their periodic tasks
        files = options["deployment"]
        if files is None:
            files = [Path(p) for p in getattr(settings, "AUDIT_DEPLOYMENT", [])]
        timeout, unread = options["consumer_timeout"], ""
        if options["live"]:  # the broker's own value, before any check compares with it
            timeout, unread = consumer_timeout(app, options["rabbitmq_node"], timeout)
        project = Project(
            app=app,
            debug=settings.DEBUG,
            periodic=periodic_entries(app, with_db=not options["no_db"]),
            deployment=read_deployment(files, options["queues"]),
            consumer_timeout=timeout,
            consumer_timeout_unread=unread,
            environ=dict(os.environ),
            logging=getattr(settings, "LOGGING", None) or {},
        )
        checks = (*CHECKS, live) if options["live"] else CHECKS
        found = [f for check in checks for f in check(project)]
        findings = acknowledge(found, getattr(settings, "AUDIT_ACKNOWLEDGED", {}))
        errors = [f for f in findings if f.severity == ERROR and not f.acknowledged]
        self.report(findings, options["format"])
        if errors:
            raise CommandError(f"{len(errors)} error(s): see the findings above", returncode=1)

    # --8<-- [end:command]

    def report(self, findings: list[Finding], form: str) -> None:
        site = getattr(settings, "AUDIT_SITE_URL", "")
        if form == "json":
            rows = [{**f.as_dict(), "page": site + f.page} for f in findings]
            self.stdout.write(json.dumps({"findings": rows}, indent=2))
            return
        for f in findings:
            mark = f"acknowledged: {f.acknowledged}" if f.acknowledged else f.severity.upper()
            self.stdout.write(f"{mark}  {f.check}  {f.object}\n    {f.why}\n    {site}{f.page}")
        counts = {
            s: sum(f.severity == s and not f.acknowledged for f in findings)
            for s in (ERROR, WARNING)
        }
        acked = sum(bool(f.acknowledged) for f in findings)
        self.stdout.write(
            f"{counts[ERROR]} errors, {counts[WARNING]} warnings, {acked} acknowledged"
        )
