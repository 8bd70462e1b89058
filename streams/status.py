"""The pipeline's state: every mapping with its shard checkpoints, lag gauges and dead letters.

Shown by ``streamfold status`` and ``GET /api/status``.
"""

from __future__ import annotations

import time
from typing import Any

from chalicelib.db import get_client
from chalicelib.settings import get_settings
from streams.mapping import table_name_of
from streams.store import ControlStore

__all__ = ["mapping_status", "status_report"]


def status_report(store: ControlStore) -> list[dict[str, Any]]:
    """Every mapping with its shard checkpoints, lag gauges and dead-letter count."""
    out = []
    for m in sorted(store.list_mappings(), key=lambda m: m.created):
        shards: list[dict[str, Any]] = [{
            "table": table_name_of(c.stream_arn), "shard": c.shard_id, "checkpoint": c.sequence_number,
            "finished": c.finished, "records_behind": c.records_behind, "more_behind": c.more_behind,
            "iterator_age_ms": c.iterator_age_ms, "updated_s_ago": round(time.time() - c.updated_at, 1),
        } for c in sorted(store.checkpoints(m.uuid), key=lambda c: (c.stream_arn, c.shard_id))]
        out.append({
            "uuid": m.uuid, "function": m.function_name, "state": m.state, "source": m.event_source_arn,
            "runtime": store.lease_holder(m.uuid), "batch_size": m.batch_size,
            "records_behind": sum(s["records_behind"] for s in shards),
            "iterator_age_ms": max((s["iterator_age_ms"] for s in shards), default=0),
            "dead_letters": len(store.dead_letters(m.uuid)), "shards": shards,
        })
    return out


def mapping_status() -> list[dict[str, Any]]:
    """:func:`status_report` of the configured control table."""
    return status_report(ControlStore(get_client(), get_settings().control_table))
