"""The stream-position guard: refuse CloudFormation changes that would reset an Event Source Mapping.

An ``AWS::Lambda::EventSourceMapping`` holds the stream position (the last sequence number its
function processed, per shard). A template change that *replaces* or *removes* the mapping
resource creates a new mapping starting at ``StartingPosition``: with ``TRIM_HORIZON`` up to 24
hours of records are projected a second time, with ``LATEST`` everything in between is skipped.
CloudFormation replaces a mapping when its ``EventSourceArn``, ``StartingPosition``,
``StartingPositionTimestamp`` or ``SelfManagedEventSource`` changes (``createOnlyProperties`` of
the resource schema), when its logical id changes (remove + add), or when its type changes.

Changing ``FunctionName`` is an in-place update: that is exactly how blue/green works.

The day tables' mappings live *outside* the stack (the rotation function and ``deploy`` create
them), pointing at the projector's ``blue``/``green`` aliases. Removing or replacing an alias or
the projector function therefore strands every mapping (delivery stops; after
``MaximumRecordAgeInSeconds`` the records go to the on-failure queue), so those are refused too.

Two inputs::

    python -m tooling.guard OLD.json NEW.json             # two templates (JSON or YAML)
    python -m tooling.guard --change-set describe.json    # `aws cloudformation describe-change-set` output

Exit status 0: safe. 1: refused (each violation names the logical id and the property). 2: usage.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "ESM_TYPE",
    "HINT",
    "REPLACEMENT_PROPERTIES",
    "Violation",
    "check_change_set",
    "check_templates",
    "format_report",
    "load_template",
    "main",
]

ESM_TYPE = "AWS::Lambda::EventSourceMapping"
ALIAS_TYPE = "AWS::Lambda::Alias"
FUNCTION_TYPES = ("AWS::Lambda::Function", "AWS::Serverless::Function")
# SAM turns these function events into an AWS::Lambda::EventSourceMapping named <Function><Event>.
SAM_STREAM_EVENTS = ("DynamoDB", "Kinesis", "MSK", "SelfManagedKafka", "MQ", "DocumentDB")

# ``createOnlyProperties`` of the CloudFormation resource schemas (cfn-lint 1.58 ships them).
REPLACEMENT_PROPERTIES: dict[str, tuple[str, ...]] = {
    ESM_TYPE: ("EventSourceArn", "StartingPosition", "StartingPositionTimestamp", "SelfManagedEventSource"),
    ALIAS_TYPE: ("FunctionName", "Name"),
    "AWS::Lambda::Function": ("FunctionName", "PackageType", "TenancyConfig"),
    "AWS::Serverless::Function": ("FunctionName", "PackageType"),
}

# The compute stack's projector (Chalice's logical id for ``@app.lambda_function(name="projector")``).
DEFAULT_PROTECTED = ("Projector",)

HINT = """How to keep the stream position:
  - never rename, replace or remove an event source mapping resource (or the alias/function it targets);
  - to point a mapping at new code: disable it, wait for State=Disabled (the in-flight batch is
    checkpointed), update FunctionName in place (`streamfold mappings swap --to green|blue` does
    disable -> retarget -> enable), then enable it; the next batch starts right after the last
    processed record;
  - a new EventSourceArn or StartingPosition is a new mapping: create it beside the old one, replay the
    gap with `streamfold replay`, and only then delete the old one.
Override (resets the position): `streamfold deploy --allow-position-reset`."""


@dataclass(frozen=True)
class Violation:
    """One change that would reset a stream position or strand the mappings.

    Attributes:
        logical_id: the resource's logical id (the *old* one for a rename).
        resource_type: its CloudFormation type.
        prop: the property that forces replacement, or ``"(resource)"`` for a removal/rename.
        reason: what would happen, in one sentence.
        kind: ``"position"`` (a mapping is reset) or ``"target"`` (mappings outside the stack lose
            their target).
    """

    logical_id: str
    resource_type: str
    prop: str
    reason: str
    kind: str = "position"

    def __str__(self) -> str:
        return f"{self.logical_id} ({self.resource_type}) property {self.prop}: {self.reason}"

    def to_dict(self) -> dict[str, str]:
        return {"logical_id": self.logical_id, "resource_type": self.resource_type, "property": self.prop,
                "reason": self.reason, "kind": self.kind}


# --- templates ---------------------------------------------------------------------------------


def load_template(path: Path | str) -> dict[str, Any]:
    """A CloudFormation template from a JSON or YAML file (YAML short-form tags like ``!Ref`` included)."""
    text = Path(path).read_text()
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        # deferred: heavy optional dependency, cfn-lint (dev) is only needed for YAML templates
        from cfnlint.decode import cfn_yaml

        data = cfn_yaml.loads(text)
    if not isinstance(data, dict):
        raise ValueError(f"{path}: not a CloudFormation template")
    return json.loads(json.dumps(data))  # cfn-lint's node types -> plain dicts/lists/str


def _resources(template: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Resources, with SAM stream events expanded into the mappings SAM will create."""
    out: dict[str, dict[str, Any]] = {}
    for logical_id, resource in (template.get("Resources") or {}).items():
        if not isinstance(resource, dict):
            continue
        out[logical_id] = resource
        if resource.get("Type") != "AWS::Serverless::Function":
            continue
        events = (resource.get("Properties") or {}).get("Events") or {}
        for event_id, event in events.items():
            if isinstance(event, dict) and event.get("Type") in SAM_STREAM_EVENTS:
                props = dict(event.get("Properties") or {})
                if "Stream" in props:
                    props["EventSourceArn"] = props.pop("Stream")
                props["FunctionName"] = {"Ref": logical_id}
                out[f"{logical_id}{event_id}"] = {"Type": ESM_TYPE, "Properties": props, "_sam_event": True}
    return out


def _canon(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def _referenced_ids(value: Any) -> set[str]:
    """Logical ids a property value points at through Ref / Fn::GetAtt / Fn::Sub."""
    found: set[str] = set()
    if isinstance(value, dict):
        if "Ref" in value and isinstance(value["Ref"], str):
            found.add(value["Ref"])
        att = value.get("Fn::GetAtt")
        if isinstance(att, list) and att:
            found.add(str(att[0]))
        elif isinstance(att, str):
            found.add(att.split(".", 1)[0])
        sub = value.get("Fn::Sub")
        text = sub[0] if isinstance(sub, list) and sub else sub
        if isinstance(text, str):
            found.update(m.split(".", 1)[0] for m in re.findall(r"\$\{([^}!]+)\}", text))
        for v in value.values():
            found |= _referenced_ids(v)
    elif isinstance(value, list):
        for v in value:
            found |= _referenced_ids(v)
    return found


def _targets(resources: Mapping[str, dict[str, Any]], protect: Iterable[str]) -> set[str]:
    """Aliases, the functions aliases/mappings point at, and the explicitly protected ids."""
    ids = {i for i, r in resources.items() if r.get("Type") == ALIAS_TYPE}
    for r in resources.values():
        if r.get("Type") in (ESM_TYPE, ALIAS_TYPE):
            ids |= _referenced_ids((r.get("Properties") or {}).get("FunctionName"))
    ids |= set(protect)
    return {i for i in ids if i in resources and resources[i].get("Type") in (ALIAS_TYPE, *FUNCTION_TYPES)}


def _stream_key(resource: Mapping[str, Any]) -> str:
    return _canon((resource.get("Properties") or {}).get("EventSourceArn"))


def check_templates(old: Mapping[str, Any], new: Mapping[str, Any],
                    protect: Iterable[str] = DEFAULT_PROTECTED) -> list[Violation]:
    """Violations of updating a stack from template ``old`` to ``new`` (empty list: safe)."""
    before, after = _resources(old), _resources(new)
    violations: list[Violation] = []
    new_esms = {i: r for i, r in after.items() if r.get("Type") == ESM_TYPE}

    for logical_id, res in before.items():
        rtype = str(res.get("Type"))
        if rtype == ESM_TYPE:
            violations += _check_esm(logical_id, res, after, {i: r for i, r in new_esms.items() if i not in before})
    protected = _targets(before, protect)
    for logical_id in sorted(protected):
        res = before[logical_id]
        rtype = str(res.get("Type"))
        successor = after.get(logical_id)
        why = "mappings outside the stack target it; they would stop delivering until retargeted"
        if successor is None:
            violations.append(Violation(logical_id, rtype, "(resource)", f"removed: {why}", "target"))
        elif successor.get("Type") != rtype:
            violations.append(Violation(logical_id, rtype, "Type",
                                        f"type changes to {successor.get('Type')} (replacement): {why}", "target"))
        else:
            for prop in _changed_replacement_props(rtype, res, successor):
                violations.append(Violation(logical_id, rtype, prop,
                                            f"changing it requires replacement: {why}", "target"))
    return violations


def _changed_replacement_props(rtype: str, old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    a, b = old.get("Properties") or {}, new.get("Properties") or {}
    return [p for p in REPLACEMENT_PROPERTIES.get(rtype, ()) if _canon(a.get(p)) != _canon(b.get(p))]


def _check_esm(logical_id: str, res: Mapping[str, Any], after: Mapping[str, dict[str, Any]],
               added_esms: Mapping[str, dict[str, Any]]) -> list[Violation]:
    successor = after.get(logical_id)
    if successor is None:
        renamed = [i for i, r in added_esms.items() if _stream_key(r) == _stream_key(res)]
        if renamed:
            return [Violation(logical_id, ESM_TYPE, "(logical id)",
                              f"renamed to {renamed[0]}: CloudFormation deletes this mapping and creates a new "
                              "one, which starts at StartingPosition (the stream position is lost)")]
        return [Violation(logical_id, ESM_TYPE, "(resource)",
                          "removed: the mapping and its stream position are deleted")]
    if successor.get("Type") != ESM_TYPE:
        return [Violation(logical_id, ESM_TYPE, "Type",
                          f"type changes to {successor.get('Type')}: the mapping is deleted with its position")]
    out = []
    for prop in _changed_replacement_props(ESM_TYPE, res, successor):
        out.append(Violation(logical_id, ESM_TYPE, prop,
                             "changing it requires replacement: a new mapping starts at StartingPosition "
                             "(the stream position is lost)"))
    if _canon(res.get("Condition")) != _canon(successor.get("Condition")):
        out.append(Violation(logical_id, ESM_TYPE, "Condition",
                             "a changed condition may remove the mapping (and its position)"))
    return out


# --- change sets ---------------------------------------------------------------------------------


def _resource_changes(change_set: Mapping[str, Any] | Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """``ResourceChange`` entries from one describe-change-set page, a list of pages, or a bare list."""
    pages: Sequence[Any] = change_set if isinstance(change_set, list) else [change_set]
    out: list[dict[str, Any]] = []
    for page in pages:
        changes = page.get("Changes", []) if isinstance(page, dict) else []
        for change in changes:
            rc = change.get("ResourceChange") if isinstance(change, dict) else None
            if isinstance(rc, dict):
                out.append(rc)
    return out


def _details(rc: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(property name, RequiresRecreation) of every property-level detail of a resource change."""
    found = []
    for d in rc.get("Details") or []:
        target = d.get("Target") or {}
        if target.get("Attribute") == "Properties" and target.get("Name"):
            found.append((str(target["Name"]), str(target.get("RequiresRecreation", "Never"))))
    return found


def check_change_set(change_set: Mapping[str, Any] | Sequence[Mapping[str, Any]],
                     protect: Iterable[str] = DEFAULT_PROTECTED) -> list[Violation]:
    """Violations in the JSON of ``describe-change-set`` (one page or a list of pages)."""
    changes = _resource_changes(change_set)
    protected = set(protect)
    added_esms = [rc.get("LogicalResourceId", "?") for rc in changes
                  if rc.get("Action") == "Add" and rc.get("ResourceType") == ESM_TYPE]
    violations: list[Violation] = []
    for rc in changes:
        logical_id = str(rc.get("LogicalResourceId", "?"))
        rtype = str(rc.get("ResourceType", "?"))
        action = rc.get("Action")
        replacement = str(rc.get("Replacement", "False"))
        is_esm = rtype == ESM_TYPE
        is_target = rtype == ALIAS_TYPE or (logical_id in protected and rtype in FUNCTION_TYPES)
        if not (is_esm or is_target):
            continue
        kind = "position" if is_esm else "target"
        consequence = ("the mapping is deleted with its stream position" if is_esm else
                       "mappings outside the stack target it; they would stop delivering until retargeted")
        if action == "Remove":
            if is_esm and added_esms:
                reason = (f"removed while {', '.join(added_esms)} is added (a rename?): a new mapping starts "
                          "at StartingPosition, the stream position is lost")
            else:
                reason = f"removed: {consequence}"
            violations.append(Violation(logical_id, rtype, "(resource)", reason, kind))
        elif action == "Modify" and replacement in ("True", "Conditional"):
            props = [name for name, recreation in _details(rc) if recreation in ("Always", "Conditionally")]
            if not props and is_esm:
                props = [name for name, _ in _details(rc) if name in REPLACEMENT_PROPERTIES[ESM_TYPE]]
            word = "replaced" if replacement == "True" else "may be replaced (Replacement: Conditional)"
            for prop in props or ["(unknown property)"]:
                violations.append(Violation(logical_id, rtype, prop, f"{word}: {consequence}", kind))
    return violations


# --- reporting and CLI --------------------------------------------------------------------------


def format_report(violations: Sequence[Violation]) -> str:
    """A human verdict: ``OK`` or the refused changes followed by :data:`HINT`."""
    if not violations:
        return "guard: OK (no event source mapping is replaced or removed; no mapping target is lost)"
    lines = [f"guard: REFUSED ({len(violations)} change(s) would reset a stream position or strand mappings)"]
    lines += [f"  - {v}" for v in violations]
    return "\n".join(lines + ["", HINT])


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="streamfold guard",
        description="Refuse CloudFormation changes that would reset an event source mapping's stream position.")
    parser.add_argument("templates", nargs="*", metavar="OLD NEW", help="the deployed template and the new one")
    parser.add_argument("--change-set", type=Path, metavar="FILE",
                        help="JSON output of `aws cloudformation describe-change-set`")
    parser.add_argument("--protect", action="append", metavar="LOGICAL_ID",
                        help=f"function whose removal strands mappings (default: {', '.join(DEFAULT_PROTECTED)})")
    parser.add_argument("--json", action="store_true", help="print violations as JSON")
    args = parser.parse_args(argv)
    protect = tuple(args.protect) if args.protect else DEFAULT_PROTECTED
    try:
        if args.change_set is not None:
            if args.templates:
                parser.error("give either OLD NEW or --change-set FILE, not both")
            violations = check_change_set(json.loads(args.change_set.read_text()), protect)
        elif len(args.templates) == 2:
            violations = check_templates(load_template(args.templates[0]), load_template(args.templates[1]), protect)
        else:
            parser.error("give two templates (OLD NEW) or --change-set FILE")
    except (OSError, ValueError) as exc:
        print(f"guard: cannot read input: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps({"ok": not violations, "violations": [v.to_dict() for v in violations]}, indent=2))
    else:
        print(format_report(violations), file=sys.stdout if not violations else sys.stderr)
    return 1 if violations else 0


if __name__ == "__main__":
    sys.exit(main())
