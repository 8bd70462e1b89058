// DOM and formatting helpers. Everything user-supplied goes in as text, never as HTML.

/**
 * h("div", {class: "x", onclick: fn, dataset: {id: 1}}, "text", child, [more]) -> Element.
 * `style` may be an object (applied through the CSSOM, which a strict CSP allows).
 */
export function h(tag, props, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(props || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "class") el.className = value;
    else if (key === "dataset") Object.assign(el.dataset, value);
    else if (key === "style") Object.assign(el.style, value);
    else if (key.startsWith("on") && typeof value === "function") el.addEventListener(key.slice(2), value);
    else if (key === "text") el.textContent = value;
    else if (value === true) el.setAttribute(key, "");
    else el.setAttribute(key, String(value));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children) {
    if (child === undefined || child === null || child === false) continue;
    if (Array.isArray(child)) append(el, child);
    else if (child instanceof Node) el.appendChild(child);
    else el.appendChild(document.createTextNode(String(child)));
  }
}

export function clear(el) {
  while (el.firstChild) el.removeChild(el.firstChild);
  return el;
}

export const BANDS = {
  red: { label: "At risk", color: "#e5484d", text: "#c22a2f" },
  yellow: { label: "Needs attention", color: "#f5a524", text: "#a15c07" },
  green: { label: "Healthy", color: "#30a46c", text: "#18794e" },
};

export function bandPill(band) {
  const info = BANDS[band];
  if (!info) return h("span", { class: "pill", title: "No score yet" }, h("span", { class: "dot dot-grey" }), "Unscored");
  return h("span", { class: `pill pill-${band}`, dataset: { band } }, h("span", { class: `dot dot-${band}` }), info.label);
}

/** ▲ +5 (green) / ▼ −3 (red) / ▬ 0 (grey); "—" when there is no trend yet. */
export function trendBadge(trend, { suffix = "" } = {}) {
  if (trend === null || trend === undefined || Number.isNaN(Number(trend))) {
    return h("span", { class: "trend trend-flat", title: "No trend yet" }, "—");
  }
  const t = Number(trend);
  const title = `${t > 0 ? "Up" : t < 0 ? "Down" : "No change"} ${Math.abs(t)} points${suffix}`;
  if (t > 0) return h("span", { class: "trend trend-up", title }, h("span", { class: "arrow" }, "▲"), `+${t}`);
  if (t < 0) return h("span", { class: "trend trend-down", title }, h("span", { class: "arrow" }, "▼"), `−${Math.abs(t)}`);
  return h("span", { class: "trend trend-flat", title }, h("span", { class: "arrow" }, "▬"), "0");
}

export function scoreCell(score, band) {
  if (score === null || score === undefined) return h("span", { class: "muted" }, "—");
  const pct = Math.max(0, Math.min(100, Number(score)));
  return h("span", { class: "score" },
    h("span", { class: "score-num" }, String(score)),
    h("span", { class: `scorebar ${band || ""}`, "aria-hidden": "true" }, h("span", { style: { width: `${pct}%` } })));
}

const rtf = new Intl.RelativeTimeFormat("en", { numeric: "auto" });
const UNITS = [
  ["year", 365 * 86400], ["month", 30 * 86400], ["week", 7 * 86400],
  ["day", 86400], ["hour", 3600], ["minute", 60],
];

export function parseDate(value) {
  if (!value) return null;
  const d = new Date(value);
  return Number.isNaN(d.getTime()) ? null : d;
}

/** "3 days ago", "yesterday", "just now". */
export function relativeTime(value, now = Date.now()) {
  const d = parseDate(value);
  if (!d) return "—";
  const seconds = (d.getTime() - now) / 1000;
  const abs = Math.abs(seconds);
  if (abs < 45) return "just now";
  for (const [unit, size] of UNITS) {
    if (abs >= size || unit === "minute") return rtf.format(Math.round(seconds / size), unit);
  }
  return "just now";
}

const dateFmt = new Intl.DateTimeFormat("en", { year: "numeric", month: "short", day: "numeric" });
const dateTimeFmt = new Intl.DateTimeFormat("en", { month: "short", day: "numeric", hour: "2-digit", minute: "2-digit" });
const numFmt = new Intl.NumberFormat("en");

export function formatDate(value) {
  const d = parseDate(value);
  return d ? dateFmt.format(d) : "—";
}
export function formatDateTime(value) {
  const d = parseDate(value);
  return d ? dateTimeFmt.format(d) : "—";
}
export function formatNumber(n) {
  return n === null || n === undefined || Number.isNaN(Number(n)) ? "—" : numFmt.format(Number(n));
}
/** "2025-05-03" -> "May 3" (no time-zone shift: the date is a UTC day). */
export function shortDay(iso) {
  const [y, m, d] = String(iso).split("-").map(Number);
  if (!y || !m || !d) return String(iso);
  return new Date(Date.UTC(y, m - 1, d)).toLocaleDateString("en", { month: "short", day: "numeric", timeZone: "UTC" });
}

export function timeEl(value) {
  const d = parseDate(value);
  if (!d) return h("span", { class: "muted" }, "—");
  return h("time", { datetime: d.toISOString(), title: d.toLocaleString() }, relativeTime(value));
}

const AVATAR_COLORS = ["#4f46e5", "#0ea5e9", "#14b8a6", "#f97316", "#db2777", "#7c3aed", "#059669", "#2563eb", "#ca8a04", "#dc2626"];
function hash(s) {
  let x = 0;
  for (const ch of String(s)) x = (x * 31 + ch.codePointAt(0)) >>> 0;
  return x;
}
export function initials(name) {
  const words = String(name || "?").replace(/[^\p{L}\p{N}\s]/gu, " ").trim().split(/\s+/).filter(Boolean);
  if (!words.length) return "?";
  return (words[0][0] + (words.length > 1 ? words[1][0] : words[0][1] || "")).toUpperCase();
}
export function avatar(name, key, cls = "avatar") {
  return h("span", { class: cls, "aria-hidden": "true", style: { background: AVATAR_COLORS[hash(key || name) % AVATAR_COLORS.length] } }, initials(name));
}

/** Human label for a trait key: "employee_count" -> "Employee count". */
const ACRONYMS = new Set(["mrr", "arr", "id", "url", "api", "sso", "nps", "csm", "dau", "mau", "ip", "acv"]);
export function humanize(key) {
  if (ACRONYMS.has(String(key).toLowerCase())) return String(key).toUpperCase();
  const s = String(key).replace(/([a-z])([A-Z])/g, "$1 $2").replace(/[_.-]+/g, " ").trim();
  return s.charAt(0).toUpperCase() + s.slice(1);
}
export function traitValue(v) {
  if (v === null || v === undefined) return "—";
  if (typeof v === "number") return formatNumber(v);
  if (typeof v === "boolean") return v ? "Yes" : "No";
  if (typeof v === "object") return JSON.stringify(v);
  const d = /^\d{4}-\d{2}-\d{2}T/.test(v) ? parseDate(v) : null;
  return d ? formatDate(d) : String(v);
}

export function debounce(fn, ms) {
  let t;
  return (...args) => { clearTimeout(t); t = setTimeout(() => fn(...args), ms); };
}

export function durationMs(ms) {
  if (ms === null || ms === undefined) return "—";
  const s = Number(ms) / 1000;
  if (s < 1) return `${Math.round(Number(ms))} ms`;
  if (s < 60) return `${s.toFixed(1)} s`;
  if (s < 3600) return `${Math.round(s / 60)} min`;
  return `${(s / 3600).toFixed(1)} h`;
}
