"""What the audit reads (the project) and what it reports (findings), and acknowledgements."""

# --8<-- [start:finding]
import fnmatch
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

ERROR, WARNING, INFO = "error", "warning", "info"


@dataclass(frozen=True)
class Finding:
    """One trap: which check, how bad, the object it concerns, why, and the page with the fix."""

    check: str  # a slug: "redelivery-window", "crontab-minute", ...
    severity: str  # "error" fails the run (exit 1); "warning" and "info" are reported
    object: str  # "setting:CELERY_X", "task:<name>", "schedule:<entry>", "route:<pattern>"
    why: str  # one sentence
    page: str  # the site page that explains and proves the fix
    acknowledged: str | None = None  # the project's reason, when it acknowledged the finding

    @property
    def key(self) -> str:
        return f"{self.check} {self.object}"

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def acknowledge(findings: Iterable[Finding], acknowledged: dict[str, str]) -> list[Finding]:
    """Mark each finding whose "<check> <object>" matches a key (a glob) with that key's reason.

    AUDIT_ACKNOWLEDGED = {"idempotency task:billing.*": "upserts by invoice number"}
    """
    out = []
    for finding in findings:
        reason = next(
            (why for key, why in acknowledged.items() if fnmatch.fnmatchcase(finding.key, key)),
            None,
        )
        out.append(Finding(**{**finding.as_dict(), "acknowledged": reason}))
    used = {key for key in acknowledged for f in out if fnmatch.fnmatchcase(f.key, key)}
    for key in sorted(set(acknowledged) - used):  # the trap is gone, or the key is mistyped
        why = "This acknowledgement matches no finding: remove it, or fix its key."
        out.append(Finding("stale-acknowledgement", WARNING, f"acknowledged:{key}", why,
                           "production/audit/"))  # fmt: skip
    return out


# --8<-- [end:finding]

from collections.abc import Callable, Iterator
from dataclasses import field

from celery import Celery

from .deployment import Deployment


@dataclass(frozen=True)
class Periodic:
    """A beat entry: from the beat_schedule setting or a django-celery-beat row."""

    name: str
    task: str
    schedule: object  # a celery schedule: crontab, schedule(timedelta), solar
    options: dict[str, Any] = field(default_factory=dict)
    source: str = "beat_schedule"


@dataclass
class Project:
    """Everything a check may read: the real Celery app, Django settings, beat, deployment."""

    app: Celery
    debug: bool
    periodic: list[Periodic]
    deployment: Deployment
    consumer_timeout: float  # RabbitMQ's consumer_timeout in seconds (inf: none)
    consumer_timeout_unread: str = ""  # --live on RabbitMQ: why the node's value was not read
    environ: dict[str, str] = field(default_factory=dict)
    logging: dict[str, Any] = field(default_factory=dict)  # Django's LOGGING

    @property
    def conf(self) -> Any:
        return self.app.conf

    def user_tasks(self) -> list[Any]:
        """The project's registered tasks, without Celery's own (celery.*)."""
        return [t for name, t in sorted(self.app.tasks.items()) if not name.startswith("celery.")]


Check = Callable[[Project], Iterator[Finding]]
