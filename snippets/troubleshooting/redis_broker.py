"""Redis as a broker: a check that reads what the server is configured to do with full memory."""

# --8<-- [start:check]
import redis


def redis_broker_problems(url: str) -> list[str]:
    """What in this Redis's configuration or history can refuse or silently lose messages."""
    client = redis.Redis.from_url(url)
    config = client.config_get("maxmemory*") | client.config_get("maxclients")  # (1)!
    info = client.info()
    problems = []
    if config["maxmemory-policy"] != "noeviction":  # (2)!
        problems.append(
            f"maxmemory-policy is {config['maxmemory-policy']}: queued tasks can be evicted"
        )
    if info["evicted_keys"]:  # (3)!
        problems.append(f"{info['evicted_keys']} keys evicted since the server started")
    if int(config["maxmemory"]) and info["used_memory"] > 0.8 * int(config["maxmemory"]):
        problems.append("used memory above 80% of maxmemory: publishes will soon fail (OOM)")
    if info["connected_clients"] > 0.8 * int(config["maxclients"]):  # (4)!
        problems.append("connected clients above 80% of maxclients")
    return problems


# --8<-- [end:check]

# --8<-- [start:databases]
# settings.py: the queues and their bindings in database 0, the results in database 1, so that
# clearing results (FLUSHDB, a cleanup script's SCAN + DEL) never touches a queue.
CELERY_BROKER_URL = "redis://redis.internal:6379/0"
CELERY_RESULT_BACKEND = "redis://redis.internal:6379/1"
# --8<-- [end:databases]
