"""Proof for docs/production/security.md: a pickle message is refused and never executed,
secrets stay out of arguments and logs, Flower answers only with credentials, TLS settings."""

from __future__ import annotations

import contextlib
import shlex
import socket
import ssl
import subprocess
import threading
import uuid
from pathlib import Path

import psutil
import pytest
import requests
from celery import Celery

from snippets.production.security import (
    insecure_app,
    rabbitmq_tls,
    rabbitmq_tls_without_hostname_check,
    redis_tls,
    sync_account,
    sync_account_with_token,
)
from tests.configuration.test_production_settings import (
    test_the_page_invariants_hold_on_the_project_app as production_settings_hold,
)
from tests.configuration.test_production_settings import (
    test_the_timezone_follows_djangos_time_zone as timezone_holds,
)
from tests.configuration.test_production_settings import (
    test_without_a_service_variable_the_settings_do_not_load as settings_need,
)
from tests.harness.net import free_port
from tests.harness.redelivery import redeliver
from tests.harness.wait import wait_until
from tests.production.helpers import SNIPPETS, celery_argv, prod_env

pytestmark = pytest.mark.django_db(transaction=True)
TOKEN = "tok_live_7f3a9c2e"  # a fake credential the tests look for


class Exploit:
    """A pickle payload: unpickling it calls open(path, "w"), i.e. runs code, creating a file."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self) -> tuple:
        return (open, (self.path, "w"))


def test_the_settings_block_holds_what_production_settings_proves(celery_app):
    """The page shows the project's whole settings block for its JSON-only lines; the other
    lines are the production-settings page's, proved there (tests/configuration/
    test_production_settings.py). Its checks of the block run here too, on the app these
    proofs use, so a block this page shows broken fails this page's proof as well."""
    production_settings_hold(celery_app)
    timezone_holds()
    for credential in ("CELERY_BROKER_URL", "CELERY_RESULT_BACKEND"):
        settings_need(credential)  # from the environment: a missing one stops the start


def test_a_pickle_message_is_refused_and_never_executed(celery_worker, tmp_path, caplog):
    """The project's settings (JSON only): the worker refuses the message before unpickling."""
    marker = tmp_path / "pwned"
    result = sync_account.apply_async((Exploit(str(marker)),), serializer="pickle")

    wait_until(lambda: "Refusing to deserialize untrusted content of type pickle" in caplog.text)
    assert not marker.exists()  # the payload never ran
    assert result.state == "PENDING"  # and no task ran either


@pytest.mark.antipattern("snippets/production/security.py:pickle_antipattern")
@pytest.mark.services("broker")
@pytest.mark.deviation(
    "-A tests.production.insecure_worker_app", reason="the anti-pattern app, accepting pickle"
)
@pytest.mark.deviation(
    "C_FORCE_ROOT=1", reason="CI runs as root, where Celery refuses a pickle worker without it"
)
def test_why_accepting_pickle_runs_the_senders_code(worker_process, tmp_path, celery_app):
    """The anti-pattern app (accept_content includes pickle): the same message runs code."""
    # As root, Celery refuses to start a pickle-accepting worker unless C_FORCE_ROOT is set;
    # as any other user it starts without a word.
    worker = worker_process(app="tests.production.insecure_worker_app", env={"C_FORCE_ROOT": "1"})
    marker = tmp_path / "pwned"
    sender = insecure_app(celery_app.conf.broker_url)
    sender.tasks["insecure.echo"].apply_async(
        (Exploit(str(marker)),), serializer="pickle", queue=worker.queue
    )
    wait_until(marker.exists)  # created by unpickling, on the worker, before any task logic
    # ...and then the worker died trying to hand the unpickled object to its pool
    worker.wait_for_log("Unrecoverable error")


def test_secrets_stay_out_of_arguments_and_logs(celery_worker, monkeypatch, caplog, published):
    """The pattern: the token is read by the worker, so it is neither in the message nor in the
    failure log."""
    monkeypatch.setenv("PAYMENT_API_TOKEN", TOKEN)
    assert sync_account.delay(42).get(timeout=20) == (
        f"synced account 42 with a {len(TOKEN)}-character token"
    )
    with pytest.raises(ValueError, match="unknown account -1"):
        sync_account.delay(-1).get(timeout=20)

    wait_until(lambda: "unknown account -1" in caplog.text)  # the failure is logged, with args
    assert "args=(-1,)" in caplog.text
    assert TOKEN not in caplog.text
    assert all(TOKEN not in repr(p) for p in published)  # not in any message either


@pytest.mark.services("broker")
@pytest.mark.deviation(
    "PAYMENT_API_TOKEN", reason="the Secret the page's worker reads from its environment"
)
@pytest.mark.proves_idempotent(task=sync_account)
def test_a_sync_delivered_twice_reads_the_token_from_the_workers_environment(worker_process):
    """On a real worker whose environment holds the credential (as a Secret or EnvironmentFile
    puts it there): the same message twice gives the same answer, and the token is in no line
    the worker logged."""
    wp = worker_process(env={"PAYMENT_API_TOKEN": TOKEN})
    expected = f"synced account 42 with a {len(TOKEN)}-character token"
    first = sync_account.apply_async((42,), queue=wp.queue)
    assert first.get(timeout=30) == expected
    again = redeliver(wp, sync_account, first, (42,))  # a redelivery: the same id again
    assert (again["status"], again["result"]) == ("SUCCESS", expected)
    assert TOKEN not in wp.log()


@pytest.mark.antipattern(task=sync_account_with_token)
def test_why_a_secret_argument_leaks(celery_worker, caplog, published):
    """The anti-pattern: the token is in the message and in the failure log."""
    assert sync_account_with_token.delay(42, TOKEN).get(timeout=20).startswith("synced")
    with pytest.raises(ValueError, match="unknown account -1"):
        sync_account_with_token.delay(-1, TOKEN).get(timeout=20)

    wait_until(lambda: "unknown account -1" in caplog.text)
    assert TOKEN in caplog.text  # the failure logger prints the arguments...
    assert any(TOKEN in repr(p["args"]) for p in published)  # ...and the broker holds them


def flower_command(script: str, port: int) -> list[str]:
    [line] = [x for x in (SNIPPETS / script).read_text().splitlines() if x.startswith("celery ")]
    return [a.replace("5555", str(port)) for a in celery_argv(line)]


def wait_http(url: str, proc, timeout: float = 60) -> requests.Response:
    def get() -> list[requests.Response] | None:  # a list: a 401 Response is falsy
        proc.check_alive()
        with contextlib.suppress(requests.ConnectionError):
            return [requests.get(url, timeout=5)]
        return None

    [response] = wait_until(get, timeout, what=f"{url} answers", interval=0.3, context=proc)
    return response


@pytest.mark.services("broker")
def test_flower_answers_only_with_credentials_from_the_environment(run_command):
    """Flower started with the page's command: 401 without or with wrong credentials, 200 with them,
    and the password absent from its command line."""
    port = free_port()
    password = uuid.uuid4().hex
    flower = run_command(
        flower_command("flower.sh", port), env=prod_env(FLOWER_BASIC_AUTH=f"ops:{password}")
    )
    url = f"http://127.0.0.1:{port}/api/workers"

    assert wait_http(url, flower).status_code == 401
    assert requests.get(url, auth=("ops", "wrong"), timeout=10).status_code == 401
    assert requests.get(url, auth=("ops", password), timeout=10).status_code == 200
    assert password not in shlex.join(psutil.Process(flower.pid).cmdline())


@pytest.mark.antipattern("snippets/production/flower-antipattern.sh")
@pytest.mark.services("broker")
def test_why_a_password_argument_is_readable_by_every_local_user(run_command):
    """A password passed on Flower's command line is readable by any local user in
    `/proc/<pid>/cmdline`."""
    port = free_port()
    flower = run_command(flower_command("flower-antipattern.sh", port), env=prod_env())
    wait_http(f"http://127.0.0.1:{port}/api/workers", flower)

    # /proc/<pid>/cmdline is world-readable: any user on the host (or in the pod) sees it.
    assert "s3cret-on-the-command-line" in " ".join(psutil.Process(flower.pid).cmdline())


@pytest.fixture
def no_url_env(monkeypatch):
    """Celery lets CELERY_BROKER_URL / CELERY_RESULT_BACKEND in the environment override the
    URLs an app is given: drop the test run's own, so these apps keep their rediss:// URLs."""
    monkeypatch.delenv("CELERY_BROKER_URL", raising=False)
    monkeypatch.delenv("CELERY_RESULT_BACKEND", raising=False)


def test_tls_settings_reach_the_broker_connection_and_the_result_backend(tmp_path, no_url_env):
    """The TLS settings reach kombu's broker connection and the Redis result backend (not exercised
    against a TLS server here)."""
    ca = str(tmp_path / "ca.pem")
    app = Celery(
        "tls",
        broker="rediss://:pw@redis.internal:6380/0",
        backend="rediss://:pw@redis.internal:6380/1",
        set_as_current=False,
    )
    app.conf.update(redis_tls(ca))
    assert app.connection_for_write().as_uri().startswith("rediss://")
    assert app.connection_for_write().ssl == {
        "ssl_cert_reqs": ssl.CERT_REQUIRED,
        "ssl_ca_certs": ca,
    }
    params = app.backend.connparams
    assert (params["ssl_cert_reqs"], params["ssl_ca_certs"]) == (ssl.CERT_REQUIRED, ca)

    amqp = Celery("tls-amqp", broker="amqps://u:pw@rabbit.internal:5671//", set_as_current=False)
    amqp.conf.update(rabbitmq_tls(ca))
    assert amqp.connection_for_write().as_uri().startswith("amqps://")
    assert amqp.connection_for_write().ssl["ca_certs"] == ca


def openssl(*args: str | Path) -> None:
    subprocess.run(["openssl", *map(str, args)], check=True, capture_output=True, timeout=60)


@pytest.fixture(scope="module")
def certificates(tmp_path_factory) -> dict[str, Path]:
    """A throw-away CA, and two certificates it signs: the broker's (127.0.0.1) and another
    internal service's (other.internal), as any holder of a certificate from that CA has."""
    d = tmp_path_factory.mktemp("pki")
    openssl(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "1",
        "-subj",
        "/CN=ca",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign",
        "-keyout",
        d / "ca.key",
        "-out",
        d / "ca.pem",
    )
    for name, san in [("broker", "IP:127.0.0.1"), ("other", "DNS:other.internal")]:
        openssl(
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            f"/CN={name}",
            "-keyout",
            d / f"{name}.key",
            "-out",
            d / f"{name}.csr",
        )
        (d / f"{name}.ext").write_text(f"subjectAltName={san}\n")
        openssl(
            "x509",
            "-req",
            "-in",
            d / f"{name}.csr",
            "-CA",
            d / "ca.pem",
            "-CAkey",
            d / "ca.key",
            "-CAcreateserial",
            "-days",
            "1",
            "-extfile",
            d / f"{name}.ext",
            "-out",
            d / f"{name}.pem",
        )
    return {"ca": d / "ca.pem", **{n: d / n for n in ("broker", "other")}}


def tls_handshake(settings: dict, cert: Path) -> str:
    """Connect a Celery app with `settings` to a TLS server presenting `cert`: what the server
    saw of the handshake ("completed", or the client's refusal)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert.with_suffix(".pem"), cert.with_suffix(".key"))
    seen: list[str] = []
    with socket.create_server(("127.0.0.1", 0)) as server:
        server.settimeout(30)

        def serve() -> None:
            conn, _ = server.accept()
            try:
                with context.wrap_socket(conn, server_side=True):
                    seen.append("completed")  # then close: no AMQP spoken here
            except (ssl.SSLError, OSError) as exc:
                seen.append(f"refused: {exc}")

        thread = threading.Thread(target=serve, daemon=True)
        thread.start()
        port = server.getsockname()[1]
        app = Celery("tls", broker=f"amqps://u:pw@127.0.0.1:{port}//", set_as_current=False)
        app.conf.update(settings, broker_connection_timeout=10)
        with contextlib.suppress(Exception), app.connection_for_write() as conn:
            conn.transport.establish_connection()  # one attempt, no retry
        thread.join(30)
    [outcome] = seen
    return outcome


def test_rabbitmq_tls_accepts_the_brokers_certificate_and_refuses_another_name(
    certificates, no_url_env
):
    settings = rabbitmq_tls(str(certificates["ca"]))
    assert tls_handshake(settings, certificates["broker"]) == "completed"
    settings = rabbitmq_tls(str(certificates["ca"]))
    assert tls_handshake(settings, certificates["other"]).startswith("refused")


@pytest.mark.antipattern("snippets/production/security.py:tls-antipattern")
def test_why_tls_without_server_hostname_accepts_any_certificate_of_the_ca(
    certificates, no_url_env
):
    """py-amqp: check_hostname = HAS_SNI and server_hostname is not None (amqp/transport.py)."""
    settings = rabbitmq_tls_without_hostname_check(str(certificates["ca"]))
    assert tls_handshake(settings, certificates["other"]) == "completed"  # a man in the middle


def test_why_rediss_without_certificate_checks_is_refused(no_url_env):
    """Celery refuses a rediss:// result backend that does not say how to check the server."""
    app = Celery("tls", backend="rediss://:pw@redis.internal:6380/1", set_as_current=False)
    with pytest.raises(ValueError, match="ssl_cert_reqs"):
        app.backend  # noqa: B018 - building the backend validates its URL


def test_the_broker_password_is_masked_where_celery_prints_the_url():
    """The worker banner, `Connected to ...` and Flower print the URL through this."""
    from kombu.utils.url import maybe_sanitize_url

    assert maybe_sanitize_url("amqp://ops:s3cret@rabbit:5672//") == "amqp://ops:**@rabbit:5672//"
