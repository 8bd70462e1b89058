"""Turn what boto3 ``GetRecords`` returns into what Lambda hands a function.

boto3 parses the stream wire format: ``ApproximateCreationDateTime`` becomes a ``datetime`` and
binary attribute values become ``bytes``. Lambda instead passes the JSON through: epoch seconds
(a number) and base64 *strings*. :func:`to_lambda_record` undoes boto3's parsing.
"""

from __future__ import annotations

import base64
from datetime import UTC, datetime
from typing import Any, cast

from streams.wire import AttributeValue, DynamoDBStreamRecord

__all__ = ["encode_attribute", "encode_image", "read_stream", "record_epoch", "sequence_key", "to_lambda_record"]


def encode_attribute(value: AttributeValue) -> AttributeValue:
    """One DynamoDB JSON attribute value with ``bytes`` replaced by base64 strings (recursively)."""
    (tag, inner), = value.items()
    if tag == "B":
        return {"B": _b64(inner)}
    if tag == "BS":
        return {"BS": [_b64(b) for b in inner]}
    if tag == "M":
        return {"M": encode_image(inner)}
    if tag == "L":
        return {"L": [encode_attribute(v) for v in inner]}
    return {tag: inner}


def encode_image(image: dict[str, AttributeValue]) -> dict[str, AttributeValue]:
    """A whole item image (``Keys``, ``NewImage``, ``OldImage``) in Lambda's encoding."""
    return {name: encode_attribute(v) for name, v in image.items()}


def _b64(raw: Any) -> str:
    if isinstance(raw, str):  # already encoded (e.g. a record that went through JSON before)
        return raw
    return base64.b64encode(bytes(raw)).decode("ascii")


def _epoch(value: Any) -> float:
    if isinstance(value, datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return float(value.timestamp())
    return float(value)


def to_lambda_record(raw: dict[str, Any], stream_arn: str) -> DynamoDBStreamRecord:
    """Convert one boto3 ``GetRecords`` record into a Lambda DynamoDB Streams event record.

    Args:
        raw: an element of ``get_records(...)["Records"]``.
        stream_arn: the stream it came from (Lambda adds it as ``eventSourceARN``).
    """
    ddb = raw["dynamodb"]
    payload: dict[str, Any] = {
        "ApproximateCreationDateTime": _epoch(ddb["ApproximateCreationDateTime"]),
        "Keys": encode_image(ddb.get("Keys", {})),
        "SequenceNumber": ddb["SequenceNumber"],
        "SizeBytes": int(ddb.get("SizeBytes", 0)),
        "StreamViewType": ddb.get("StreamViewType", "NEW_IMAGE"),
    }
    for image in ("NewImage", "OldImage"):
        if image in ddb:
            payload[image] = encode_image(ddb[image])
    record: dict[str, Any] = {
        "eventID": raw["eventID"],
        "eventName": raw["eventName"],
        "eventVersion": raw.get("eventVersion", "1.1"),
        "eventSource": raw.get("eventSource", "aws:dynamodb"),
        "awsRegion": raw.get("awsRegion", ""),
        "dynamodb": payload,
        "eventSourceARN": stream_arn,
    }
    if "userIdentity" in raw:
        record["userIdentity"] = dict(raw["userIdentity"])
    return cast(DynamoDBStreamRecord, record)


def sequence_key(sequence_number: str) -> int:
    """Sequence numbers are decimal strings that order numerically, not lexically."""
    return int(sequence_number)


def record_epoch(record: DynamoDBStreamRecord) -> float:
    """``ApproximateCreationDateTime`` of a Lambda-shaped record (epoch seconds)."""
    return float(record["dynamodb"]["ApproximateCreationDateTime"])


def read_stream(client: Any, streams_client: Any, table: str) -> list[dict[str, Any]]:
    """Every record of a table's stream, shard by shard, in Lambda's shape (tests and benchmarks)."""
    arn = client.describe_table(TableName=table)["Table"]["LatestStreamArn"]
    out: list[dict[str, Any]] = []
    for shard in streams_client.describe_stream(StreamArn=arn)["StreamDescription"]["Shards"]:
        it = streams_client.get_shard_iterator(StreamArn=arn, ShardId=shard["ShardId"],
                                               ShardIteratorType="TRIM_HORIZON")["ShardIterator"]
        while it:
            resp = streams_client.get_records(ShardIterator=it, Limit=1000)
            out += [dict(to_lambda_record(r, arn)) for r in resp["Records"]]
            if not resp["Records"]:
                break
            it = resp.get("NextShardIterator")
    return out
