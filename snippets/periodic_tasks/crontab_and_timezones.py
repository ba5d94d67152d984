"""Crontab schedules, time zones and daylight saving time, and how to test a schedule.

The settings below are what a project puts in settings.py; `beat_sends()` runs Celery's own
beat loop on a virtual clock, so a test can see every send across a DST transition in
milliseconds, without sleeping and without a broker.
"""

# --8<-- [start:settings]
from datetime import timedelta

from celery.schedules import crontab, schedule

CELERY_TIMEZONE = "Europe/Berlin"  # (1)!
CELERY_ENABLE_UTC = True  # (2)!
CELERY_BEAT_SCHEDULE = {
    "nightly-invoices": {  # a business time: 02:30 on the office clock
        "task": "snippets.periodic_tasks.beat.refresh_rates",
        "schedule": crontab(hour=2, minute=30),  # (3)!
        "args": ["nightly-invoices"],
    },
    "hourly-sync": {  # every hour on the hour, in real time
        "task": "snippets.periodic_tasks.beat.refresh_rates",
        "schedule": schedule(timedelta(hours=1), relative=True),  # (4)!
        "args": ["hourly-sync"],
    },
    "cache-warmup": {  # every 10 minutes, whatever the clock says
        "task": "snippets.periodic_tasks.beat.refresh_rates",
        "schedule": timedelta(minutes=10),  # (5)!
        "args": ["cache-warmup"],
    },
}
# --8<-- [end:settings]


# --8<-- [start:antipattern]
from celery.schedules import crontab

# ANTI-PATTERN: "hourly" as a crontab on a local clock that has daylight saving time.
HOURLY_ON_A_LOCAL_CLOCK = {
    "hourly-sync": {
        "task": "snippets.periodic_tasks.beat.refresh_rates",
        "schedule": crontab(minute=0),  # skips the repeated hour when clocks go back
        "args": ["hourly-sync"],
    },
}
# --8<-- [end:antipattern]


# --8<-- [start:every-minute]
from celery.schedules import crontab

# ANTI-PATTERN: "every night at 03:00" without minute=. A field left out is "*", like in cron:
# this runs at 03:00, 03:01, ... 03:59, sixty times a night. Write crontab(hour=3, minute=0).
NIGHTLY_WITHOUT_A_MINUTE = {
    "nightly-cleanup": {
        "task": "snippets.periodic_tasks.beat.refresh_rates",
        "schedule": crontab(hour=3),
        "args": ["nightly-cleanup"],
    },
}
# --8<-- [end:every-minute]


# --8<-- [start:simulate]
import copy
from datetime import datetime, timedelta
from typing import Any

from celery import Celery
from celery.beat import ScheduleEntry, Scheduler


class VirtualClock:
    """The time beat reads; a test moves it forward instead of sleeping."""

    def __init__(self, start: datetime, app: Celery) -> None:
        self.now, self.app = start, app

    def __call__(self) -> datetime:
        return self.now.astimezone(self.app.timezone)  # what Celery.now() returns


class RecordingScheduler(Scheduler):
    """Celery's own scheduler, with the publish replaced by a note of when it happened."""

    # tick() passes self.producer to every send, and Scheduler.producer connects to the broker
    # (CELERY_BROKER_URL, else amqp://localhost), retrying 100 times: without this line the
    # simulation needs a broker, and hangs when none answers.
    producer = None

    def __init__(self, app: Celery, clock: VirtualClock) -> None:
        self.clock = clock
        self.sent: list[tuple[str, datetime]] = []
        super().__init__(app, schedule={}, lazy=True)  # lazy: no default entries

    def apply_async(
        self, entry: ScheduleEntry, producer: Any = None, advance: bool = True, **kwargs: Any
    ) -> None:
        self.sent.append((entry.name, self.clock()))


# --8<-- [end:simulate]


# --8<-- [start:beat-sends]
def beat_sends(
    beat_schedule: dict[str, dict[str, Any]],
    timezone: str,
    start: datetime,
    end: datetime,
    last_run_at: datetime | None = None,
    cron_starting_deadline: int | None = None,
    scheduler_class: type[RecordingScheduler] = RecordingScheduler,
) -> list[tuple[str, datetime]]:
    """Run beat's loop from `start` to `end` on a virtual clock: (entry name, local send time).

    `last_run_at` is what a persistent schedule remembers from before a restart;
    `scheduler_class`, a RecordingScheduler with your scheduler's mixins.
    """
    app = Celery("simulated-beat", set_as_current=False)
    app.conf.update(timezone=timezone, beat_cron_starting_deadline=cron_starting_deadline)
    clock = VirtualClock(start, app)
    app.now = clock  # every schedule asks app.now() for the time
    scheduler = scheduler_class(app, clock)
    scheduler.update_from_dict(copy.deepcopy(beat_schedule))  # fresh schedule objects
    for entry in scheduler.schedule.values():
        entry.last_run_at = last_run_at or entry.last_run_at
    while clock.now < end:
        delay = scheduler.tick()  # one turn of `celery beat`'s loop: send what is due
        clock.now += timedelta(seconds=max(delay, 0.001))  # the loop itself takes time
    return [(name, when.astimezone(app.timezone)) for name, when in scheduler.sent]


# --8<-- [end:beat-sends]
