"""The settings document Segment's browser and mobile SDKs fetch before they send anything.

analytics.js (``@segment/analytics-next``) loads ``<cdn>/v1/projects/<write key>/settings`` (``<cdn>`` is
``analytics._cdn`` or the ``cdnURL`` load setting), analytics-swift and analytics-kotlin
``https://<cdnHost>/projects/<write key>/settings`` (``cdnHost`` defaults to ``cdn-settings.segment.com/v1``).
Segment's CDN knows no streamfold write key, so an SDK left on it fails to load and sends nothing;
streamfold serves the document itself, with its own address as the SDKs' API host
(``integrations["Segment.io"].apiHost``, which the mobile SDKs take over their own configuration).
No destinations, no remote plugins, no telemetry (``metrics.sampleRate`` 0).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["api_host", "settings_document"]


def api_host(headers: Mapping[str, str], request_path: str) -> tuple[str, str]:
    """(``host[/base]/v1``, protocol) of the ingest API as the client reached the settings path.

    ``request_path`` is the path the client used (API Gateway's ``requestContext.path``: with the stage,
    ``/api/v1/projects/...``, on an execute-api URL; as mapped on a custom domain). Behind API Gateway the
    protocol is ``X-Forwarded-Proto``; locally plain ``http``.
    """
    lowered = {k.lower(): v for k, v in headers.items()}
    host = lowered.get("host") or "127.0.0.1"
    at = request_path.rfind("/v1/projects/")
    base = request_path[:at] if at > 0 else ""
    proto = (lowered.get("x-forwarded-proto") or "http").split(",")[0].strip().lower()
    return f"{host}{base}/v1", "https" if proto == "https" else "http"


def settings_document(write_key: str, host: str, protocol: str) -> dict[str, Any]:
    """The SDK settings for ``write_key``: deliver to ``protocol://host`` (``host`` includes ``/v1``)."""
    return {
        "integrations": {"Segment.io": {
            "apiKey": write_key,
            "apiHost": host,
            "protocol": protocol,
            "unbundledIntegrations": [],
            "addBundledMetadata": True,
            "maybeBundledConfigIds": {},
        }},
        "plan": {"track": {"__default": {"enabled": True, "integrations": {}}},
                 "identify": {"__default": {"enabled": True}},
                 "group": {"__default": {"enabled": True}}},
        "edgeFunction": {},
        "analyticsNextEnabled": True,
        "middlewareSettings": {},
        "enabledMiddleware": {},
        "metrics": {"sampleRate": 0},
        "legacyVideoPluginsEnabled": False,
        "remotePlugins": [],
    }
