"""The pipeline's state: every mapping with its shard checkpoints, lag gauges and dead letters.

Shown by ``streamfold status`` and ``GET /api/status``.
"""

from __future__ import annotations

import time
from typing import Any

import boto3

from chalicelib.db import get_client
from chalicelib.settings import get_settings
from streams.aws_backend import AwsMappingBackend
from streams.mapping import table_name_of
from streams.store import ControlStore

__all__ = ["aws_status_report", "mapping_status", "status_report", "tenant_status"]


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
            "parallelization_factor": m.parallelization_factor,
            "records_behind": sum(s["records_behind"] for s in shards),
            "iterator_age_ms": max((s["iterator_age_ms"] for s in shards), default=0),
            "dead_letters": len(store.dead_letters(m.uuid)), "shards": shards,
        })
    return out


def aws_status_report(lambda_client: Any, prefix: str) -> list[dict[str, Any]]:
    """The Lambda Event Source Mappings of this prefix's day tables (on AWS).

    Lambda exposes no shard checkpoints or lag per mapping: ``records_behind``,
    ``iterator_age_ms`` and ``dead_letters`` are ``None`` here (the ``IteratorAge`` metric per alias
    and the on-failure queue's depth are in CloudWatch, with alarms); ``last_processing_result``
    is what Lambda reports.
    """
    day_tables = f"{prefix}events-"
    out: list[dict[str, Any]] = []
    for m in AwsMappingBackend(lambda_client).list():
        if ":table/" not in m.event_source_arn or not table_name_of(m.event_source_arn).startswith(day_tables):
            continue
        out.append({
            "uuid": m.uuid, "function": m.function_name, "state": m.state, "source": m.event_source_arn,
            "table": table_name_of(m.event_source_arn), "runtime": "aws-lambda", "batch_size": m.batch_size,
            "parallelization_factor": m.parallelization_factor,
            "batching_window_s": m.maximum_batching_window_in_seconds,
            "maximum_record_age_s": m.maximum_record_age_in_seconds, "maximum_retry_attempts": m.maximum_retry_attempts,
            "bisect": m.bisect_batch_on_function_error, "on_failure": m.on_failure_destination,
            "last_processing_result": m.extra.get("LastProcessingResult"),
            "records_behind": None, "iterator_age_ms": None, "dead_letters": None, "shards": [],
        })
    return sorted(out, key=lambda e: (e["table"], e["uuid"]))


def mapping_status() -> list[dict[str, Any]]:
    """:func:`status_report` of the configured control table; on AWS, :func:`aws_status_report`."""
    settings = get_settings()
    if not settings.is_local:
        return aws_status_report(boto3.session.Session().client("lambda", region_name=settings.region),
                                 settings.table_prefix)
    return status_report(ControlStore(get_client(), settings.control_table))


def _tenant_of(record: Any) -> str | None:
    image = record.get("dynamodb", {}).get("NewImage") or {}
    tenant = image.get("tenant") or {}
    return tenant.get("S") if isinstance(tenant, dict) else None


def tenant_status(tenant_id: str) -> list[dict[str, Any]]:
    """What one tenant may see of the pipeline (``GET /api/status``).

    Mappings are shared infrastructure: their state, lag and iterator age say how fresh *this* tenant's
    view is, and name no one, so they are shown. Dead letters are counted only where they hold this
    tenant's records (``dead_letters`` = its dead-lettered records); other tenants' failures, the
    control table's shard/sequence details and the runtime's lease owner (host, pid) are not shown.
    A dead letter without stored records (a trimmed stream position) names no tenant and is counted
    for the operator (``streamfold status``) only.
    """
    settings = get_settings()
    if not settings.is_local:  # Lambda shows no per-tenant dead letters or lag: state only
        return [{k: e[k] for k in ("uuid", "function", "state", "records_behind", "iterator_age_ms", "dead_letters")}
                for e in mapping_status()]
    store = ControlStore(get_client(), settings.control_table)
    out = []
    for m in sorted(store.list_mappings(), key=lambda m: m.created):
        cps = store.checkpoints(m.uuid)
        mine = sum(1 for d in store.dead_letters(m.uuid) for r in (d.records or []) if _tenant_of(r) == tenant_id)
        out.append({"uuid": m.uuid, "function": m.function_name, "state": m.state,
                    "records_behind": sum(c.records_behind for c in cps),
                    "iterator_age_ms": max((c.iterator_age_ms for c in cps), default=0),
                    "dead_letters": mine})
    return out
