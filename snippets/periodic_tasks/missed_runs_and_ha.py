"""Runs missed while beat was down, and beat without a single point of failure or duplicates."""

# --8<-- [start:deadline]
CELERY_BEAT_CRON_STARTING_DEADLINE = 10 * 60  # (1)!
# --8<-- [end:deadline]


# --8<-- [start:leader]
import logging
import zlib
from typing import Any

from celery.beat import PersistentScheduler
from django.db import DatabaseError, connections

logger = logging.getLogger(__name__)


class LeaderLockMixin:
    """Only the beat holding a PostgreSQL advisory lock sends; any other beat stands by.

    The lock lives on a connection of its own: it is released the moment the leader's
    process dies (its connection closes), and a standby beat takes over on its next tick.
    """

    lock_name = "celery-beat"  # one name per schedule that must have a single sender
    standby_interval = 5.0  # seconds between a standby beat's attempts
    _lock_connection: Any = None
    _leader: bool | None = None

    def tick(self, *args: Any, **kwargs: Any) -> float:
        if self.is_leader():
            return super().tick(*args, **kwargs)
        # A standby runs the schedule too, without sending: its entries' last runs move on
        # with the leader's, so at takeover it does not re-send what the leader already sent.
        return min(super().tick(*args, **kwargs), self.standby_interval)  # (1)!

    def apply_entry(self, entry: Any, producer: Any = None) -> None:
        if self._leader:
            super().apply_entry(entry, producer=producer)

    # --8<-- [end:leader]
    # --8<-- [start:lock]
    def is_leader(self) -> bool:
        was_leader = self._leader
        try:
            if self._lock_connection is None:
                self._lock_connection = connections.create_connection("default")  # (1)!
            with self._lock_connection.cursor() as cursor:
                if self._leader:
                    cursor.execute("SELECT 1")  # still connected, so still the holder
                else:
                    key = zlib.crc32(self.lock_name.encode())
                    cursor.execute("SELECT pg_try_advisory_lock(%s)", [key])
                    (self._leader,) = cursor.fetchone()
        except DatabaseError as exc:
            if was_leader:
                logger.exception("beat: lost the connection that holds the lock %r", self.lock_name)
            else:  # a standby that cannot reach the database: it tries again in a moment
                logger.debug("beat: cannot try the lock %r: %s", self.lock_name, exc)
            self._leader = False
            self._close_lock_connection()
        if self._leader and not was_leader:
            logger.warning("beat: this beat holds the lock %r and sends", self.lock_name)
        elif not self._leader and was_leader is not False:
            logger.warning("beat: another beat holds the lock %r; standing by", self.lock_name)
        return bool(self._leader)

    def _close_lock_connection(self) -> None:
        if self._lock_connection is not None:
            self._lock_connection.close()
            self._lock_connection = None

    def close(self) -> None:
        super().close()
        self._close_lock_connection()  # releases the lock at once

    # --8<-- [end:lock]


# --8<-- [start:scheduler]
class LeaderScheduler(LeaderLockMixin, PersistentScheduler):
    """`celery beat -S snippets.periodic_tasks.missed_runs_and_ha:LeaderScheduler`"""


# --8<-- [end:scheduler]


# --8<-- [start:idle-standby]
class IdleStandbyMixin(LeaderLockMixin):
    """ANTI-PATTERN: a standby that skips the schedule altogether while it waits for the lock.

    Its entries keep the last run they had when it started; at takeover every crontab run
    since then counts as missed, and is sent again, although the leader sent it.
    """

    def tick(self, *args: Any, **kwargs: Any) -> float:
        if not self.is_leader():
            return min(self.standby_interval, self.max_interval)
        return super(LeaderLockMixin, self).tick(*args, **kwargs)


# --8<-- [end:idle-standby]
