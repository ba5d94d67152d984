"""`manage.py replay_dead_letters [--queue NAME] [--limit N]`: send dead letters again."""

# --8<-- [start:command]
from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from snippets.error_handling.dead_letters import replay_dead_letters, replay_failed_tasks


class Command(BaseCommand):
    help = "After the fix: replay a RabbitMQ dead-letter queue (--queue) or the failed-task table."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--queue", help="the work queue whose <queue>.dead to replay")
        parser.add_argument("--limit", type=int, default=1000)

    def handle(self, *_args: Any, queue: str | None, limit: int, **_options: Any) -> None:
        from snippets.project.celery import app

        count = replay_dead_letters(app, queue, limit) if queue else replay_failed_tasks(app, limit)
        self.stdout.write(f"replayed {count}")


# --8<-- [end:command]
