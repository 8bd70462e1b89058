// Drives @segment/analytics-node (the npm package in node_modules) against a host.
// stdin: {"writeKey", "host", "calls": [["identify", {...}], ["track", {...}], ...]}
// stdout: one JSON line per HTTP response the SDK got ({"status", "url", "body"}) or error it reported.
"use strict";
const { Analytics } = require("@segment/analytics-node");

const input = JSON.parse(require("fs").readFileSync(0, "utf8"));
const analytics = new Analytics({ writeKey: input.writeKey, host: input.host, maxRetries: 0 });
analytics.on("http_response", (r) => console.log(JSON.stringify({ status: r.status, url: r.url, body: r.body })));
analytics.on("error", (e) => console.log(JSON.stringify({ error: String((e && (e.reason || e.code)) || e) })));
for (const [method, args] of input.calls) analytics[method](args);
analytics.closeAndFlush({ timeout: 20000 }).then(() => process.exit(0), (e) => {
  console.log(JSON.stringify({ error: String(e) }));
  process.exit(1);
});
