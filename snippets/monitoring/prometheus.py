"""A small Celery exporter for Prometheus: task events counted, queue lengths read from the broker.

Event counters see what workers did; only the broker knows what nobody has picked up yet.
"""

# --8<-- [start:task]
from celery import shared_task


@shared_task
def charge(amount: int) -> int:
    """A task to measure; a negative amount fails, so the failure rate has something to show."""
    if amount < 0:
        raise ValueError(f"cannot charge {amount}")
    return amount


# --8<-- [end:task]


# --8<-- [start:exporter]
import threading
from collections.abc import Iterator

from celery import Celery
from kombu import Connection
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric


class CeleryExporter:
    """Counts task events and reads worker liveness and queue lengths at scrape time."""

    def __init__(self, app: Celery, queues: list[str], registry: CollectorRegistry) -> None:
        self.app, self.queues = app, queues
        self.state = app.events.State()  # workers' heartbeats, task names by id
        self.lock = threading.Lock()  # events arrive on one thread, scrapes on another
        self.receiver = None
        self.stopping = threading.Event()
        self.events = Counter(
            "celery_task_events", "Task events seen, by task name and event",
            ["name", "event"], registry=registry,
        )  # fmt: skip
        self.runtime = Histogram(
            "celery_task_runtime_seconds", "Runtime of succeeded tasks", ["name"],
            buckets=(0.1, 0.5, 1, 5, 15, 30, 60, 120, 240, float("inf")), registry=registry,
        )  # fmt: skip
        registry.register(self)  # (1)!

    def on_event(self, event: dict) -> None:
        with self.lock:
            self.state.event(event)
            if not event["type"].startswith("task-"):
                return
            task = self.state.tasks.get(event["uuid"])
            name = (task.name if task else None) or "unknown"  # (2)!
        kind = event["type"].removeprefix("task-")
        self.events.labels(name=name, event=kind).inc()
        if kind == "succeeded" and event.get("runtime") is not None:
            self.runtime.labels(name=name).observe(event["runtime"])

    # --8<-- [end:exporter]
    # --8<-- [start:scrape]
    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily(
            "celery_worker_up", "1 while the worker's heartbeats arrive", labels=["hostname"]
        )
        with self.lock:
            workers = [(hostname, w.alive) for hostname, w in self.state.workers.items()]
        for hostname, alive in workers:
            up.add_metric([hostname], 1.0 if alive else 0.0)
        yield up
        length = GaugeMetricFamily(
            "celery_queue_length", "Messages waiting in the broker queue", labels=["queue"]
        )
        with self.app.connection_for_read() as conn:
            for queue in self.queues:
                length.add_metric([queue], float(queue_length(conn, queue)))  # (1)!
        yield length

    def run(self) -> None:
        """Consume events until stop(); reconnects when the broker goes away."""
        with self.app.connection_for_read() as conn:
            self.receiver = self.app.events.Receiver(conn, handlers={"*": self.on_event})
            if not self.stopping.is_set():  # stop() may come before the receiver exists
                self.receiver.run()

    def stop(self) -> None:
        self.stopping.set()
        if self.receiver is not None:
            self.receiver.should_stop = True


# --8<-- [end:scrape]


# --8<-- [start:queue_length]
def queue_length(conn: Connection, queue: str) -> int:
    """Ready messages in the queue, asked of the broker itself (a passive declare)."""
    try:
        with conn.channel() as channel:
            return channel.queue_declare(queue, passive=True).message_count
    except conn.channel_errors:  # (1)!
        return 0


# --8<-- [end:queue_length]


# --8<-- [start:main]
import argparse
import signal

from prometheus_client import start_http_server


def main(argv: list[str] | None = None) -> None:
    """`python -m snippets.monitoring.prometheus --port 9808 --queue celery`: serve /metrics."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--address", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9808)
    parser.add_argument("--queue", action="append", default=[], dest="queues")
    args = parser.parse_args(argv)

    from snippets.project.celery import app

    registry = CollectorRegistry()
    exporter = CeleryExporter(app, args.queues or [app.conf.task_default_queue], registry)
    signal.signal(signal.SIGTERM, lambda *_: exporter.stop())
    server, thread = start_http_server(args.port, addr=args.address, registry=registry)
    print(f"celery exporter on http://{args.address}:{args.port}/metrics", flush=True)
    try:
        exporter.run()
    finally:
        server.shutdown()
        thread.join()


if __name__ == "__main__":
    main()
# --8<-- [end:main]
