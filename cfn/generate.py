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
from chalicelib.versions import VIEW_VERSION

__all__ = [
    "PREFIX_PLACEHOLDER",
    "STORAGE_EXPORTS",
    "COLOURS",
    "OUTBOX_DRAIN",
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
        if name in (OUTBOX_DRAIN, SETTLER):
            # One at a time: a second concurrent drain would only race for the same alerts, a second settler
            # for the same pages (harmless: rings and conditions, but every write done twice).
            props["ReservedConcurrentExecutions"] = 1
        resources[function_id] = {"Properties": props}
    if projector_id is not None:
        resources.update(_projector_resources(projector_id))
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
