"""Runtime settings, read from the environment once.

Everything that differs between the embedded local stack and AWS lives here, so no other
module reads ``os.environ``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

__all__ = ["DEFAULT_DASHBOARD_ORIGIN", "DEFAULT_INGEST_BURST", "DEFAULT_INGEST_RATE", "PROJECT_ROOT", "Settings",
           "get_settings", "reset_settings"]

PROJECT_ROOT = Path(__file__).resolve().parent.parent

DEFAULT_DASHBOARD_ORIGIN = "http://127.0.0.1:8080"  # `streamfold up`'s dashboard (same origin as its API)
DEFAULT_INGEST_RATE = 50.0  # requests/s per write key; Segment SDKs send batches of up to 500 KB
DEFAULT_INGEST_BURST = 200  # requests a quiet key may send at once (backfills, flushes after an outage)


@dataclass(frozen=True)
class Settings:
    """Resolved configuration.

    Attributes:
        dynamodb_endpoint: explicit endpoint (DynamoDB Local or another); ``None`` means real AWS.
        table_prefix: prefix of every table name (``<prefix>control``, ``<prefix>events-YYYYMMDD``).
        region: AWS region name.
        data_dir: where the local stack keeps persistent state (DynamoDB Local files, search index).
        alerts_topic_arn: SNS topic for score alerts on AWS (locally alerts go to tenant webhooks).
        dashboard_origin: the only origin allowed to call ``/api/*`` from a browser on another origin (CORS).
        ingest_rate / ingest_burst: token bucket per write key (requests per second, bucket size).
        view_writes: ``pages`` (the projector packs usage into delta pages and settles the per-account items
            later: ``chalicelib.pages``) or ``direct`` (every touched item written in the batch).
        settle_seconds / settle_min_age_seconds: a bucket's pages are settled once the oldest is this old;
            pages younger than the minimum age are never settled (see ``streams.writer``).
        settle_inline: due buckets a projector invocation settles itself (0: all by the settler schedule).
        settle_budget_seconds / settle_pause / settle_workers: one settler run settles due buckets one at a time,
            most urgent first, until this long has passed; after each bucket it sleeps ``settle_pause`` times as
            long as the bucket took; its writes go through a view store of ``settle_workers`` threads of its own.
            Locally (one DynamoDB Local shared with the projector on a small machine) 10 s, 0.5 (a duty cycle
            of two thirds) and 4; on AWS 20 s of a run every minute (the function times out at 30 s), no pause, 8.
    """

    dynamodb_endpoint: str | None
    table_prefix: str
    region: str
    data_dir: Path
    alerts_topic_arn: str | None
    opensearch_url: str | None
    dashboard_origin: str = "http://127.0.0.1:8080"
    ingest_rate: float = 50.0
    ingest_burst: int = 200
    view_writes: str = "pages"
    settle_seconds: float = 600.0
    settle_min_age_seconds: float = 30.0
    settle_inline: int = 0
    settle_budget_seconds: float = 20.0
    settle_pause: float = 0.0
    settle_workers: int = 8

    @property
    def control_table(self) -> str:
        return f"{self.table_prefix}control"

    @property
    def is_local(self) -> bool:
        return self.dynamodb_endpoint is not None


_settings: Settings | None = None


def get_settings() -> Settings:
    """Return the process-wide settings (read lazily from the environment)."""
    global _settings
    if _settings is None:
        env = os.environ
        local = bool(env.get("STREAMFOLD_DYNAMODB_ENDPOINT"))
        _settings = Settings(
            dynamodb_endpoint=env.get("STREAMFOLD_DYNAMODB_ENDPOINT") or None,
            table_prefix=env.get("STREAMFOLD_TABLE_PREFIX", "streamfold-"),
            region=env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or "us-east-1",
            data_dir=Path(env.get("STREAMFOLD_DATA_DIR", str(PROJECT_ROOT / ".data"))),
            alerts_topic_arn=env.get("STREAMFOLD_ALERTS_TOPIC_ARN") or None,
            opensearch_url=env.get("OPENSEARCH_URL") or None,
            dashboard_origin=env.get("STREAMFOLD_DASHBOARD_ORIGIN") or DEFAULT_DASHBOARD_ORIGIN,
            ingest_rate=float(env.get("STREAMFOLD_INGEST_RATE") or DEFAULT_INGEST_RATE),
            ingest_burst=int(env.get("STREAMFOLD_INGEST_BURST") or DEFAULT_INGEST_BURST),
            view_writes=env.get("STREAMFOLD_VIEW_WRITES") or "pages",
            settle_seconds=float(env.get("STREAMFOLD_SETTLE_SECONDS") or 600.0),
            settle_min_age_seconds=float(env.get("STREAMFOLD_SETTLE_MIN_AGE_SECONDS") or 30.0),
            settle_inline=int(env.get("STREAMFOLD_SETTLE_INLINE") or 0),
            settle_budget_seconds=float(env.get("STREAMFOLD_SETTLE_BUDGET_SECONDS") or (10.0 if local else 20.0)),
            settle_pause=float(env.get("STREAMFOLD_SETTLE_PAUSE") or (0.5 if local else 0.0)),
            settle_workers=int(env.get("STREAMFOLD_SETTLE_WORKERS") or (4 if local else 8)),
        )
    return _settings


def reset_settings() -> None:
    """Forget cached settings (tests and the CLI change the environment before use)."""
    global _settings
    _settings = None
