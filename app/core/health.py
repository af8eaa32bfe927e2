"""Liveness and readiness, and the queue numbers `/metrics` reports."""

from __future__ import annotations

from app.errors import GatewayError, StorageError
from app.metrics import Metrics
from app.store.database import Database
from app.store.engine import current_revision, head_revision
from app.store.stats import ping, queue_stats


class NotReadyError(GatewayError):
    status = 503
    type = "server_error"
    code = "not_ready"


async def check_ready(database: Database) -> dict[str, str]:
    """Ready when the database answers and its schema is at this code's head migration."""
    try:
        await ping(database)
        current = await current_revision(database.engine)
    except (StorageError, OSError) as exc:
        raise NotReadyError(f"The database is not reachable: {type(exc).__name__}.") from exc
    except Exception as exc:  # the driver's own connect errors surface here, unmapped
        raise NotReadyError(f"The database is not reachable: {type(exc).__name__}.") from exc
    head = head_revision() or ""
    if current != head:
        raise NotReadyError(
            f"The database is at migration {current or '(empty)'}, the code needs {head}: "
            "run `responses-gateway migrate`."
        )
    return {"status": "ready", "database": "ok", "migration": head}


async def refresh_queue_metrics(database: Database, metrics: Metrics) -> None:
    """Set the background queue gauges from the shared database (the same on every replica)."""
    try:
        stats = await queue_stats(database)
    except StorageError:
        return  # the scrape still answers with everything else
    metrics.queue_depth.set(stats.queued)
    metrics.running_jobs.set(stats.running)
    metrics.oldest_job_age.set(stats.oldest_queued_age)
