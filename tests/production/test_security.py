"""Proof for docs/production/security.md: a pickle message is refused and never executed,
secrets stay out of arguments and logs, Flower answers only with credentials, TLS settings."""

from __future__ import annotations

import shlex
import shutil
import socket
import ssl
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
import requests
from celery import Celery

from snippets.production.security import (
    insecure_app,
    rabbitmq_tls,
    redis_tls,
    sync_account,
    sync_account_with_token,
)
from tests.production.conftest import SNIPPETS, celery_argv, prod_env
from tests.proof.test_broker_restart import PrivateRabbit

pytestmark = pytest.mark.django_db(transaction=True)
TOKEN = "tok_live_7f3a9c2e"  # a fake credential the tests look for


class Exploit:
    """A pickle payload: unpickling it calls open(path, "w"), i.e. runs code, creating a file."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self) -> tuple:
        return (open, (self.path, "w"))


def wait_for(predicate, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"still false after {timeout}s"
        time.sleep(0.1)


def test_a_pickle_message_is_refused_and_never_executed(celery_worker, tmp_path, caplog):
    """The project's settings (JSON only): the worker refuses the message before unpickling."""
    marker = tmp_path / "pwned"
    result = sync_account.apply_async((Exploit(str(marker)),), serializer="pickle")

    wait_for(lambda: "Refusing to deserialize untrusted content of type pickle" in caplog.text)
    assert not marker.exists()  # the payload never ran
    assert result.state == "PENDING"  # and no task ran either


@pytest.mark.antipattern("accept_content with pickle")
@pytest.mark.services("broker")
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
    wait_for(marker.exists)  # created by unpickling, on the worker, before any task logic
    # ...and then the worker died trying to hand the unpickled object to its pool
    worker.wait_for_log("Unrecoverable error")


def test_secrets_stay_out_of_arguments_and_logs(celery_worker, monkeypatch, caplog, published):
    monkeypatch.setenv("PAYMENT_API_TOKEN", TOKEN)
    assert sync_account.delay(42).get(timeout=20) == (
        f"synced account 42 with a {len(TOKEN)}-character token"
    )
    with pytest.raises(ValueError, match="unknown account -1"):
        sync_account.delay(-1).get(timeout=20)

    wait_for(lambda: "unknown account -1" in caplog.text)  # the failure is logged, with args
    assert "args=(-1,)" in caplog.text
    assert TOKEN not in caplog.text
    assert all(TOKEN not in repr(p) for p in published)  # not in any message either


@pytest.mark.antipattern("a secret as a task argument")
def test_why_a_secret_argument_leaks(celery_worker, caplog, published):
    """The anti-pattern: the token is in the message and in the failure log."""
    assert sync_account_with_token.delay(42, TOKEN).get(timeout=20).startswith("synced")
    with pytest.raises(ValueError, match="unknown account -1"):
        sync_account_with_token.delay(-1, TOKEN).get(timeout=20)

    wait_for(lambda: "unknown account -1" in caplog.text)
    assert TOKEN in caplog.text  # the failure logger prints the arguments...
    assert any(TOKEN in repr(p["args"]) for p in published)  # ...and the broker holds them
    assert sync_account_with_token.antipattern.endswith("test_why_a_secret_argument_leaks")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def flower_command(script: str, port: int) -> list[str]:
    [line] = [x for x in (SNIPPETS / script).read_text().splitlines() if x.startswith("celery ")]
    return [a.replace("5555", str(port)) for a in celery_argv(line)]


def wait_http(url: str, proc, timeout: float = 60) -> requests.Response:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.proc.poll() is None, proc.log()
        try:
            return requests.get(url, timeout=5)
        except requests.ConnectionError:
            time.sleep(0.3)
    raise TimeoutError(f"{url} did not answer:\n{proc.log()}")


@pytest.mark.services("broker")
def test_flower_answers_only_with_credentials_from_the_environment(run_command):
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


@pytest.mark.antipattern("a password on the command line")
@pytest.mark.services("broker")
def test_why_a_password_argument_is_readable_by_every_local_user(run_command):
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
    ca = str(tmp_path / "ca.pem")
    app = Celery(
        "tls", broker="rediss://:pw@redis.internal:6380/0",
        backend="rediss://:pw@redis.internal:6380/1", set_as_current=False,
    )  # fmt: skip
    app.conf.update(redis_tls(ca))
    assert app.connection_for_write().as_uri().startswith("rediss://")
    assert app.connection_for_write().ssl == {
        "ssl_cert_reqs": ssl.CERT_REQUIRED,
        "ssl_ca_certs": ca,
    }
    params = app.backend.connparams
    assert (params["ssl_cert_reqs"], params["ssl_ca_certs"]) == (ssl.CERT_REQUIRED, ca)


def make_certificates(directory: Path) -> str:
    """A CA of the test's own, and a broker certificate it signs for 127.0.0.1; the CA's path."""

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=directory, check=True, capture_output=True,
                       timeout=60)  # fmt: skip

    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem",
            "-days", "1", "-subj", "/CN=snippets test CA")  # fmt: skip
    openssl("req", "-new", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key",
            "-out", "server.csr", "-subj", "/CN=broker")  # fmt: skip
    (directory / "san.cnf").write_text("subjectAltName=IP:127.0.0.1\n")
    openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
            "-CAcreateserial", "-out", "server.pem", "-days", "1",
            "-extfile", "san.cnf")  # fmt: skip
    for file in directory.iterdir():
        file.chmod(0o644)  # the node runs as the rabbitmq user
    return str(directory / "ca.pem")


@pytest.fixture(scope="module")
def tls_rabbit() -> Iterator[tuple[int, str]]:
    """A RabbitMQ node of the module's own with a TLS listener: (its TLS port, the CA file)."""
    if not shutil.which("rabbitmq-server"):
        pytest.fail("rabbitmq-server is not installed")
    node = PrivateRabbit()
    ca = make_certificates(node.dir)
    port = free_port()
    (node.dir / "none.conf").write_text(  # the node's RABBITMQ_CONFIG_FILE (+ .conf)
        f"listeners.ssl.default = {port}\n"
        f"ssl_options.cacertfile = {ca}\n"
        f"ssl_options.certfile = {node.dir / 'server.pem'}\n"
        f"ssl_options.keyfile = {node.dir / 'server.key'}\n"
    )
    node.start()
    try:
        yield port, ca
    finally:
        node.stop()


def tls_connects(url: str, settings: dict[str, object]) -> bool:
    """Open a connection to `url` as an app configured with `settings` would."""
    app = Celery("tls-amqp", broker=url, set_as_current=False)
    app.conf.update(settings)
    with app.connection_for_write() as conn:
        conn.connect()
        return conn.connected


@pytest.mark.services("rabbitmq")
def test_rabbitmq_tls_accepts_the_brokers_certificate_and_refuses_another_hosts(
    tls_rabbit, no_url_env
):
    """The node's certificate, from the test's CA, names 127.0.0.1. Reached as 127.0.0.2 (the
    same node), it is a valid certificate of the CA issued for another host: what a man in the
    middle holding any certificate of an internal CA presents."""
    port, ca = tls_rabbit
    assert tls_connects(f"amqps://guest:guest@127.0.0.1:{port}//", rabbitmq_tls(ca))
    with pytest.raises(ssl.SSLCertVerificationError, match=r"not valid for '127\.0\.0\.2'"):
        tls_connects(f"amqps://guest:guest@127.0.0.2:{port}//", rabbitmq_tls(ca))


@pytest.mark.services("rabbitmq")
@pytest.mark.antipattern("broker_use_ssl without server_hostname")
def test_why_without_server_hostname_a_certificate_for_another_host_is_accepted(
    tls_rabbit, no_url_env
):
    port, ca = tls_rabbit
    settings = rabbitmq_tls(ca)
    del settings["broker_use_ssl"]["server_hostname"]  # type: ignore[attr-defined]
    assert tls_connects(f"amqps://guest:guest@127.0.0.2:{port}//", settings)  # chain checked only


def test_why_rediss_without_certificate_checks_is_refused(no_url_env):
    """Celery refuses a rediss:// result backend that does not say how to check the server."""
    app = Celery("tls", backend="rediss://:pw@redis.internal:6380/1", set_as_current=False)
    with pytest.raises(ValueError, match="ssl_cert_reqs"):
        app.backend  # noqa: B018 - building the backend validates its URL


def test_the_broker_password_is_masked_where_celery_prints_the_url():
    """The worker banner, `Connected to ...` and Flower print the URL through this."""
    from kombu.utils.url import maybe_sanitize_url

    assert maybe_sanitize_url("amqp://ops:s3cret@rabbit:5672//") == "amqp://ops:**@rabbit:5672//"
