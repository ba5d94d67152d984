"""A beat scheduler that can be wedged from outside, for the beat probe's proof.

While the file named by ``SNIPPETS_STUCK_MARKER`` exists, a scheduler pass blocks (a pass stuck
on a database lock or a hung publish); the process, and beat's remote-control thread, go on.
"""

import os
import time
from pathlib import Path

from celery.beat import PersistentScheduler
from celery.utils.log import get_logger

logger = get_logger(__name__)


class StuckScheduler(PersistentScheduler):
    def tick(self, *args: object, **kwargs: object) -> float:
        marker = Path(os.environ["SNIPPETS_STUCK_MARKER"])
        if marker.exists():
            logger.warning("scheduler pass stuck")
            while marker.exists():
                time.sleep(0.1)
            logger.warning("scheduler pass unstuck")
        return super().tick(*args, **kwargs)
