"""Worker processes: a rate limit that holds across the whole deployment, not per worker.

A task's `rate_limit` is a token bucket inside each worker process: N workers consuming the
task's queue run it N times as often. The settings below give the task a queue of its own,
and the deployment runs exactly one worker on that queue.
"""

# --8<-- [start:one-consumer]
# settings.py: the calls to a partner API that allows 10 a minute, in all
CELERY_TASK_ROUTES = {
    "snippets.task_design.canvas.add": {"queue": "partner-api"},  # (1)!
}
CELERY_TASK_ANNOTATIONS = {
    "snippets.task_design.canvas.add": {"rate_limit": "10/m"},  # (2)!
}
# The deployment: every other worker leaves the queue alone (-Q names its own queues), and
# exactly one worker consumes "partner-api" (its own systemd unit; Kubernetes: replicas: 1):
PARTNER_API_WORKER = [
    "celery", "-A", "snippets.project", "worker",
    "--queues=partner-api", "--concurrency=1", "--hostname=partner-api@%h",
]  # fmt: skip
# --8<-- [end:one-consumer]
