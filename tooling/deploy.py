"""One-command deploy: package, storage stack, compute stack (guarded), day-table mappings.

``streamfold deploy --stage dev --bucket ARTIFACTS [--alarm-topic-arn ARN] [--dry-run]``

1. **Package** with Chalice (:mod:`cfn.package`: ``deployment.zip`` + merged ``sam.json``); the zip
   and both templates are uploaded to the artifact bucket (the merged template is over the 51,200
   byte ``TemplateBody`` limit, so templates always go by ``TemplateURL``).
2. **Storage stack** ``<app>-<stage>-storage`` (``cfn/storage.json``) through a change set.
3. **Compute stack** ``<app>-<stage>`` through a change set, which the position guard
   (:mod:`tooling.guard`) reads before anything executes. A refused change set is deleted and
   nothing changes, unless ``allow_position_reset``. Blue/green: the deploy publishes a projector
   version to the *idle* alias (the colour no mapping targets) and keeps the live alias pinned, so
   live traffic is untouched until ``streamfold mappings swap --to <idle>``.
4. **Mappings**: every day table's stream gets exactly one mapping, targeting the live alias;
   a mapping that targets anything else (the bare function, an old function) is retargeted in
   place (disable -> wait -> update ``FunctionName`` -> enable), which keeps its stream position; a
   mapping whose settings differ from :data:`streams.mapping_settings.PROJECTOR_MAPPING` (batch size,
   ``ParallelizationFactor``, ...) is updated in place too.

``--dry-run`` creates the change sets, prints them and the guard's verdict, plans the mapping
changes, then deletes the change sets: nothing is executed.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
from botocore.exceptions import ClientError, WaiterError

from cfn import package
from chalicelib import tables
from streams.aws_backend import AwsMappingBackend
from streams.mapping_settings import PROJECTOR_MAPPING
from streams.rotation import MappingSettings
from tooling import guard

__all__ = ["BuildResult", "Clients", "DeployError", "DeployResult", "build_with_chalice", "deploy", "main"]

ROOT = Path(__file__).resolve().parent.parent
STORAGE_TEMPLATE = ROOT / "cfn" / "storage.json"
COLOURS = ("blue", "green")
PROJECTOR_ID = "Projector"
NO_CHANGES = ("didn't contain changes", "No updates are to be performed")
CAPABILITIES = ["CAPABILITY_IAM", "CAPABILITY_NAMED_IAM", "CAPABILITY_AUTO_EXPAND"]


class DeployError(RuntimeError):
    """A deploy step failed; the message says which and why."""


@dataclass
class Clients:
    """The boto3 clients a deploy uses."""

    cloudformation: Any
    lambda_: Any
    dynamodb: Any
    s3: Any
    region: str

    @classmethod
    def from_session(cls, session: Any) -> Clients:
        return cls(cloudformation=session.client("cloudformation"), lambda_=session.client("lambda"),
                   dynamodb=session.client("dynamodb"), s3=session.client("s3"), region=session.region_name)


@dataclass
class BuildResult:
    """What packaging produced: the Lambda zip and the compute template (code still a local path)."""

    zip_path: Path
    template: dict[str, Any]


@dataclass
class ChangeSetPlan:
    stack: str
    name: str
    change_set_type: str
    template_url: str = ""
    parameters: dict[str, str] = field(default_factory=dict)
    pages: list[dict[str, Any]] = field(default_factory=list)
    empty: bool = False

    @property
    def changes(self) -> list[dict[str, Any]]:
        return [c["ResourceChange"] for p in self.pages for c in p.get("Changes", []) if "ResourceChange" in c]


@dataclass
class DeployResult:
    """What a deploy did (or, dry run, would do)."""

    stage: str
    dry_run: bool
    storage_changes: list[dict[str, Any]] = field(default_factory=list)
    compute_changes: list[dict[str, Any]] = field(default_factory=list)
    violations: list[guard.Violation] = field(default_factory=list)
    refused: bool = False
    executed: list[str] = field(default_factory=list)
    live_colour: str = "blue"
    target_colour: str = "blue"
    release: str = ""
    mappings_created: list[str] = field(default_factory=list)
    mappings_retargeted: list[str] = field(default_factory=list)
    mappings_updated: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.refused


Builder = Callable[[Path, str], BuildResult]
Printer = Callable[[str], None]


def build_with_chalice(out_dir: Path, stage: str) -> BuildResult:
    """``python -m cfn.package``: vendor the shared packages, then ``chalice package --merge-template``."""

    package.vendor_packages()
    package.chalice_package(out_dir.resolve(), stage)
    return BuildResult(out_dir / "deployment.zip", json.loads((out_dir / "sam.json").read_text()))


def _chalice_stage(stage: str) -> tuple[str, str]:
    """(app name, table prefix) of a stage from ``.chalice/config.json``."""
    config = json.loads((ROOT / ".chalice" / "config.json").read_text())
    if stage not in config.get("stages", {}):
        raise DeployError(f"unknown stage {stage!r}: .chalice/config.json has {sorted(config.get('stages', {}))}")
    env = dict(config.get("environment_variables", {}))
    env.update(config["stages"][stage].get("environment_variables", {}))
    return str(config["app_name"]), str(env["STREAMFOLD_TABLE_PREFIX"])


# --- artifacts ------------------------------------------------------------------------------------


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _point_code_at_s3(template: dict[str, Any], bucket: str, key: str) -> dict[str, Any]:
    """What ``aws cloudformation package`` does: local code paths -> the uploaded S3 object."""
    out = json.loads(json.dumps(template))
    for resource in out.get("Resources", {}).values():
        props = resource.get("Properties") or {}
        if resource.get("Type") == "AWS::Serverless::Function" and isinstance(props.get("CodeUri"), str):
            props["CodeUri"] = f"s3://{bucket}/{key}"
        elif resource.get("Type") == "AWS::Lambda::Function" and isinstance(props.get("Code"), str):
            props["Code"] = {"S3Bucket": bucket, "S3Key": key}
    return out


def _upload_template(clients: Clients, bucket: str, key: str, template: dict[str, Any]) -> str:
    body = json.dumps(template, indent=1).encode()
    clients.s3.put_object(Bucket=bucket, Key=key, Body=body)
    return f"https://{bucket}.s3.{clients.region}.amazonaws.com/{key}"


# --- stacks and change sets -----------------------------------------------------------------------


def _stack(cfn: Any, name: str) -> dict[str, Any] | None:
    try:
        stack: dict[str, Any] = cfn.describe_stacks(StackName=name)["Stacks"][0]
    except ClientError as exc:
        if "does not exist" in str(exc):
            return None
        raise
    if stack["StackStatus"] == "REVIEW_IN_PROGRESS":  # a change set was created but never executed
        return None
    return stack


def _outputs(stack: dict[str, Any] | None) -> dict[str, str]:
    return {o["OutputKey"]: o["OutputValue"] for o in (stack or {}).get("Outputs", [])}


def _plan(clients: Clients, stack: str, template: dict[str, Any], template_url: str, parameters: dict[str, str],
          delay: int) -> ChangeSetPlan:
    """What applying ``template`` to ``stack`` changes.

    An existing stack gets a real change set (what the guard reads). A new stack has no mapping to
    lose, so it is created with ``CreateStack``; its plan lists the template's resources (a
    ``CREATE`` change set would leave a ``REVIEW_IN_PROGRESS`` stack behind on a dry run).
    """
    cfn = clients.cloudformation
    if _stack(cfn, stack) is None:
        plan = ChangeSetPlan(stack=stack, name="(new stack)", change_set_type="CREATE",
                             template_url=template_url, parameters=parameters)
        plan.pages = [{"Changes": [
            {"Type": "Resource", "ResourceChange": {"Action": "Add", "LogicalResourceId": logical_id,
                                                    "ResourceType": resource.get("Type", "?")}}
            for logical_id, resource in template.get("Resources", {}).items()]}]
        return plan
    plan = ChangeSetPlan(stack=stack, name=f"streamfold-deploy-{int(time.time() * 1000)}", change_set_type="UPDATE",
                         template_url=template_url, parameters=parameters)
    cfn.create_change_set(
        StackName=stack, ChangeSetName=plan.name, ChangeSetType="UPDATE", TemplateURL=template_url,
        Parameters=_cfn_parameters(parameters), Capabilities=CAPABILITIES, Description="streamfold deploy")
    try:
        cfn.get_waiter("change_set_create_complete").wait(
            StackName=stack, ChangeSetName=plan.name, WaiterConfig={"Delay": delay, "MaxAttempts": 120})
    except WaiterError as exc:
        desc = cfn.describe_change_set(StackName=stack, ChangeSetName=plan.name)
        reason = desc.get("StatusReason", "")
        cfn.delete_change_set(StackName=stack, ChangeSetName=plan.name)
        if any(marker in reason for marker in NO_CHANGES):
            plan.empty = True
            return plan
        raise DeployError(f"change set for {stack} failed: {reason or exc}") from exc
    kwargs: dict[str, Any] = {"StackName": stack, "ChangeSetName": plan.name}
    while True:
        page = cfn.describe_change_set(**kwargs)
        page.pop("ResponseMetadata", None)
        plan.pages.append(page)
        if not page.get("NextToken"):
            break
        kwargs["NextToken"] = page["NextToken"]
    plan.empty = not plan.changes
    if plan.empty:
        cfn.delete_change_set(StackName=stack, ChangeSetName=plan.name)
    return plan


def _cfn_parameters(parameters: dict[str, str]) -> list[dict[str, str]]:
    return [{"ParameterKey": k, "ParameterValue": v} for k, v in parameters.items()]


def _discard(clients: Clients, plan: ChangeSetPlan) -> None:
    if plan.change_set_type == "UPDATE" and not plan.empty:
        clients.cloudformation.delete_change_set(StackName=plan.stack, ChangeSetName=plan.name)


def _execute(clients: Clients, plan: ChangeSetPlan, delay: int) -> None:
    cfn = clients.cloudformation
    if plan.change_set_type == "CREATE":
        cfn.create_stack(StackName=plan.stack, TemplateURL=plan.template_url,
                         Parameters=_cfn_parameters(plan.parameters), Capabilities=CAPABILITIES)
        waiter = "stack_create_complete"
    else:
        cfn.execute_change_set(StackName=plan.stack, ChangeSetName=plan.name)
        waiter = "stack_update_complete"
    try:
        cfn.get_waiter(waiter).wait(StackName=plan.stack, WaiterConfig={"Delay": delay, "MaxAttempts": 360})
    except WaiterError as exc:
        raise DeployError(f"stack {plan.stack} did not reach {waiter.split('_', 1)[1]}: {exc}") from exc


def _format_changes(plan: ChangeSetPlan) -> str:
    if plan.empty:
        return f"{plan.stack}: no changes"
    lines = [f"{plan.stack}: change set {plan.name} ({plan.change_set_type})" if plan.change_set_type == "UPDATE"
             else f"{plan.stack}: new stack, {len(plan.changes)} resources (CreateStack)"]
    for rc in plan.changes:
        replacement = f" replacement={rc['Replacement']}" if rc.get("Replacement") not in (None, "False") else ""
        props = sorted({d["Target"]["Name"] for d in rc.get("Details", []) if d.get("Target", {}).get("Name")})
        detail = f" [{', '.join(props)}]" if props else ""
        lines.append(f"  {rc.get('Action', '?'):<7} {rc.get('LogicalResourceId')} ({rc.get('ResourceType')})"
                     f"{replacement}{detail}")
    return "\n".join(lines)


# --- blue/green state -----------------------------------------------------------------------------


def _alias_versions(lam: Any, function_name: str | None) -> dict[str, str]:
    versions: dict[str, str] = {}
    if function_name is None:
        return versions
    for colour in COLOURS:
        try:
            versions[colour] = str(lam.get_alias(FunctionName=function_name, Name=colour)["FunctionVersion"])
        except ClientError as exc:
            if exc.response["Error"]["Code"] != "ResourceNotFoundException":
                raise
    return versions


def _colour_of(function_name: str, projector: str, versions: dict[str, str]) -> str | None:
    """The alias a mapping's target is (``name:blue``); ``None`` if it is not a projector alias.

    On AWS ``FunctionArn`` keeps the alias; moto resolves it to the version, so a numeric
    qualifier is matched against the aliases' versions.
    """
    base, _, qualifier = function_name.partition(":")
    if base != projector or not qualifier:
        return None
    if qualifier in COLOURS:
        return qualifier
    matches = [c for c, v in versions.items() if v == qualifier]
    return matches[0] if matches else None


def _day_streams(ddb: Any, prefix: str) -> list[tuple[str, str]]:
    """(table, stream ARN) of every day table, oldest first."""

    out = []
    for _day, name in tables.list_event_tables(ddb, prefix):
        arn = ddb.describe_table(TableName=name)["Table"].get("LatestStreamArn")
        if arn:
            out.append((name, arn))
    return out


def _live_colour(mappings_by_stream: dict[str, list[Any]], projector: str | None,
                 versions: dict[str, str]) -> str:
    """The colour today's mappings target (the newest day table decides), ``blue`` when none does."""
    if projector is None:
        return COLOURS[0]
    for _stream, found in reversed(list(mappings_by_stream.items())):
        for m in found:
            colour = _colour_of(m.function_name, projector, versions)
            if colour is not None:
                return colour
    return COLOURS[0]


def _mapping_settings() -> Any:
    return MappingSettings


def _retarget(backend: Any, uuid: str, function_name: str, timeout: float) -> None:
    """disable -> Disabled -> FunctionName -> enable -> Enabled: the position is kept."""
    current = backend.get(uuid)
    if current is not None and current.state not in ("Disabled", "Disabling"):
        backend.update(uuid, enabled=False)
    backend.wait_for_state(uuid, "Disabled", timeout)
    backend.update(uuid, function_name=function_name)
    backend.wait_for_state(uuid, "Disabled", timeout)
    backend.update(uuid, enabled=True)
    backend.wait_for_state(uuid, "Enabled", timeout)


def _sync_mappings(clients: Clients, result: DeployResult, streams: list[tuple[str, str]],
                   mappings_by_stream: dict[str, list[Any]], projector: str, versions: dict[str, str],
                   dlq_arn: str, out: Printer, poll: float, timeout: float) -> None:

    backend = AwsMappingBackend(clients.lambda_, poll=poll)
    live = result.live_colour
    target_name = f"{projector}:{live}"
    settings = _mapping_settings()(function_name=target_name, on_failure_arn=dlq_arn)
    for table, stream_arn in streams:
        found = mappings_by_stream.get(stream_arn, [])
        if not found:
            out(f"mapping: create {table} -> {target_name}" + (" (dry run)" if result.dry_run else ""))
            if not result.dry_run:
                m = backend.create(
                    event_source_arn=stream_arn, function_name=target_name,
                    starting_position=settings.starting_position, batch_size=settings.batch_size,
                    maximum_batching_window_in_seconds=settings.batching_window_seconds,
                    bisect_batch_on_function_error=settings.bisect_on_error,
                    maximum_retry_attempts=settings.maximum_retry_attempts,
                    maximum_record_age_in_seconds=settings.maximum_record_age_seconds,
                    parallelization_factor=settings.parallelization_factor,
                    function_response_types=["ReportBatchItemFailures"], on_failure_destination=dlq_arn)
                result.mappings_created.append(m.uuid)
            continue
        if len(found) > 1:
            out(f"mapping: WARNING {table} has {len(found)} mappings ({', '.join(m.uuid for m in found)}): "
                "every record is projected once per mapping; delete all but one by hand")
        for m in found:
            if _colour_of(m.function_name, projector, versions) == live:
                continue
            out(f"mapping: retarget {m.uuid} ({table}) {m.function_name} -> {target_name} "
                "(disable, retarget, enable: position kept)" + (" (dry run)" if result.dry_run else ""))
            if not result.dry_run:
                _retarget(backend, m.uuid, target_name, timeout)
                result.mappings_retargeted.append(m.uuid)
        for m in found:
            # Settings changed in streams.mapping_settings (a ParallelizationFactor raised for a busy day, ...)
            # reach the existing mappings in place: same UUID, so the stream position is kept.
            changed = PROJECTOR_MAPPING.update_args(m)
            if not changed:
                continue
            out(f"mapping: update {m.uuid} ({table}) settings {changed}" + (" (dry run)" if result.dry_run else ""))
            if not result.dry_run:
                settled = backend.get(m.uuid) or m
                backend.wait_for_state(m.uuid, "Enabled" if settled.enabled else "Disabled", timeout)
                backend.update(m.uuid, **changed)
                backend.wait_for_state(m.uuid, "Enabled" if settled.enabled else "Disabled", timeout)
                result.mappings_updated.append(m.uuid)


# --- the deploy -----------------------------------------------------------------------------------


def deploy(stage: str, dry_run: bool = False, allow_position_reset: bool = False, *,
           clients: Clients | None = None, bucket: str | None = None, alarm_topic_arn: str | None = None,
           build: Builder = build_with_chalice, build_dir: Path | None = None,
           extra_parameters: dict[str, str] | None = None, out: Printer = print,
           delay: int = 5, poll: float = 1.0, mapping_timeout: float = 300.0) -> DeployResult:
    """Package and deploy a stage; see the module docstring for the steps.

    Args:
        stage: a stage of ``.chalice/config.json`` (stacks ``<app>-<stage>-storage`` and ``<app>-<stage>``).
        dry_run: create, print and delete the change sets; execute nothing, create no mapping.
        allow_position_reset: execute even when the guard refuses (the position of the named
            mappings is lost: the printed hint says how to avoid it).
        clients: boto3 clients (default: a session from the environment).
        bucket: artifact bucket for the zip and the templates (``STREAMFOLD_ARTIFACT_BUCKET``).
        alarm_topic_arn: SNS topic for alarms; required on the first deploy, then kept.
        build: packages the app into ``build_dir`` (default: Chalice).
        extra_parameters: more compute parameters (``RetentionDays``, ``ExportBucketName``, ...).
        delay: seconds between CloudFormation waiter polls.

    Returns:
        What was (or would be) changed; ``result.refused`` when the guard stopped the deploy.

    Raises:
        DeployError: a step failed (nothing after it ran).
    """
    if clients is None:

        clients = Clients.from_session(boto3.session.Session())
    bucket = bucket or os.environ.get("STREAMFOLD_ARTIFACT_BUCKET")
    if not bucket:
        raise DeployError("an artifact bucket is required (--bucket or STREAMFOLD_ARTIFACT_BUCKET)")
    app_name, prefix = _chalice_stage(stage)
    storage_stack, compute_stack = f"{app_name}-{stage}-storage", f"{app_name}-{stage}"
    result = DeployResult(stage=stage, dry_run=dry_run)
    cfn = clients.cloudformation

    # 1. package and upload
    with tempfile.TemporaryDirectory(prefix="streamfold-build-") as tmp:
        built = build(build_dir or Path(tmp), stage)
        result.release = _sha256(built.zip_path)
        code_key = f"{app_name}/{stage}/{result.release}.zip"
        clients.s3.put_object(Bucket=bucket, Key=code_key, Body=built.zip_path.read_bytes())
    compute_template = _point_code_at_s3(built.template, bucket, code_key)
    out(f"packaged release {result.release[:12]} -> s3://{bucket}/{code_key}")

    # 2. storage stack
    storage_template = json.loads(STORAGE_TEMPLATE.read_text())
    storage_url = _upload_template(clients, bucket, f"{app_name}/{stage}/storage-{result.release}.json",
                                   storage_template)
    storage = _plan(clients, storage_stack, storage_template, storage_url, {"TablePrefix": prefix}, delay)
    result.storage_changes = storage.changes
    out(_format_changes(storage))
    storage_violations = guard.check_change_set(storage.pages)
    if storage_violations:
        result.violations += storage_violations
        out(guard.format_report(storage_violations))
    if not storage.empty:
        if storage_violations and not allow_position_reset:
            _discard(clients, storage)
            result.refused = True
            return result
        if dry_run:
            _discard(clients, storage)
        else:
            _execute(clients, storage, delay)
            result.executed.append(storage_stack)
    if dry_run and storage.change_set_type == "CREATE":
        out(f"{compute_stack}: not planned (it imports {storage_stack}'s exports, which a dry run does not create)")
        return result

    # 3. blue/green state, then the compute stack
    existing = _stack(cfn, compute_stack)
    projector = _outputs(existing).get("ProjectorFunctionName") or _physical_id(cfn, compute_stack, existing)
    versions = _alias_versions(clients.lambda_, projector)
    streams = _day_streams(clients.dynamodb, prefix)
    mappings_by_stream = {arn: _mappings(clients, arn, poll) for _t, arn in streams}
    result.live_colour = _live_colour(mappings_by_stream, projector, versions)
    first = not versions
    result.target_colour = result.live_colour if first else _other(result.live_colour)
    parameters = {
        "StorageStackName": storage_stack,
        "ProjectorRelease": result.release,
        "TargetColour": result.target_colour,
        "LiveColour": result.live_colour,
        "BlueVersion": versions.get("blue", ""),
        "GreenVersion": versions.get("green", ""),
    }
    previous = {p["ParameterKey"]: p.get("ParameterValue", "") for p in (existing or {}).get("Parameters", [])}
    topic = alarm_topic_arn or previous.get("AlarmTopicArn")
    if not topic:
        raise DeployError("--alarm-topic-arn is required on the first deploy of a stage")
    parameters["AlarmTopicArn"] = topic
    parameters.update(extra_parameters or {})
    declared = set(compute_template.get("Parameters", {}))
    parameters = {k: v for k, v in parameters.items() if k in declared}
    out(f"blue/green: live={result.live_colour} target={result.target_colour} "
        f"(versions now: {versions or 'none'})")

    compute_url = _upload_template(clients, bucket, f"{app_name}/{stage}/compute-{result.release}.json",
                                   compute_template)
    compute = _plan(clients, compute_stack, compute_template, compute_url, parameters, delay)
    result.compute_changes = compute.changes
    out(_format_changes(compute))
    violations = guard.check_change_set(compute.pages)
    result.violations += violations
    out(guard.format_report(violations))
    if not compute.empty:
        if violations and not allow_position_reset:
            _discard(clients, compute)
            result.refused = True
            out(f"deploy: refused; change set {compute.name} deleted, nothing executed. "
                "Re-run with --allow-position-reset to accept the loss of position.")
            return result
        if violations:
            out("deploy: --allow-position-reset given: executing; the mappings above restart at StartingPosition")
        if dry_run:
            _discard(clients, compute)
        else:
            _execute(clients, compute, delay)
            result.executed.append(compute_stack)

    # 4. mappings of the day tables -> the live alias
    stack_now = _stack(cfn, compute_stack)
    projector = _outputs(stack_now).get("ProjectorFunctionName") or _physical_id(cfn, compute_stack, stack_now)
    dlq_arn = _outputs(_stack(cfn, storage_stack)).get("StreamFailureQueueArn")
    if projector is None or dlq_arn is None:
        out(f"mappings: skipped ({len(streams)} day table(s)); the stacks are not deployed yet")
        return result
    versions = _alias_versions(clients.lambda_, projector)
    missing = [c for c in COLOURS if c not in versions]
    if not streams:
        out("mappings: no day tables yet (rotation creates them and maps them to the live alias)")
        return result
    if missing and not dry_run:
        raise DeployError(f"projector {projector} has no alias {', '.join(missing)}: the compute stack "
                          "must create both (cfn/compute-extras.json)")
    _sync_mappings(clients, result, streams, mappings_by_stream, projector, versions, dlq_arn, out, poll,
                   mapping_timeout)
    if result.target_colour != result.live_colour:
        out(f"next: verify {result.target_colour}, then `streamfold mappings swap --to {result.target_colour}`")
    return result


def _other(colour: str) -> str:
    return COLOURS[1] if colour == COLOURS[0] else COLOURS[0]


def _physical_id(cfn: Any, stack: str, existing: dict[str, Any] | None) -> str | None:
    if existing is None:
        return None
    try:
        res = cfn.describe_stack_resource(StackName=stack, LogicalResourceId=PROJECTOR_ID)
    except ClientError:
        return None
    return str(res["StackResourceDetail"]["PhysicalResourceId"]) or None


def _mappings(clients: Clients, stream_arn: str, poll: float) -> list[Any]:

    return [m for m in AwsMappingBackend(clients.lambda_, poll=poll).list(event_source_arn=stream_arn)
            if m.state != "Deleting"]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="streamfold deploy", description=__doc__.split("\n\n")[0])
    parser.add_argument("--stage", required=True, help="stage of .chalice/config.json")
    parser.add_argument("--dry-run", action="store_true", help="print the change sets and the guard's verdict only")
    parser.add_argument("--allow-position-reset", action="store_true",
                        help="execute even if the guard refuses (event source mappings lose their position)")
    parser.add_argument("--bucket", default=os.environ.get("STREAMFOLD_ARTIFACT_BUCKET"),
                        help="S3 bucket for the zip and templates (default: $STREAMFOLD_ARTIFACT_BUCKET)")
    parser.add_argument("--alarm-topic-arn", help="SNS topic for alarms (required on the first deploy)")
    parser.add_argument("--region", help="AWS region (default: the environment's)")
    parser.add_argument("--parameter", action="append", default=[], metavar="KEY=VALUE",
                        help="extra compute parameter, e.g. RetentionDays=400 or ExportBucketName=b")
    args = parser.parse_args(argv)

    extra = dict(p.split("=", 1) for p in args.parameter)
    try:
        result = deploy(args.stage, args.dry_run, args.allow_position_reset,
                        clients=Clients.from_session(boto3.session.Session(region_name=args.region)),
                        bucket=args.bucket, alarm_topic_arn=args.alarm_topic_arn, extra_parameters=extra)
    except DeployError as exc:
        print(f"deploy: {exc}", file=sys.stderr)
        return 1
    return 1 if result.refused else 0


if __name__ == "__main__":
    sys.exit(main())
