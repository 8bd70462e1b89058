"""The README's code snippet runs as written (only the host and write key are swapped in)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from tests.helpers.events import stored_events

README = Path(__file__).resolve().parents[2] / "README.md"


def test_readme_python_snippet_sends_an_event(server: str, tenant: dict[str, str], ddb: Any, prefix: str) -> None:
    (snippet,) = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    assert 'write_key="wk_..."' in snippet and 'host="http://127.0.0.1:8080"' in snippet
    code = snippet.replace('write_key="wk_..."', f'write_key="{tenant["write_key"]}"').replace(
        'host="http://127.0.0.1:8080"', f'host="{server}"')
    exec(compile(code, "README.md", "exec"), {})  # our own documentation, nothing untrusted
    (event,) = stored_events(ddb, prefix)
    assert (event["type"], event["event"], event["groupId"], event["properties"]) == (
        "track", "Report Created", "acct-1", {"rows": 10})
