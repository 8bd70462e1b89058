"""The ``streamfold`` console script against the session's DynamoDB Local."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import boto3
import pytest

from chalicelib import services
from tooling.dynamodb_local import DynamoDBLocal, JavaMissingError

ROOT = Path(__file__).resolve().parents[2]


def run_cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    exe = Path(sys.executable).with_name("streamfold")
    return subprocess.run([str(exe), *args], cwd=ROOT, env={**os.environ, **env}, capture_output=True, text=True,
                          timeout=120)


def test_tenant_create_prints_credentials_and_stores_only_hashes(ddb_endpoint: str, prefix: str, ddb: Any,
                                                                 tmp_path: Path) -> None:
    env = {"STREAMFOLD_DYNAMODB_ENDPOINT": ddb_endpoint, "STREAMFOLD_TABLE_PREFIX": prefix,
           "STREAMFOLD_DATA_DIR": str(tmp_path)}
    proc = run_cli("tenant", "create", "Globex", env=env)
    assert proc.returncode == 0, proc.stderr
    creds = json.loads(proc.stdout)
    assert set(creds) == {"tenant_id", "write_key", "api_token"}
    # Secrets are stored hashed: the raw secret appears nowhere in the control table.
    dump = json.dumps(ddb.scan(TableName=f"{prefix}control")["Items"])
    assert creds["write_key"] not in dump and creds["api_token"] not in dump
    store = services.tenants()
    assert store.resolve(creds["write_key"], "write") == creds["tenant_id"]
    assert store.resolve(creds["write_key"], "read") is None  # a write key cannot read
    assert store.resolve(creds["api_token"], "read") == creds["tenant_id"]
    assert store.resolve(creds["api_token"], "write") is None  # an API token cannot write
    listed = run_cli("tenant", "list", env=env)
    assert json.loads(listed.stdout.splitlines()[0])["name"] == "Globex"


def test_missing_java_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no java (nor anything else) on PATH
    with pytest.raises(JavaMissingError, match="needs Java"):
        DynamoDBLocal(in_memory=True).start()


def test_persistent_database_survives_a_restart(tmp_path: Path) -> None:
    with DynamoDBLocal(db_path=tmp_path / "db") as ddb:

        c = boto3.client("dynamodb", endpoint_url=ddb.endpoint, region_name="us-east-1",
                         aws_access_key_id="x", aws_secret_access_key="x")
        c.create_table(TableName="keep", KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
                       AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
                       BillingMode="PAY_PER_REQUEST")
        c.put_item(TableName="keep", Item={"pk": {"S": "a"}})
    assert not ddb.running
    with DynamoDBLocal(db_path=tmp_path / "db") as ddb:
        c = boto3.client("dynamodb", endpoint_url=ddb.endpoint, region_name="us-east-1",
                         aws_access_key_id="y", aws_secret_access_key="y")  # shared db: any credentials
        assert c.get_item(TableName="keep", Key={"pk": {"S": "a"}})["Item"] == {"pk": {"S": "a"}}


def test_tenant_settings(ddb_endpoint: str, prefix: str, tmp_path: Path) -> None:
    env = {"STREAMFOLD_DYNAMODB_ENDPOINT": ddb_endpoint, "STREAMFOLD_TABLE_PREFIX": prefix,
           "STREAMFOLD_DATA_DIR": str(tmp_path)}
    tid = json.loads(run_cli("tenant", "create", "Initech", env=env).stdout)["tenant_id"]
    proc = run_cli("tenant", "set", tid, "--webhook-url", "http://127.0.0.1:9/hook", "--key-features",
                   "Report Created, Export Downloaded", env=env)
    assert proc.returncode == 0, proc.stderr
    assert services.tenants().get_settings(tid) == {
        "webhook_url": "http://127.0.0.1:9/hook", "key_features": ["Report Created", "Export Downloaded"]}
    bad = run_cli("tenant", "set", tid, "--webhook-url", "ftp://x", env=env)
    assert bad.returncode == 2 and "http(s)" in bad.stderr
