"""Generate the committed CloudFormation templates and Chalice IAM policies.

``python -m cfn.generate`` writes:

- ``cfn/storage.json`` — the storage stack (control table, view table v1, score-alert topic,
  stream on-failure queue). Table properties come from :mod:`chalicelib.tables` through
  :func:`chalicelib.tables.to_cfn_properties`, so the template and the code share one definition.
- ``cfn/compute-extras.json`` — merged into ``chalice package`` output with ``--merge-template``:
  alarms to the team's chat topic, storage-stack imports, and a fix for a Chalice log-group bug.
- ``.chalice/policy-<stage>.json`` — least-privilege execution policy per stage (``autogen_policy``
  is off), scoped by the stage's ``STREAMFOLD_TABLE_PREFIX`` from ``.chalice/config.json``.

``python -m cfn.generate --check`` exits 1 if a committed file differs from what would be written.
Event day tables are *not* here: the rotation function creates them a day ahead.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from chalice.app import Chalice
from chalice.utils import to_cfn_resource_name

import app as app_module
from chalicelib import keys, tables
from chalicelib.paths import INGEST_PATHS, METRICS_PATH, SETTINGS_PATH
from chalicelib.versions import TTL_SECONDS, VIEW_VERSION

__all__ = [
    "PREFIX_PLACEHOLDER",
    "STORAGE_EXPORTS",
    "COLOURS",
    "OUTBOX_DRAIN",
    "REPLAY_FOLD",
    "REPLAY_PLAN",
    "SETTLER",
    "alias_id",
    "app_function_names",
    "cfn_resource_name",
    "chalice_config",
    "compute_extras_template",
    "main",
    "not_found_gateway_response",
    "render",
    "rendered_files",
    "replay_state_machine",
    "stage_policy",
    "storage_template",
]

ROOT = Path(__file__).resolve().parent.parent
CFN_DIR = ROOT / "cfn"
CHALICE_DIR = ROOT / ".chalice"

# Table specs are built with this literal prefix, then every name is wrapped in Fn::Sub, so
# ``keys.*_table_name`` stays the single source of the naming scheme.
PREFIX_PLACEHOLDER = "${TablePrefix}"
ALERTS_TOPIC_SUFFIX = "score-alerts"
STREAM_FAILURES_SUFFIX = "stream-failures"
# The projector as the app names it (``@app.lambda_function(name="projector")``, and
# ``streams.functions`` locally); the rotation function maps new day tables to it.
PROJECTOR = "projector"
ROTATION = "rotate_tables"
# The scheduled function that drains the score-alert outbox to SNS (``app.py``: ``on_outbox_schedule``).
# Its resources are emitted only once the app defines it, so the merged template never dangles.
OUTBOX_DRAIN = "on_outbox_schedule"
# The delta-page settler (``app.py``: ``settle_pages``): one at a time, as two would settle the same buckets.
SETTLER = "settle_pages"
# The replay on AWS (``app.py``: ``replay_plan``, ``replay_fold``; ``streams.replay_task``): the tasks of the state
# machine ``<stack>-replay``, and the bucket their spool lives in (``s3://<bucket>/replay/``).
REPLAY_PLAN = "replay_plan"
REPLAY_FOLD = "replay_fold"
REPLAY_SPOOL_PREFIX = "replay"
REPLAY_SPOOL_DAYS = 14  # a failed run can be redriven for two weeks (a Map Run can be redriven for 14 days)
# Blue/green: every deploy publishes a projector version; the mappings target one of these aliases.
COLOURS = ("blue", "green")
# Rotation lifecycle defaults (environment of the rotation function, overridable per stack).
INFREQUENT_ACCESS_AFTER_DAYS = "7"
RETENTION_DAYS = "400"
# Alarm thresholds.
ITERATOR_AGE_ALARM_MS = 600_000  # 10 minutes behind the stream, for 5 minutes in a row

# Output name -> export suffix; exported as ``<storage stack name>-<suffix>``.
STORAGE_EXPORTS = (
    "TablePrefix",
    "ControlTableName",
    "ControlTableArn",
    "ViewTableName",
    "ViewTableArn",
    "ViewTableVersion",
    "AlertsTopicArn",
    "StreamFailureQueueArn",
    "StreamFailureQueueUrl",
)


def _sub(template: str) -> dict[str, str]:
    return {"Fn::Sub": template}


def _retained_table(spec: dict[str, Any]) -> dict[str, Any]:
    props = tables.to_cfn_properties(spec)
    props["TableName"] = _sub(spec["TableName"])
    props["Tags"] = [{"Key": "streamfold:role", "Value": _role_of(spec["TableName"])}]
    return {
        "Type": "AWS::DynamoDB::Table",
        "DeletionPolicy": "Retain",
        "UpdateReplacePolicy": "Retain",
        "Properties": props,
    }


def _role_of(table_name: str) -> str:
    return table_name.removeprefix(PREFIX_PLACEHOLDER)


def _output(value: Any, description: str, export: str) -> dict[str, Any]:
    return {
        "Description": description,
        "Value": value,
        "Export": {"Name": _sub("${AWS::StackName}-" + export)},
    }


def storage_template() -> dict[str, Any]:
    """The storage stack: everything stateful that outlives any deployment of the code."""
    control = tables.control_table_spec(PREFIX_PLACEHOLDER)
    view = tables.view_table_spec(PREFIX_PLACEHOLDER, VIEW_VERSION)
    outputs = {
        "TablePrefix": _output({"Ref": "TablePrefix"}, "Prefix of every streamfold table name", "TablePrefix"),
        "ControlTableName": _output({"Ref": "ControlTable"}, "Control table name", "ControlTableName"),
        "ControlTableArn": _output({"Fn::GetAtt": ["ControlTable", "Arn"]}, "Control table ARN", "ControlTableArn"),
        "ViewTableName": _output({"Ref": "ViewTable"}, f"View table v{VIEW_VERSION} name", "ViewTableName"),
        "ViewTableArn": _output({"Fn::GetAtt": ["ViewTable", "Arn"]}, f"View table v{VIEW_VERSION} ARN",
                                "ViewTableArn"),
        "ViewTableVersion": _output(str(VIEW_VERSION), "Projection version of the view table", "ViewTableVersion"),
        "AlertsTopicArn": _output({"Ref": "AlertsTopic"}, "SNS topic for score alerts", "AlertsTopicArn"),
        "StreamFailureQueueArn": _output({"Fn::GetAtt": ["StreamFailureQueue", "Arn"]},
                                         "On-failure destination of the stream event source mappings",
                                         "StreamFailureQueueArn"),
        "StreamFailureQueueUrl": _output({"Ref": "StreamFailureQueue"}, "URL of the on-failure queue",
                                         "StreamFailureQueueUrl"),
    }
    return {
        "AWSTemplateFormatVersion": "2010-09-09",
        "Description": "streamfold storage: control and view tables, score-alert topic, stream on-failure queue. "
                       "Generated by `python -m cfn.generate`; do not edit. Event day tables are created "
                       "one day ahead by the rotation function, not here.",
        "Parameters": {
            "TablePrefix": {
                "Type": "String",
                "Default": "streamfold-",
                "AllowedPattern": "^[a-zA-Z0-9_.-]{1,100}$",
                "Description": "Prefix of every table name; must equal the compute stage's "
                               "STREAMFOLD_TABLE_PREFIX (.chalice/config.json).",
            },
        },
        "Resources": {
            "ControlTable": _retained_table(control),
            "ViewTable": {**(view_table := _retained_table(view)), "Properties": {
                **view_table["Properties"],
                # message claims expire (chalicelib.tables.VIEW_TTL_ATTRIBUTE), as ensure_view_table sets locally
                "TimeToLiveSpecification": {"AttributeName": tables.VIEW_TTL_ATTRIBUTE, "Enabled": True}}},
            # Retained like the tables: a replaced topic would silently drop every subscription.
            "AlertsTopic": {
                "Type": "AWS::SNS::Topic",
                "DeletionPolicy": "Retain",
                "UpdateReplacePolicy": "Retain",
                "Properties": {
                    "TopicName": _sub(PREFIX_PLACEHOLDER + ALERTS_TOPIC_SUFFIX),
                    "DisplayName": "streamfold score alerts",
                    "KmsMasterKeyId": "alias/aws/sns",
                },
            },
            # Records that failed after the mapping's retries: metadata only (shard, sequence
            # range), the events themselves stay in the day tables for replay. Kept 14 days.
            "StreamFailureQueue": {
                "Type": "AWS::SQS::Queue",
                "DeletionPolicy": "Retain",
                "UpdateReplacePolicy": "Retain",
                "Properties": {
                    "QueueName": _sub(PREFIX_PLACEHOLDER + STREAM_FAILURES_SUFFIX),
                    "MessageRetentionPeriod": 1209600,
                    "SqsManagedSseEnabled": True,
                },
            },
        },
        "Outputs": outputs,
    }


def chalice_config() -> dict[str, Any]:
    return json.loads((CHALICE_DIR / "config.json").read_text())


def cfn_resource_name(name: str) -> str:
    """Chalice's logical ID for a function name (``rotate_tables`` -> ``RotateTables``)."""

    return str(to_cfn_resource_name(name))


def app_function_names() -> list[str]:
    """Names of the app's Lambda functions besides the API handler, in a stable order."""


    app: Chalice = app_module.app
    names = {f.name for f in app.pure_lambda_functions}
    names.update(source.name for source in app.event_sources)
    return sorted(names)


def not_found_gateway_response() -> dict[str, Any]:
    """API Gateway's answer to a path (or a method on a path) no route serves: a 404 naming the method and the
    path, instead of its SigV4 403 "Missing Authentication Token" (which sends a user checking credentials).

    A gateway response template allows only variable substitution, so it cannot compute the nearest served
    path as the local server does (``chalicelib.paths.not_found``); it lists the public paths instead, and
    echoes the path as API Gateway saw it (``$context.path``, with the stage on an execute-api URL).
    ``Access-Control-Allow-Origin: *``: a browser SDK pointed at a wrong path sees the 404, not a CORS error.
    """
    served = [f"POST {p}" for p in INGEST_PATHS] + [f"POST {METRICS_PATH}", f"GET {SETTINGS_PATH}",
                                                     "GET /api/openapi.json"]
    body = {"success": False, "code": "not_found",
            "message": "no such path: $context.httpMethod $context.path (see `served`; /api/openapi.json "
                       "describes every path)",
            "field": "path", "path": "$context.path", "served": served}
    return {
        "statusCode": "404",
        "responseParameters": {"gatewayresponse.header.Access-Control-Allow-Origin": "'*'"},
        "responseTemplates": {"application/json": json.dumps(body, separators=(",", ":"))},
    }


def _function_ids() -> dict[str, str]:
    """Logical ID of every function chalice will package, mapped to its app-level name."""
    ids = {"APIHandler": "api_handler"}
    for name in app_function_names():
        ids[cfn_resource_name(name)] = name
    return ids


def _errors_alarm(function_id: str) -> dict[str, Any]:
    return {
        "Type": "AWS::CloudWatch::Alarm",
        "Properties": {
            "AlarmDescription": _sub(f"${{AWS::StackName}}: Lambda {function_id} is raising errors"),
            "Namespace": "AWS/Lambda",
            "MetricName": "Errors",
            "Dimensions": [{"Name": "FunctionName", "Value": {"Ref": function_id}}],
            "Statistic": "Sum",
            "Period": 300,
            "EvaluationPeriods": 1,
            "Threshold": 1,
            "ComparisonOperator": "GreaterThanOrEqualToThreshold",
            "TreatMissingData": "notBreaching",
            "AlarmActions": [{"Ref": "AlarmTopicArn"}],
            "OKActions": [{"Ref": "AlarmTopicArn"}],
        },
    }


def _import(export: str) -> dict[str, Any]:
    return {"Fn::ImportValue": _sub("${StorageStackName}-" + export)}


def alias_id(colour: str) -> str:
    """Logical id of the projector alias of one colour (``ProjectorBlueAlias``)."""
    return f"{cfn_resource_name(PROJECTOR)}{colour.capitalize()}Alias"


def _alarm(description: str, namespace: str, metric: str, dimensions: list[dict[str, Any]], *, statistic: str,
           period: int, evaluation_periods: int, threshold: float) -> dict[str, Any]:
    return {
        "Type": "AWS::CloudWatch::Alarm",
        "Properties": {
            "AlarmDescription": _sub("${AWS::StackName}: " + description),
            "Namespace": namespace,
            "MetricName": metric,
            "Dimensions": dimensions,
            "Statistic": statistic,
            "Period": period,
            "EvaluationPeriods": evaluation_periods,
            "DatapointsToAlarm": evaluation_periods,
            "Threshold": threshold,
            "ComparisonOperator": "GreaterThanOrEqualToThreshold",
            "TreatMissingData": "notBreaching",
            "AlarmActions": [{"Ref": "AlarmTopicArn"}],
            "OKActions": [{"Ref": "AlarmTopicArn"}],
        },
    }


def _table_prefix_sub(template: str) -> dict[str, Any]:
    """``Fn::Sub`` with ``${Prefix}`` = the storage stack's exported table prefix."""
    return {"Fn::Sub": [template, {"Prefix": _import("TablePrefix")}]}


def _projector_resources(projector_id: str) -> dict[str, Any]:
    """A version per release and the two aliases the day tables' mappings target.

    ``ProjectorRelease`` (deploy passes the SHA-256 of the zip) is the version's description, so a
    new release replaces the ``AWS::Lambda::Version`` resource = publishes a new version; the old
    version is retained (an alias may still point at it). The alias named by ``TargetColour`` gets
    the new version; the other keeps ``BlueVersion``/``GreenVersion`` (empty on the first deploy:
    then both get it). Mappings are never in this stack: see ``tooling/guard.py``.
    """
    version_id = f"{projector_id}Version"
    resources: dict[str, Any] = {
        version_id: {
            "Type": "AWS::Lambda::Version",
            "DeletionPolicy": "Retain",
            "UpdateReplacePolicy": "Retain",
            "Properties": {
                "FunctionName": {"Ref": projector_id},
                "Description": _sub("streamfold projector release ${ProjectorRelease}"),
            },
        },
    }
    new_version = {"Fn::GetAtt": [version_id, "Version"]}
    for colour in COLOURS:
        pinned = {"Ref": f"{colour.capitalize()}Version"}
        resources[alias_id(colour)] = {
            "Type": "AWS::Lambda::Alias",
            "Properties": {
                "FunctionName": {"Ref": projector_id},
                "Name": colour,
                "Description": f"streamfold projector, {colour} side of blue/green (mappings target an alias)",
                "FunctionVersion": {"Fn::If": [
                    f"NewVersionTo{colour.capitalize()}", new_version,
                    {"Fn::If": [f"{colour.capitalize()}VersionPinned", pinned, new_version]},
                ]},
            },
        }
        # IteratorAge per alias = per mapping target; Maximum = the mapping furthest behind.
        resources[f"{alias_id(colour)}IteratorAgeAlarm"] = _alarm(
            f"projector:{colour} mappings are more than {ITERATOR_AGE_ALARM_MS // 60000} minutes behind their stream",
            "AWS/Lambda", "IteratorAge",
            [{"Name": "FunctionName", "Value": {"Ref": projector_id}},
             {"Name": "Resource", "Value": _sub(f"${{{projector_id}}}:{colour}")}],
            statistic="Maximum", period=60, evaluation_periods=5, threshold=ITERATOR_AGE_ALARM_MS)
    resources[f"{projector_id}ThrottlesAlarm"] = _alarm(
        f"Lambda {projector_id} is throttled (mappings fall behind)", "AWS/Lambda", "Throttles",
        [{"Name": "FunctionName", "Value": {"Ref": projector_id}}],
        statistic="Sum", period=300, evaluation_periods=1, threshold=1)
    return resources


def _rotation_role(projector_id: str | None) -> dict[str, Any]:
    """Least privilege for the rotation function: create, tier, export and delete *day tables only*."""
    partition_region_account = "arn:${AWS::Partition}:dynamodb:${AWS::Region}:${AWS::AccountId}"
    day_tables = _table_prefix_sub(partition_region_account + ":table/${Prefix}" + keys.EVENTS_INFIX + "*")
    statements: list[dict[str, Any]] = [
        {
            "Sid": "Logs",
            "Effect": "Allow",
            "Action": ["logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents"],
            "Resource": _sub("arn:${AWS::Partition}:logs:${AWS::Region}:${AWS::AccountId}:*"),
        },
        {
            "Sid": "ListTables",
            "Effect": "Allow",
            "Action": ["dynamodb:ListTables"],
            "Resource": "*",
        },
        {
            "Sid": "DayTableLifecycle",
            "Effect": "Allow",
            "Action": [
                "dynamodb:CreateTable", "dynamodb:DescribeTable", "dynamodb:TagResource",
                "dynamodb:DescribeContinuousBackups", "dynamodb:UpdateContinuousBackups",
                # TableClass -> STANDARD_INFREQUENT_ACCESS after INFREQUENT_ACCESS_AFTER_DAYS
                "dynamodb:UpdateTable",
                # past retention: export (when a bucket is configured), then delete
                "dynamodb:ExportTableToPointInTime", "dynamodb:DeleteTable",
            ],
            "Resource": day_tables,
        },
        {
            "Sid": "DayTableExports",
            "Effect": "Allow",
            "Action": ["dynamodb:DescribeExport"],
            "Resource": _table_prefix_sub(partition_region_account + ":table/${Prefix}"
                                          + keys.EVENTS_INFIX + "*/export/*"),
        },
        {
            "Sid": "DayTableStreams",
            "Effect": "Allow",
            "Action": ["dynamodb:DescribeStream"],
            "Resource": _table_prefix_sub(partition_region_account + ":table/${Prefix}"
                                          + keys.EVENTS_INFIX + "*/stream/*"),
        },
        {
            "Sid": "ReadEventSourceMappings",
            "Effect": "Allow",
            "Action": ["lambda:ListEventSourceMappings", "lambda:GetEventSourceMapping"],
            "Resource": "*",
        },
    ]
    if projector_id is not None:
        statements.append({
            # Day tables are mapped to the projector (an alias of it) and nothing else.
            "Sid": "MapDayTablesToProjector",
            "Effect": "Allow",
            "Action": ["lambda:CreateEventSourceMapping", "lambda:DeleteEventSourceMapping"],
            "Resource": "*",
            "Condition": {"ArnLike": {"lambda:FunctionArn": _sub(
                "arn:${AWS::Partition}:lambda:${AWS::Region}:${AWS::AccountId}:function:${" + projector_id + "}*")}},
        })
    export_statement = {
        "Sid": "WriteExports",
        "Effect": "Allow",
        "Action": ["s3:PutObject", "s3:AbortMultipartUpload", "s3:PutObjectAcl"],
        "Resource": _table_prefix_sub("arn:${AWS::Partition}:s3:::${ExportBucketName}/${Prefix}*"),
    }
    statements.append({"Fn::If": ["HasExportBucket", export_statement, {"Ref": "AWS::NoValue"}]})
    return {
        "Type": "AWS::IAM::Role",
        "Properties": {
            "Description": "streamfold rotation: day tables only (create, Standard-IA, export, delete)",
            "AssumeRolePolicyDocument": {
                "Version": "2012-10-17",
                "Statement": [{"Effect": "Allow", "Principal": {"Service": "lambda.amazonaws.com"},
                               "Action": "sts:AssumeRole"}],
            },
            "Policies": [{"PolicyName": "rotate-day-tables",
                          "PolicyDocument": {"Version": "2012-10-17", "Statement": statements}}],
        },
    }


# --- the replay on AWS ----------------------------------------------------------------------------------------

# Lambda's transient errors (throttling above the account's concurrency, service faults): retried with backoff.
LAMBDA_TRANSIENT = ["Lambda.TooManyRequestsException", "Lambda.ServiceException", "Lambda.AWSLambdaException",
                    "Lambda.SdkClientException", "Lambda.ClientExecutionTimeoutException"]


def _lambda_task(function: str, payload: dict[str, Any] | None = None, **fields: Any) -> dict[str, Any]:
    """A ``lambda:invoke`` task (``payload`` None: the state's input, as a map's child gets its batch); every replay
    task may run again (done markers, rings), so a failed one is retried."""
    params: dict[str, Any] = {"FunctionName": "${" + function + "}"}
    params.update({"Payload": payload} if payload is not None else {"Payload.$": "$"})
    return {
        "Type": "Task",
        "Resource": "arn:aws:states:::lambda:invoke",
        "Parameters": params,
        "Retry": [
            {"ErrorEquals": LAMBDA_TRANSIENT, "IntervalSeconds": 2, "MaxAttempts": 8, "BackoffRate": 2,
             "MaxDelaySeconds": 60, "JitterStrategy": "FULL"},
            {"ErrorEquals": ["States.TaskFailed"], "IntervalSeconds": 30, "MaxAttempts": 2, "BackoffRate": 2,
             "JitterStrategy": "FULL"},
        ],
        **fields,
    }


def _distributed_map(label: str, key_path: str, batcher: dict[str, Any], task: dict[str, Any],
                     next_state: str, concurrency: str = "$.max_concurrency") -> dict[str, Any]:
    """A Distributed Map over a JSON array in the spool (``ItemReader``), batched (``ItemBatcher``: each child
    gets ``{"Items": [...], "BatchInput": {...}}``), failing on any failed item (a redrive re-runs only those),
    its results written to the spool (a map's output would pass the 256 KB state limit)."""
    return {
        "Type": "Map",
        "Label": label,
        "ItemReader": {
            "Resource": "arn:aws:states:::s3:getObject",
            "ReaderConfig": {"InputType": "JSON"},
            "Parameters": {"Bucket.$": "$.bucket", "Key.$": key_path},
        },
        "ItemBatcher": batcher,
        "MaxConcurrencyPath": concurrency,
        "ToleratedFailurePercentage": 0,
        "ItemProcessor": {
            "ProcessorConfig": {"Mode": "DISTRIBUTED", "ExecutionType": "STANDARD"},
            "StartAt": label,
            "States": {label: {**task, "End": True}},
        },
        "ResultWriter": {
            "Resource": "arn:aws:states:::s3:putObject",
            "Parameters": {"Bucket.$": "$.bucket", "Prefix.$": "$.results_prefix"},
        },
        "ResultPath": None,
        "Next": next_state,
    }


def replay_state_machine() -> dict[str, Any]:
    """The replay's state machine (Amazon States Language, JSONPath): ``${ReplayPlanArn}`` and ``${ReplayFoldArn}``
    are ``DefinitionSubstitutions``. The steps are :mod:`streams.replay_task`'s."""
    one_segment = {"MaxItemsPerBatch": 1}
    return {
        "Comment": "streamfold replay: rebuild a view version from the day tables (streams/replay_task.py)",
        "StartAt": "Prepare",
        "States": {
            "Prepare": _lambda_task("ReplayPlanArn", {"step": "prepare", "input.$": "$", "run.$": "$$.Execution.Name"},
                                    OutputPath="$.Payload", Next="WaitForProjectors"),
            # Prepare put the version in phase `replaying`: every live projector records the positions it
            # handles for the catch-up once it has re-read the live versions (streams.catchup.RECORDING_DELAY).
            "WaitForProjectors": {"Type": "Wait", "Seconds": int(TTL_SECONDS) + 2, "Next": "ScanIds"},
            "ScanIds": _distributed_map(
                "ScanIds", "$.segments_key", {**one_segment, "BatchInput": {"step": "ids", "job.$": "$.job"}},
                _lambda_task("ReplayPlanArn"), "Assign",
                "$.scan_concurrency"),
            "Assign": _lambda_task("ReplayPlanArn", {"step": "assign", "job.$": "$.job"},
                                   ResultSelector={"partitions.$": "$.Payload.partitions",
                                                   "events.$": "$.Payload.events"},
                                   ResultPath="$.assigned", Next="SpoolSegments"),
            "SpoolSegments": _distributed_map(
                "SpoolSegments", "$.segments_key",
                {**one_segment, "BatchInput": {"step": "spool", "job.$": "$.job"}},
                _lambda_task("ReplayPlanArn"), "Fold",
                "$.scan_concurrency"),
            "Fold": _distributed_map(
                "Fold", "$.manifest_key", {"MaxItemsPerBatchPath": "$.fold_batch", "BatchInput": {"job.$": "$.job"}},
                _lambda_task("ReplayFoldArn"), "Finish"),
            "Finish": _lambda_task("ReplayPlanArn", {"step": "finish", "job.$": "$.job"}, OutputPath="$.Payload",
                                   End=True),
        },
    }


def _replay_role(description: str, name: str, statements: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "Type": "AWS::IAM::Role",
        "Properties": {
            "Description": description,
            "AssumeRolePolicyDocument": {
                "Version": "2012-10-17",
                "Statement": [{"Effect": "Allow", "Principal": {"Service": "lambda.amazonaws.com"},
                               "Action": "sts:AssumeRole"}],
            },
            "Policies": [{"PolicyName": name, "PolicyDocument": {"Version": "2012-10-17", "Statement": statements}}],
        },
    }


def _replay_resources(plan_id: str, fold_id: str) -> dict[str, Any]:
    """The spool bucket, the tasks' roles (least privilege), the state machine and its role."""
    region_account = "arn:${AWS::Partition}:dynamodb:${AWS::Region}:${AWS::AccountId}:table/${Prefix}"
    view_tables = _table_prefix_sub(region_account + "view-v*")
    view_indexes = _table_prefix_sub(region_account + "view-v*/index/*")
    control = _table_prefix_sub(region_account + "control")
    spool_objects = _sub("arn:${AWS::Partition}:s3:::${ReplaySpoolBucket}/" + REPLAY_SPOOL_PREFIX + "/*")
    bucket = _sub("arn:${AWS::Partition}:s3:::${ReplaySpoolBucket}")
    logs = {"Sid": "Logs", "Effect": "Allow",
            "Action": ["logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents"],
            "Resource": _sub("arn:${AWS::Partition}:logs:${AWS::Region}:${AWS::AccountId}:*")}
    spool = [
        {"Sid": "SpoolObjects", "Effect": "Allow", "Action": ["s3:GetObject", "s3:PutObject"],
         "Resource": spool_objects},
        {"Sid": "ListSpool", "Effect": "Allow", "Action": ["s3:ListBucket"], "Resource": bucket,
         "Condition": {"StringLike": {"s3:prefix": [REPLAY_SPOOL_PREFIX + "/*"]}}},
    ]
    plan_role = _replay_role("streamfold replay plan: scan the day tables, spool to S3, create the view table",
                             "replay-plan", [
        logs, *spool,
        {"Sid": "ListTables", "Effect": "Allow", "Action": ["dynamodb:ListTables"], "Resource": "*"},
        {"Sid": "ScanDayTables", "Effect": "Allow", "Action": ["dynamodb:Scan", "dynamodb:DescribeTable"],
         "Resource": _table_prefix_sub(region_account + keys.EVENTS_INFIX + "*")},
        {"Sid": "CreateViewTable", "Effect": "Allow",
         "Action": ["dynamodb:CreateTable", "dynamodb:DescribeTable", "dynamodb:TagResource", "dynamodb:Scan",
                    "dynamodb:DescribeTimeToLive", "dynamodb:UpdateTimeToLive"],
         "Resource": view_tables},
        {"Sid": "ProjectionRegistry", "Effect": "Allow",
         "Action": ["dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:Query",
                    "dynamodb:DescribeTable"],
         "Resource": control},
    ])
    fold_role = _replay_role("streamfold replay fold: read the spool, write the view version", "replay-fold", [
        logs, *spool,
        {"Sid": "WriteView", "Effect": "Allow",
         "Action": ["dynamodb:GetItem", "dynamodb:BatchGetItem", "dynamodb:Query", "dynamodb:Scan",
                    "dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:BatchWriteItem", "dynamodb:DescribeTable"],
         "Resource": [view_tables, view_indexes]},
        {"Sid": "ReadScoreModels", "Effect": "Allow",
         "Action": ["dynamodb:GetItem", "dynamodb:BatchGetItem", "dynamodb:Query"], "Resource": control},
    ])
    machine_name = "${AWS::StackName}-replay"
    states = "arn:${AWS::Partition}:states:${AWS::Region}:${AWS::AccountId}:"
    functions = [{"Fn::GetAtt": [plan_id, "Arn"]}, {"Fn::GetAtt": [fold_id, "Arn"]},
                 _sub("${" + plan_id + ".Arn}:*"), _sub("${" + fold_id + ".Arn}:*")]
    machine_role = {
        "Type": "AWS::IAM::Role",
        "Properties": {
            "Description": "streamfold replay state machine: invoke the replay tasks, read and write the spool, "
                           "run its Distributed Maps",
            "AssumeRolePolicyDocument": {
                "Version": "2012-10-17",
                "Statement": [{"Effect": "Allow", "Principal": {"Service": "states.amazonaws.com"},
                               "Action": "sts:AssumeRole"}],
            },
            "Policies": [{"PolicyName": "replay-state-machine", "PolicyDocument": {
                "Version": "2012-10-17", "Statement": [
                {"Sid": "InvokeReplayTasks", "Effect": "Allow", "Action": ["lambda:InvokeFunction"],
                 "Resource": functions},
                # ItemReader reads segments.json and manifest.json; ResultWriter writes results/.
                {"Sid": "SpoolItemsAndResults", "Effect": "Allow",
                 "Action": ["s3:GetObject", "s3:PutObject", "s3:ListMultipartUploadParts", "s3:AbortMultipartUpload"],
                 "Resource": spool_objects},
                # A Distributed Map runs its children as executions of this state machine.
                {"Sid": "DistributedMapChildren", "Effect": "Allow", "Action": ["states:StartExecution"],
                 "Resource": _sub(states + "stateMachine:" + machine_name)},
                {"Sid": "DistributedMapRuns", "Effect": "Allow",
                 "Action": ["states:DescribeExecution", "states:StopExecution", "states:RedriveExecution"],
                 "Resource": [_sub(states + "execution:" + machine_name + ":*"),
                              _sub(states + "execution:" + machine_name + "/*")]},
                {"Sid": "DistributedMapRunRedrive", "Effect": "Allow", "Action": ["states:RedriveExecution"],
                 "Resource": _sub(states + "mapRun:" + machine_name + "/*")},
            ]}}],
        },
    }
    return {
        # The spool: transient (a run's plan, partitions, done markers and results), expired after the redrive window.
        "ReplaySpoolBucket": {
            "Type": "AWS::S3::Bucket",
            "DeletionPolicy": "Retain",
            "UpdateReplacePolicy": "Retain",
            "Properties": {
                "BucketEncryption": {"ServerSideEncryptionConfiguration": [
                    {"ServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}]},
                "PublicAccessBlockConfiguration": {"BlockPublicAcls": True, "BlockPublicPolicy": True,
                                                   "IgnorePublicAcls": True, "RestrictPublicBuckets": True},
                "OwnershipControls": {"Rules": [{"ObjectOwnership": "BucketOwnerEnforced"}]},
                "LifecycleConfiguration": {"Rules": [{
                    "Id": "expire-replay-spool",
                    "Status": "Enabled",
                    "Prefix": REPLAY_SPOOL_PREFIX + "/",
                    "ExpirationInDays": REPLAY_SPOOL_DAYS,
                    "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": 1},
                }]},
            },
        },
        "ReplayPlanRole": plan_role,
        "ReplayFoldRole": fold_role,
        "ReplayStateMachineRole": machine_role,
        "ReplayStateMachine": {
            "Type": "AWS::StepFunctions::StateMachine",
            "Properties": {
                "StateMachineName": _sub(machine_name),
                "StateMachineType": "STANDARD",
                "RoleArn": {"Fn::GetAtt": ["ReplayStateMachineRole", "Arn"]},
                "Definition": replay_state_machine(),
                "DefinitionSubstitutions": {"ReplayPlanArn": {"Fn::GetAtt": [plan_id, "Arn"]},
                                            "ReplayFoldArn": {"Fn::GetAtt": [fold_id, "Arn"]}},
            },
        },
        "ReplayStateMachineFailedAlarm": _alarm(
            "a replay execution failed (redrive it: aws stepfunctions redrive-execution)", "AWS/States",
            "ExecutionsFailed", [{"Name": "StateMachineArn", "Value": {"Ref": "ReplayStateMachine"}}],
            statistic="Sum", period=300, evaluation_periods=1, threshold=1),
    }


def compute_extras_template() -> dict[str, Any]:
    """Template merged into ``chalice package`` output (``--merge-template``)."""
    config = chalice_config()
    api_stage = config.get("api_gateway_stage", "api")
    function_ids = _function_ids()
    projector_id = cfn_resource_name(PROJECTOR) if PROJECTOR in function_ids.values() else None
    resources: dict[str, Any] = {
        # Name the REST API after the stack (the OpenAPI title is the API name on import), so the
        # ApiName metric dimension is unique per stage instead of "streamfold" for every stage.
        # An unknown path answers 404 JSON naming it, not the SigV4 403 (part of the API definition, so it is
        # deployed with the stage, unlike a separate AWS::ApiGateway::GatewayResponse resource).
        "RestAPI": {"Properties": {"DefinitionBody": {
            "info": {"title": _sub("${AWS::StackName}")},
            "x-amazon-apigateway-gateway-responses": {"MISSING_AUTHENTICATION_TOKEN": not_found_gateway_response()},
        }}},
        "Api5xxAlarm": {
            "Type": "AWS::CloudWatch::Alarm",
            "Properties": {
                "AlarmDescription": _sub("${AWS::StackName}: API Gateway is returning 5XX errors"),
                "Namespace": "AWS/ApiGateway",
                "MetricName": "5XXError",
                "Dimensions": [
                    {"Name": "ApiName", "Value": _sub("${AWS::StackName}")},
                    {"Name": "Stage", "Value": api_stage},
                ],
                "Statistic": "Sum",
                "Period": 300,
                "EvaluationPeriods": 1,
                "Threshold": 5,
                "ComparisonOperator": "GreaterThanOrEqualToThreshold",
                "TreatMissingData": "notBreaching",
                "AlarmActions": [{"Ref": "AlarmTopicArn"}],
                "OKActions": [{"Ref": "AlarmTopicArn"}],
            },
        },
        # Records the mappings gave up on (after retries / MaximumRecordAgeInSeconds): any is news.
        "StreamFailureQueueDepthAlarm": _alarm(
            "records failed projection and are in the stream on-failure queue", "AWS/SQS",
            "ApproximateNumberOfMessagesVisible",
            [{"Name": "QueueName", "Value": _table_prefix_sub("${Prefix}" + STREAM_FAILURES_SUFFIX)}],
            statistic="Maximum", period=300, evaluation_periods=1, threshold=1),
    }
    env_from_storage = {
        "STREAMFOLD_ALERTS_TOPIC_ARN": _import("AlertsTopicArn"),
        "STREAMFOLD_DLQ_ARN": _import("StreamFailureQueueArn"),
    }
    for function_id, name in function_ids.items():
        resources[f"{function_id}ErrorsAlarm"] = _errors_alarm(function_id)
        env = dict(env_from_storage)
        props: dict[str, Any] = {"Environment": {"Variables": env}}
        if name == ROTATION:
            if projector_id is not None:
                # New day tables are mapped to the live alias (``LiveColour``), never the bare function.
                env["STREAMFOLD_PROJECTOR_FUNCTION"] = {"Fn::If": [
                    "LiveIsBlue", {"Ref": alias_id("blue")}, {"Ref": alias_id("green")}]}
            env["STREAMFOLD_IA_AFTER_DAYS"] = {"Ref": "InfrequentAccessAfterDays"}
            env["STREAMFOLD_RETENTION_DAYS"] = {"Ref": "RetentionDays"}
            env["STREAMFOLD_EXPORT_BUCKET"] = {"Ref": "ExportBucketName"}
            props["Role"] = {"Fn::GetAtt": ["RotateTablesRole", "Arn"]}
            resources["RotateTablesRole"] = _rotation_role(projector_id)
        if name in (REPLAY_PLAN, REPLAY_FOLD):
            env["STREAMFOLD_REPLAY_SPOOL"] = _sub("s3://${ReplaySpoolBucket}/" + REPLAY_SPOOL_PREFIX)
            props["Role"] = {"Fn::GetAtt": [f"{cfn_resource_name(name)}Role", "Arn"]}  # ReplayPlanRole, ReplayFoldRole
            # The whole of Lambda's 15 minutes; the plan steps hold a segment's spool (≈ 750 MB) or the merged plan
            # in memory, the fold one partition at a time (≈ 480 MB RSS at 25,000 events) and its batch in /tmp.
            props["Timeout"] = 900
            props["MemorySize"] = 3008 if name == REPLAY_PLAN else 2048
            props["EphemeralStorage"] = {"Size": 1024}
        if name in (OUTBOX_DRAIN, SETTLER):
            # One at a time: a second concurrent drain would only race for the same alerts, a second settler
            # for the same pages (harmless: rings and conditions, but every write done twice).
            props["ReservedConcurrentExecutions"] = 1
        resources[function_id] = {"Properties": props}
    if projector_id is not None:
        resources.update(_projector_resources(projector_id))
    replay_ids = [cfn_resource_name(n) for n in (REPLAY_PLAN, REPLAY_FOLD) if n in function_ids.values()]
    if len(replay_ids) == 2:
        resources.update(_replay_resources(*replay_ids))
    if config.get("log_retention_in_days") or any(
        stage.get("log_retention_in_days") for stage in config.get("stages", {}).values()
    ):
        # chalice 1.34 renames the API function to APIHandler but its log group still says
        # ${ApiHandler} (aws/chalice#2079); point it at the real resource.
        resources["ApiHandlerLogGroup"] = {
            "Properties": {"LogGroupName": _sub("/aws/lambda/${APIHandler}")},
        }
    outputs: dict[str, Any] = {}
    if projector_id is not None:
        outputs = {
            "ProjectorFunctionName": {"Description": "Projector function (mappings target its aliases)",
                                      "Value": {"Ref": projector_id}},
            "ProjectorVersion": {"Description": "Version published by this deploy",
                                 "Value": {"Fn::GetAtt": [f"{projector_id}Version", "Version"]}},
            "LiveColour": {"Description": "Alias new day tables are mapped to", "Value": {"Ref": "LiveColour"}},
        }
        for colour in COLOURS:
            outputs[f"Projector{colour.capitalize()}AliasArn"] = {
                "Description": f"ARN of the {colour} alias", "Value": {"Ref": alias_id(colour)}}
    if len(replay_ids) == 2:
        outputs["ReplayStateMachineArn"] = {"Description": "Replay a view version: aws stepfunctions start-execution "
                                                           "--state-machine-arn ARN --input '{\"version\": N}'",
                                            "Value": {"Ref": "ReplayStateMachine"}}
        outputs["ReplaySpoolBucketName"] = {"Description": "Spool of replay runs (expires after "
                                                           f"{REPLAY_SPOOL_DAYS} days)",
                                            "Value": {"Ref": "ReplaySpoolBucket"}}
    colour_param = {"Type": "String", "AllowedValues": list(COLOURS), "Default": COLOURS[0]}
    return {
        "Description": "streamfold compute (Chalice). Extras generated by `python -m cfn.generate`; do not edit.",
        "Parameters": {
            "AlarmTopicArn": {
                "Type": "String",
                "Description": "SNS topic wired to the team's chat (e.g. AWS Chatbot) for alarms",
            },
            "StorageStackName": {
                "Type": "String",
                "Default": "streamfold-storage",
                "Description": "Name of the deployed cfn/storage.json stack whose exports this stack imports",
            },
            "ProjectorRelease": {
                "Type": "String",
                "Default": "initial",
                "Description": "Identifies the projector code (deploy passes the zip's SHA-256); "
                               "a new value publishes a new version",
            },
            "TargetColour": dict(colour_param, Description="Alias that gets the version this deploy publishes"),
            "LiveColour": dict(colour_param, Description="Alias the day tables' mappings target "
                                                         "(rotation maps new tables to it)"),
            "BlueVersion": {"Type": "String", "Default": "",
                            "Description": "Version blue keeps when it is not the target ('' = the new one)"},
            "GreenVersion": {"Type": "String", "Default": "",
                             "Description": "Version green keeps when it is not the target ('' = the new one)"},
            "InfrequentAccessAfterDays": {"Type": "String", "Default": INFREQUENT_ACCESS_AFTER_DAYS,
                                          "AllowedPattern": "^[0-9]+$",
                                          "Description": "Day tables older than this move to "
                                                         "STANDARD_INFREQUENT_ACCESS"},
            "RetentionDays": {"Type": "String", "Default": RETENTION_DAYS, "AllowedPattern": "^[0-9]+$",
                              "Description": "Day tables older than this are exported (if a bucket is set) "
                                             "and deleted; 0 keeps them forever"},
            "ExportBucketName": {"Type": "String", "Default": "",
                                 "Description": "S3 bucket for day-table exports before deletion ('' = none)"},
        },
        "Conditions": {
            "NewVersionToBlue": {"Fn::Equals": [{"Ref": "TargetColour"}, "blue"]},
            "NewVersionToGreen": {"Fn::Equals": [{"Ref": "TargetColour"}, "green"]},
            "BlueVersionPinned": {"Fn::Not": [{"Fn::Equals": [{"Ref": "BlueVersion"}, ""]}]},
            "GreenVersionPinned": {"Fn::Not": [{"Fn::Equals": [{"Ref": "GreenVersion"}, ""]}]},
            "LiveIsBlue": {"Fn::Equals": [{"Ref": "LiveColour"}, "blue"]},
            "HasExportBucket": {"Fn::Not": [{"Fn::Equals": [{"Ref": "ExportBucketName"}, ""]}]},
        },
        "Resources": resources,
        "Outputs": outputs,
    }


def _stage_prefix(config: dict[str, Any], stage: str) -> str:
    env = dict(config.get("environment_variables", {}))
    env.update(config["stages"][stage].get("environment_variables", {}))
    return str(env["STREAMFOLD_TABLE_PREFIX"])


def stage_policy(config: dict[str, Any], stage: str) -> dict[str, Any]:
    """Execution policy of every function of a stage, scoped to that stage's table prefix.

    Functions are named ``<stack>-<LogicalId>-<suffix>`` by CloudFormation, so the compute
    stack must be named ``<app_name>-<stage>`` for the event-source-mapping condition to match.
    """
    prefix = _stage_prefix(config, stage)
    app_name = config["app_name"]
    table = "arn:aws:dynamodb:*:*:table/"
    data_tables = [
        table + keys.control_table_name(prefix),
        table + keys.view_table_name(prefix, _WILDCARD),  # type: ignore[arg-type]
        table + keys.events_table_name(prefix, _WILDCARD),  # type: ignore[arg-type]
    ]
    event_tables = data_tables[2]
    functions = f"arn:aws:lambda:*:*:function:{app_name}-{stage}-*"
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "Logs",
                "Effect": "Allow",
                "Action": ["logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents"],
                "Resource": "arn:aws:logs:*:*:*",
            },
            {
                "Sid": "TableData",
                "Effect": "Allow",
                "Action": [
                    "dynamodb:GetItem", "dynamodb:BatchGetItem", "dynamodb:Query", "dynamodb:PutItem",
                    "dynamodb:UpdateItem", "dynamodb:DeleteItem", "dynamodb:BatchWriteItem",
                    "dynamodb:ConditionCheckItem", "dynamodb:DescribeTable",
                ],
                "Resource": data_tables + [t + "/index/*" for t in data_tables],
            },
            {
                "Sid": "RotateEventTables",
                "Effect": "Allow",
                "Action": [
                    "dynamodb:CreateTable", "dynamodb:DescribeContinuousBackups", "dynamodb:UpdateContinuousBackups",
                ],
                "Resource": event_tables,
            },
            {
                "Sid": "ListTables",
                "Effect": "Allow",
                "Action": ["dynamodb:ListTables", "dynamodb:ListStreams"],
                "Resource": "*",
            },
            {
                "Sid": "ReadEventStreams",
                "Effect": "Allow",
                "Action": ["dynamodb:DescribeStream", "dynamodb:GetRecords", "dynamodb:GetShardIterator"],
                "Resource": event_tables + "/stream/*",
            },
            {
                "Sid": "PublishScoreAlerts",
                "Effect": "Allow",
                "Action": "sns:Publish",
                "Resource": f"arn:aws:sns:*:*:{prefix}{ALERTS_TOPIC_SUFFIX}",
            },
            {
                "Sid": "StreamFailureDestination",
                "Effect": "Allow",
                "Action": ["sqs:SendMessage", "sqs:GetQueueAttributes"],
                "Resource": f"arn:aws:sqs:*:*:{prefix}{STREAM_FAILURES_SUFFIX}",
            },
            {
                # List/Get take no resource-level permissions; the writes are conditioned on the
                # target being one of this stage's functions.
                "Sid": "ReadEventSourceMappings",
                "Effect": "Allow",
                "Action": ["lambda:ListEventSourceMappings", "lambda:GetEventSourceMapping"],
                "Resource": "*",
            },
            {
                "Sid": "ManageEventSourceMappings",
                "Effect": "Allow",
                "Action": [
                    "lambda:CreateEventSourceMapping", "lambda:UpdateEventSourceMapping",
                    "lambda:DeleteEventSourceMapping",
                ],
                "Resource": "*",
                "Condition": {"ArnLike": {"lambda:FunctionArn": functions}},
            },
        ],
    }


class _Wildcard:
    """Stands in for a day or a version so ``keys`` yields ARN patterns (``events-*``, ``view-v*``)."""

    def strftime(self, _fmt: str) -> str:
        return "*"

    def __format__(self, _spec: str) -> str:
        return "*"


_WILDCARD = _Wildcard()


def rendered_files() -> dict[Path, dict[str, Any]]:
    """Every generated file and its content."""
    config = chalice_config()
    files: dict[Path, dict[str, Any]] = {
        CFN_DIR / "storage.json": storage_template(),
        CFN_DIR / "compute-extras.json": compute_extras_template(),
    }
    for stage, stage_config in config["stages"].items():
        policy_file = stage_config.get("iam_policy_file", config.get("iam_policy_file", f"policy-{stage}.json"))
        files[CHALICE_DIR / policy_file] = stage_policy(config, stage)
    return files


def render(content: dict[str, Any]) -> str:
    return json.dumps(content, indent=2, sort_keys=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cfn.generate", description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="fail if a committed file is out of date")
    args = parser.parse_args(argv)
    stale = []
    for path, content in rendered_files().items():
        text = render(content)
        current = path.read_text() if path.exists() else None
        if current == text:
            continue
        stale.append(path)
        if not args.check:
            path.write_text(text)
            print(f"wrote {path.relative_to(ROOT)}")
    if args.check and stale:
        for path in stale:
            print(f"out of date: {path.relative_to(ROOT)} (run `python -m cfn.generate`)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
