"""Security: JSON only, secrets from the environment (never in arguments), TLS to brokers."""

# --8<-- [start:secrets]
import os

from celery import shared_task


@shared_task
def sync_account(account_id: int) -> str:
    """Take an id; read the credential where it is used, from the environment."""
    token = os.environ["PAYMENT_API_TOKEN"]  # a Secret / EnvironmentFile, never an argument
    if account_id < 0:
        raise ValueError(f"unknown account {account_id}")  # logged with args: only the id
    return f"synced account {account_id} with a {len(token)}-character token"


# --8<-- [end:secrets]


# --8<-- [start:secrets_antipattern]
from celery import shared_task


@shared_task(antipattern="tests/production/test_security.py::test_why_a_secret_argument_leaks")
def sync_account_with_token(account_id: int, api_token: str) -> str:
    """ANTI-PATTERN: the token travels in the message, so it is in the broker, in Flower,
    in the task events and in every failure log line that prints the arguments."""
    if account_id < 0:
        raise ValueError(f"unknown account {account_id}")
    return f"synced account {account_id} with a {len(api_token)}-character token"


# --8<-- [end:secrets_antipattern]


# --8<-- [start:pickle_antipattern]
from celery import Celery


def insecure_app(broker_url: str) -> Celery:
    """ANTI-PATTERN: accepting pickle. Anyone who can publish to the broker runs code on
    every worker: unpickling calls whatever the message says, before any task starts."""
    app = Celery("insecure", broker=broker_url, set_as_current=False)
    app.conf.accept_content = ["json", "pickle"]  # the one line that opens the door
    app.conf.task_default_queue = "insecure"

    @app.task(name="insecure.echo", ignore_result=True)
    def echo(value: str) -> None: ...  # any task will do: the payload runs before it

    return app


# --8<-- [end:pickle_antipattern]


# --8<-- [start:tls]
import ssl


def redis_tls(ca_certs: str) -> dict[str, object]:
    """Celery settings for Redis over TLS (broker and result backend on rediss:// URLs)."""
    verify = {"ssl_cert_reqs": ssl.CERT_REQUIRED, "ssl_ca_certs": ca_certs}
    return {"broker_use_ssl": verify, "redis_backend_use_ssl": verify}


def rabbitmq_tls(ca_certs: str) -> dict[str, object]:
    """Celery settings for RabbitMQ over TLS (an amqps:// URL, port 5671)."""
    return {
        "broker_use_ssl": {
            "cert_reqs": ssl.CERT_REQUIRED,
            "ca_certs": ca_certs,
            "server_hostname": None,  # (1)!
        }
    }


# --8<-- [end:tls]
