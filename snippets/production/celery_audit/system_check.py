"""The Django system check the audit reuses: Celery settings that silently do nothing."""

# --8<-- [start:check]
from celery import Celery
from celery.app.defaults import _TO_NEW_KEY, NAMESPACES, flatten
from django.core.checks import CheckMessage, Error, Warning, register

KNOWN_SETTINGS = {f"CELERY_{name.upper()}" for name, _option in flatten(NAMESPACES)}
RABBITMQ_CONSUMER_TIMEOUT = 1800  # rabbitmq.conf consumer_timeout: 30 min unless raised there


def effective_celery_conf() -> object:
    """What Celery will really use: Django settings under CELERY_, over Celery's defaults."""
    app = Celery(set_as_current=False)
    app.config_from_object("django.conf:settings", namespace="CELERY")
    return app.conf


def redelivery_window(conf: object, consumer_timeout: float = RABBITMQ_CONSUMER_TIMEOUT) -> tuple:
    """How long the broker lets a delivered, unacked message run before it hands it out again."""
    if str(conf.broker_url or "").startswith(("amqp", "pyamqp")):
        return ("RabbitMQ consumer_timeout", consumer_timeout)
    options = conf.broker_transport_options or {}
    return ("visibility_timeout", options.get("visibility_timeout", 3600))


@register("celery")
def check_celery_settings(app_configs: object = None, **kwargs: object) -> list[CheckMessage]:
    """Fail `manage.py check` (and so the deploy) on settings that silently do nothing."""
    from django.conf import settings

    conf = effective_celery_conf()
    problems: list[CheckMessage] = []
    for name in sorted(n for n in dir(settings) if n.startswith("CELERY_")):
        if name in KNOWN_SETTINGS:
            continue
        if name in _TO_NEW_KEY:  # (1)!
            new = f"CELERY_{_TO_NEW_KEY[name].upper()}"
            problems.append(Warning(f"{name} is the old name of {new}", id="celery.W002"))
        else:
            problems.append(Error(f"{name} is not a Celery setting", id="celery.E001"))
    accepted = {*conf.accept_content, *(conf.result_accept_content or ())}  # None: the same
    kinds = {conf.task_serializer, conf.result_serializer, *accepted} - {"application/json"}
    if kinds != {"json"}:  # (2)!
        problems.append(Error(f"JSON only, got {sorted(kinds)}", id="celery.E002"))
    soft, hard = conf.task_soft_time_limit, conf.task_time_limit
    consumer_timeout = kwargs.get("consumer_timeout", RABBITMQ_CONSUMER_TIMEOUT)  # the audit's
    redelivery = redelivery_window(conf, consumer_timeout)  # (3)!
    if not (soft and hard and soft < hard < redelivery[1]):
        problems.append(
            Error(f"need soft {soft} < hard {hard} < {redelivery[0]} {redelivery[1]}",
                  id="celery.E003")
        )  # fmt: skip
    if conf.task_acks_late and not (
        conf.task_reject_on_worker_lost or conf.task_retry_on_worker_lost
    ):  # (4)!
        problems.append(
            Warning("acks_late acks a task whose worker died: it is lost", id="celery.W001")
        )
    return problems


# --8<-- [end:check]
