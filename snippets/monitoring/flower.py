"""Flower: the live view of a Celery cluster, built from the events the workers send."""

# --8<-- [start:task]
from celery import shared_task


@shared_task
def thumbnail(image_id: int) -> str:
    """A small task for Flower to watch; it fails on a negative id so failures show too."""
    if image_id < 0:
        raise ValueError(f"no image {image_id}")
    return f"thumb-{image_id}"


# --8<-- [end:task]


# --8<-- [start:client]
import requests


def flower_api(base_url: str, path: str, auth: tuple[str, str]) -> requests.Response:
    """GET one of Flower's API endpoints (/api/workers, /api/tasks, /api/task/info/<id>)."""
    return requests.get(f"{base_url.rstrip('/')}/{path.lstrip('/')}", auth=auth, timeout=10)


def tasks_seen_by_flower(base_url: str, auth: tuple[str, str], name: str) -> dict[str, dict]:
    """Flower's in-memory record of recent tasks of one name, by task id."""
    response = flower_api(base_url, f"/api/tasks?taskname={name}&limit=1000", auth)
    response.raise_for_status()
    return response.json()


def live_workers(base_url: str, auth: tuple[str, str]) -> list[str]:
    """Hostnames of the workers Flower currently sees online (from their heartbeats)."""
    response = flower_api(base_url, "/api/workers?status=1", auth)
    response.raise_for_status()
    return [hostname for hostname, online in response.json().items() if online]


# --8<-- [end:client]
