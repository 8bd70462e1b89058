"""Wire formats exchanged between an event source mapping and a handler, as ``TypedDict``s.

These are exactly the shapes Lambda uses for DynamoDB Streams, so a handler written against
them runs unchanged on AWS and under the local runtime (:mod:`streams.poller`).
"""

from __future__ import annotations

from typing import Any, Literal, NotRequired, TypedDict

__all__ = [
    "AttributeValue",
    "BatchItemFailure",
    "DynamoDBStreamEvent",
    "DynamoDBStreamRecord",
    "OnFailureRecord",
    "PartialBatchResponse",
    "StreamBatchInfo",
    "StreamRecordPayload",
]

# DynamoDB JSON: {"S": "x"} / {"N": "1"} / {"B": "<base64>"} / {"M": {...}} / {"L": [...]} ...
AttributeValue = dict[str, Any]


class StreamRecordPayload(TypedDict):
    """The ``dynamodb`` member of a stream record (Lambda shape: epoch seconds, base64 binaries)."""

    ApproximateCreationDateTime: float
    Keys: dict[str, AttributeValue]
    NewImage: NotRequired[dict[str, AttributeValue]]
    OldImage: NotRequired[dict[str, AttributeValue]]
    SequenceNumber: str
    SizeBytes: int
    StreamViewType: Literal["NEW_IMAGE", "OLD_IMAGE", "NEW_AND_OLD_IMAGES", "KEYS_ONLY"]


class DynamoDBStreamRecord(TypedDict):
    """One element of ``event["Records"]`` as Lambda delivers it."""

    eventID: str
    eventName: Literal["INSERT", "MODIFY", "REMOVE"]
    eventVersion: str
    eventSource: Literal["aws:dynamodb"]
    awsRegion: str
    dynamodb: StreamRecordPayload
    eventSourceARN: str
    userIdentity: NotRequired[dict[str, str]]


class DynamoDBStreamEvent(TypedDict):
    """The event a stream-triggered handler receives."""

    Records: list[DynamoDBStreamRecord]


class BatchItemFailure(TypedDict):
    """One failed record, identified by its ``SequenceNumber``."""

    itemIdentifier: str


class PartialBatchResponse(TypedDict):
    """What a handler returns when the mapping has ``ReportBatchItemFailures``."""

    batchItemFailures: list[BatchItemFailure]


class StreamBatchInfo(TypedDict):
    """``DDBStreamBatchInfo`` of an AWS on-failure invocation record (a pointer to the batch)."""

    shardId: str
    startSequenceNumber: str
    endSequenceNumber: str
    approximateArrivalOfFirstRecord: str
    approximateArrivalOfLastRecord: str
    batchSize: int
    streamArn: str


class OnFailureRecord(TypedDict):
    """What the on-failure destination receives (AWS shape), plus the records themselves locally."""

    requestContext: dict[str, Any]
    responseContext: dict[str, Any]
    version: str
    timestamp: str
    DDBStreamBatchInfo: StreamBatchInfo
    Records: NotRequired[list[DynamoDBStreamRecord]]
