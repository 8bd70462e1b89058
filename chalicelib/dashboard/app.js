// streamfold dashboard: sign-in, accounts list, account page, pipeline status. Hash routing.

import { api, auth, ApiError, onUnauthorized } from "./api.js";
import {
  activeUsersLine, destroyCharts, factorBars, factorLabel, factorMax, gauge, scoreHistory, usageBars,
} from "./charts.js";
import {
  BANDS, avatar, bandPill, clear, debounce, durationMs, formatDate, formatDateTime, formatNumber, h, humanize,
  relativeTime, scoreCell, timeEl, traitValue, trendBadge,
} from "./ui.js";

const $ = (id) => document.getElementById(id);
const PAGE_SIZE = 50;
const COUNT_PAGE = 50;
const COUNT_MAX_PAGES = 20;

let viewSeq = 0; // bumped on every navigation; async work for an older view is dropped
let statusTimer = null;

// ---------------------------------------------------------------- sign-in / sign-out

function showSignIn(message, kind = "error") {
  stopStatusPolling();
  destroyCharts();
  viewSeq++;
  $("shell").hidden = true;
  $("signin").hidden = false;
  const msg = $("signin-message");
  msg.hidden = !message;
  msg.textContent = message || "";
  msg.className = `signin-message${kind === "info" ? " info" : ""}`;
  document.title = "Sign in · streamfold";
  const input = $("token-input");
  input.value = "";
  input.focus();
}

function showShell() {
  $("signin").hidden = true;
  $("shell").hidden = false;
  startStatusPolling();
  route();
}

async function onSignIn(event) {
  event.preventDefault();
  const input = $("token-input");
  const button = $("signin-submit");
  const msg = $("signin-message");
  const token = input.value.trim();
  if (!token) {
    msg.hidden = false;
    msg.className = "signin-message";
    msg.textContent = "Enter your API token.";
    return;
  }
  button.disabled = true;
  button.textContent = "Signing in…";
  try {
    await api.accounts({ limit: 1 }, { token });
    auth.set(token);
    showShell();
  } catch (err) {
    msg.hidden = false;
    msg.className = "signin-message";
    msg.textContent = err instanceof ApiError && err.status === 401
      ? "That API token was not accepted. Check it and try again."
      : `Could not sign in: ${err.message}`;
  } finally {
    button.disabled = false;
    button.textContent = "Sign in";
  }
}

function signOut() {
  auth.clear();
  summaryCache = null;
  listState.items = [];
  showSignIn("You have signed out.", "info");
}

onUnauthorized(() => {
  if (!auth.get()) return; // a failed sign-in attempt: the form reports it itself
  auth.clear();
  summaryCache = null;
  showSignIn("Your session has expired or the API token was revoked. Please sign in again.");
});

// ---------------------------------------------------------------- routing

function route() {
  if (!auth.get()) { showSignIn(); return; }
  destroyCharts();
  const seq = ++viewSeq;
  const hash = location.hash.replace(/^#/, "") || "/";
  const view = $("view");
  clear(view);
  hideBanner();
  let match;
  if ((match = hash.match(/^\/accounts\/([^/?]+)$/))) {
    setNav("accounts");
    renderAccount(view, decodeURIComponent(match[1]), seq);
  } else if (hash === "/status") {
    setNav("status");
    renderStatus(view, seq);
  } else {
    setNav("accounts");
    renderAccounts(view, seq);
  }
  window.scrollTo(0, 0);
}

function setNav(name) {
  for (const a of document.querySelectorAll("[data-nav]")) a.classList.toggle("active", a.dataset.nav === name);
}

const current = (seq) => seq === viewSeq;

function showBanner(text) {
  const b = $("banner");
  b.textContent = text;
  b.hidden = false;
}
function hideBanner() { $("banner").hidden = true; }

function errorBox(err) {
  return h("div", { class: "error-box", role: "alert" }, err instanceof Error ? err.message : String(err));
}

function reportError(err) {
  if (err && err.name === "AbortError") return;
  if (err instanceof ApiError && err.status === 401) return; // handled by onUnauthorized
  console.error(err);
  showBanner(err instanceof Error ? err.message : String(err));
}

// ---------------------------------------------------------------- accounts list

const SORTS = {
  name: { label: "Account", order: "asc" },
  score: { label: "Score", order: "asc" },
  last_seen: { label: "Last seen", order: "desc" },
  active_users: { label: "Active users (7d / 30d)", order: "desc" },
};

const listState = {
  sort: "score", order: "asc", band: null, plan: null,
  items: [], nextCursor: null, loaded: false, loading: false, seq: 0, error: null,
};
const accountNames = new Map(); // account_id -> name, from every list page seen (search shows users' accounts)
let summaryCache = null; // {at, counts: {total, red, yellow, green}, capped: {...}, plans: [...]}

async function countAccounts(params) {
  let cursor = null;
  let count = 0;
  const plans = new Set();
  for (let page = 0; page < COUNT_MAX_PAGES; page++) {
    const res = await api.accounts({ ...params, limit: COUNT_PAGE, cursor, sort: "name", order: "asc" });
    count += res.items.length;
    for (const a of res.items) {
      if (a.plan) plans.add(a.plan);
      accountNames.set(a.account_id, a.name);
    }
    cursor = res.next_cursor;
    if (!cursor) return { count, capped: false, plans };
  }
  return { count, capped: true, plans };
}

async function loadSummary() {
  if (summaryCache && Date.now() - summaryCache.at < 60_000) return summaryCache;
  const [total, red, yellow, green] = await Promise.all([
    countAccounts({}), countAccounts({ band: "red" }), countAccounts({ band: "yellow" }), countAccounts({ band: "green" }),
  ]);
  summaryCache = {
    at: Date.now(),
    results: { total, red, yellow, green },
    plans: [...total.plans].sort((a, b) => a.localeCompare(b)),
  };
  return summaryCache;
}

function renderAccounts(view, seq) {
  document.title = "Accounts · streamfold";
  const tiles = h("div", { class: "tiles", "data-testid": "summary-tiles" });
  const planSelect = h("select", { class: "select", "aria-label": "Filter by plan", "data-testid": "plan-filter" },
    h("option", { value: "" }, "All plans"));
  const bandButtons = h("div", { class: "segmented", role: "group", "aria-label": "Filter by health band", "data-testid": "band-filter" });
  const searchBox = renderSearch();
  const tableHost = h("div", { class: "table-wrap" });
  const foot = h("div", { class: "table-foot" });

  view.append(
    h("div", { class: "page-head" },
      h("div", null, h("h1", null, "Accounts"), h("p", { class: "muted" }, "Every customer account, least healthy first."))),
    tiles,
    h("section", { class: "card" },
      h("div", { class: "toolbar" }, bandButtons, planSelect, h("div", { class: "spacer" }), searchBox),
      tableHost, foot),
  );

  // --- summary tiles
  const tileDefs = [
    { key: null, label: "All accounts", cls: "", foot: "tracked in streamfold" },
    { key: "red", label: BANDS.red.label, cls: "red", foot: "score in the red band" },
    { key: "yellow", label: BANDS.yellow.label, cls: "yellow", foot: "score in the yellow band" },
    { key: "green", label: BANDS.green.label, cls: "green", foot: "score in the green band" },
  ];
  const tileEls = tileDefs.map((t) => {
    const value = h("div", { class: "tile-value" }, h("div", { class: "skeleton", style: { width: "48px", height: "30px" } }));
    const el = h("button", { type: "button", class: `tile ${t.cls}`, "data-testid": `tile-${t.key || "all"}`, onclick: () => setBand(t.key) },
      h("div", { class: "tile-label" }, t.key ? h("span", { class: `dot dot-${t.key}` }) : null, t.label),
      value,
      h("div", { class: "tile-foot" }, t.foot));
    el._value = value;
    el._key = t.key;
    tiles.append(el);
    return el;
  });

  loadSummary().then((summary) => {
    if (!current(seq)) return;
    for (const el of tileEls) {
      const r = summary.results[el._key || "total"];
      clear(el._value).append(`${formatNumber(r.count)}${r.capped ? "+" : ""}`);
    }
    for (const plan of summary.plans) planSelect.append(h("option", { value: plan }, humanize(plan)));
    planSelect.value = listState.plan || "";
  }).catch((err) => {
    if (!current(seq)) return;
    for (const el of tileEls) clear(el._value).append("—");
    reportError(err);
  });

  // --- band filter
  const bandDefs = [[null, "All"], ["red", "Red"], ["yellow", "Yellow"], ["green", "Green"]];
  for (const [key, label] of bandDefs) {
    bandButtons.append(h("button", {
      type: "button", dataset: { band: key || "all" }, "aria-pressed": String(listState.band === key), onclick: () => setBand(key),
    }, key ? h("span", { class: `dot dot-${key}` }) : null, label));
  }

  function syncFilters() {
    for (const b of bandButtons.children) {
      const on = (b.dataset.band === "all" ? null : b.dataset.band) === listState.band;
      b.classList.toggle("active", on);
      b.setAttribute("aria-pressed", String(on));
    }
    for (const el of tileEls) el.classList.toggle("active", el._key === listState.band && listState.band !== null);
  }

  function setBand(band) {
    if (listState.band === band) return;
    listState.band = band;
    syncFilters();
    reload();
  }

  planSelect.addEventListener("change", () => {
    listState.plan = planSelect.value || null;
    reload();
  });

  // --- table
  function headerCell(key, cls = "") {
    const sorted = listState.sort === key;
    const ind = sorted ? (listState.order === "asc" ? "▲" : "▼") : "";
    return h("th", { class: `sortable ${sorted ? "sorted" : ""} ${cls}`, "aria-sort": sorted ? (listState.order === "asc" ? "ascending" : "descending") : "none" },
      h("button", { type: "button", dataset: { sort: key }, onclick: () => setSort(key) }, SORTS[key].label, h("span", { class: "sort-ind" }, ind)));
  }

  function setSort(key) {
    if (listState.sort === key) listState.order = listState.order === "asc" ? "desc" : "asc";
    else { listState.sort = key; listState.order = SORTS[key].order; }
    reload();
  }

  function row(a) {
    const href = `#/accounts/${encodeURIComponent(a.account_id)}`;
    return h("tr", { class: "clickable", "data-testid": "account-row", dataset: { accountId: a.account_id, scored: String(a.score !== null && a.score !== undefined) },
      onclick: (e) => { if (!e.target.closest("a")) location.hash = href; } },
    h("td", null, h("div", { class: "acct-cell" }, avatar(a.name || a.account_id, a.account_id),
      h("div", null, h("a", { class: "acct-name", href }, a.name || a.account_id),
        a.name && a.name !== a.account_id ? h("span", { class: "acct-id" }, a.account_id) : null))),
    h("td", null, bandPill(a.band)),
    h("td", null, scoreCell(a.score, a.band)),
    h("td", null, trendBadge(a.trend)),
    h("td", null, a.plan ? h("span", { class: "pill pill-neutral" }, humanize(a.plan)) : h("span", { class: "muted" }, "—")),
    h("td", { class: "nowrap" }, timeEl(a.last_seen)),
    h("td", { class: "right num" }, h("strong", null, formatNumber(a.active_users_7d)), h("span", { class: "muted" }, ` / ${formatNumber(a.active_users_30d)}`)));
  }

  function renderTable() {
    clear(tableHost);
    clear(foot);
    if (listState.error && !listState.items.length) {
      tableHost.append(h("div", { class: "card-body" }, errorBox(listState.error)));
      foot.append(h("button", { type: "button", class: "btn btn-sm", onclick: reload }, "Retry"));
      return;
    }
    const table = h("table", { class: "table", "data-testid": "accounts-table" },
      h("thead", null, h("tr", null,
        headerCell("name"), h("th", null, "Health"), headerCell("score"), h("th", null, "Trend"), h("th", null, "Plan"),
        headerCell("last_seen"), headerCell("active_users", "right"))),
      h("tbody", null, listState.items.map(row)));
    if (listState.loading && !listState.items.length) {
      const tbody = table.querySelector("tbody");
      for (let i = 0; i < 6; i++) {
        tbody.append(h("tr", null, Array.from({ length: 7 }, (_, j) => h("td", null, h("div", { class: "skeleton", style: { width: j === 0 ? "160px" : "60px" } })))));
      }
    }
    tableHost.append(table);
    if (!listState.loading && !listState.items.length) {
      tableHost.append(h("div", { class: "empty", "data-testid": "accounts-empty" },
        h("strong", null, listState.band || listState.plan ? "No accounts match these filters" : "No accounts yet"),
        listState.band || listState.plan ? "Try another band or plan." : "Accounts appear here once your product sends Segment group calls."));
    }
    if (listState.items.length) foot.append(h("span", null, `Showing ${formatNumber(listState.items.length)} account${listState.items.length === 1 ? "" : "s"}`));
    if (listState.loading && listState.items.length) foot.append(h("span", { class: "spinner", "aria-label": "Loading" }));
    else if (listState.nextCursor) foot.append(h("button", { type: "button", class: "btn btn-sm", "data-testid": "load-more", onclick: loadMore }, "Load more"));
    if (listState.error && listState.items.length) foot.append(h("span", { class: "trend-down" }, listState.error.message));
  }

  async function fetchPage(cursor) {
    const mySeq = ++listState.seq;
    listState.loading = true;
    listState.error = null;
    renderTable();
    try {
      const res = await api.accounts({
        sort: listState.sort, order: listState.order, band: listState.band, plan: listState.plan, limit: PAGE_SIZE, cursor,
      });
      if (mySeq !== listState.seq || !current(seq)) return;
      listState.items = cursor ? listState.items.concat(res.items) : res.items;
      listState.nextCursor = res.next_cursor || null;
      listState.loaded = true;
    } catch (err) {
      if (mySeq !== listState.seq || !current(seq)) return;
      if (!(err instanceof ApiError && err.status === 401)) listState.error = err;
    } finally {
      if (mySeq === listState.seq) listState.loading = false;
    }
    if (current(seq)) renderTable();
  }

  function reload() {
    listState.items = [];
    listState.nextCursor = null;
    fetchPage(null);
  }
  function loadMore() { if (listState.nextCursor && !listState.loading) fetchPage(listState.nextCursor); }

  syncFilters();
  if (listState.loaded && listState.items.length) renderTable(); // back from an account: keep the list
  else reload();
}

function renderSearch() {
  const input = h("input", { type: "search", class: "input", placeholder: "Search accounts and users…", "aria-label": "Search", "data-testid": "search-input", autocomplete: "off" });
  const results = h("div", { class: "search-results", role: "listbox", "data-testid": "search-results", hidden: true });
  const icon = document.createElementNS("http://www.w3.org/2000/svg", "svg");
  icon.setAttribute("viewBox", "0 0 20 20");
  icon.setAttribute("class", "search-icon");
  icon.setAttribute("aria-hidden", "true");
  const path = document.createElementNS("http://www.w3.org/2000/svg", "path");
  path.setAttribute("d", "M8.5 3a5.5 5.5 0 1 0 3.4 9.8l3.6 3.7 1.1-1.1-3.7-3.6A5.5 5.5 0 0 0 8.5 3Zm0 1.5a4 4 0 1 1 0 8 4 4 0 0 1 0-8Z");
  path.setAttribute("fill", "currentColor");
  icon.append(path);
  const wrap = h("div", { class: "search" }, icon, input, results);
  let seq = 0;

  const hrefFor = (item) => `#/accounts/${encodeURIComponent(item.kind === "user" ? item.account_id : item.account_id || item.id)}`;

  const run = debounce(async () => {
    const q = input.value.trim();
    const mine = ++seq;
    if (!q) { results.hidden = true; return; }
    try {
      const res = await api.search(q, 10);
      if (mine !== seq) return;
      clear(results);
      const items = (res.items || []).filter((it) => it.kind === "account" || it.account_id);
      if (!items.length) results.append(h("div", { class: "search-empty" }, `No accounts or users match “${q}”.`));
      for (const it of items) {
        results.append(h("a", { class: "search-item", href: hrefFor(it), role: "option", "data-testid": "search-result", onclick: () => { results.hidden = true; } },
          h("span", { class: "kind" }, it.kind === "user" ? "User" : "Account"),
          h("span", { class: "name" }, it.name || it.id,
            it.kind === "user" ? h("small", null, `at ${accountNames.get(it.account_id) || it.account_id}`) : null),
          it.score !== null && it.score !== undefined ? scoreCell(it.score, it.band) : bandPill(it.band)));
      }
      results.hidden = false;
    } catch (err) {
      if (mine !== seq) return;
      clear(results).append(h("div", { class: "search-empty" }, err.message));
      results.hidden = false;
    }
  }, 200);

  input.addEventListener("input", run);
  input.addEventListener("keydown", (e) => {
    if (e.key === "Escape") { results.hidden = true; input.blur(); }
    if (e.key === "Enter") {
      const first = results.querySelector(".search-item");
      if (first && !results.hidden) { location.hash = first.getAttribute("href"); results.hidden = true; }
    }
  });
  input.addEventListener("focus", () => { if (input.value.trim() && results.childElementCount) results.hidden = false; });
  document.addEventListener("click", (e) => { if (!wrap.contains(e.target)) results.hidden = true; });
  return wrap;
}

// ---------------------------------------------------------------- account page

function card(title, { sub, actions, body, testid, bodyClass = "card-body", cls = "" } = {}) {
  return h("section", { class: `card ${cls}`, "data-testid": testid },
    h("div", { class: "card-head" }, h("h2", null, title, sub ? h("span", { class: "sub" }, sub) : null), actions || null),
    h("div", { class: bodyClass }, body));
}

function chartBox(testid, cls = "") {
  const canvas = h("canvas", { "data-testid": testid, role: "img" });
  const box = h("div", { class: `chart-box ${cls}` }, canvas);
  return { box, canvas };
}

function chartMessage(box, text) {
  box.querySelector(".chart-empty")?.remove();
  if (text) box.append(h("div", { class: "chart-empty" }, text));
}

function describeValue(f) {
  if (f.detail) return f.detail;
  const v = f.value;
  if (v === null || v === undefined) return "no data";
  if (typeof v === "number") return Number.isInteger(v) ? formatNumber(v) : String(Math.round(v * 100) / 100);
  return String(v);
}

function describeFactor(f) {
  const parts = [`Weight ${formatWeight(f.weight)}`, describeValue(f)];
  if (f.normalised !== null && f.normalised !== undefined) parts.push(`Normalised ${Math.round(Number(f.normalised) * 100)}%`);
  return parts;
}

function formatWeight(w) {
  const n = Number(w);
  if (Number.isNaN(n)) return "—";
  return n <= 1 ? `${Math.round(n * 100)}%` : formatNumber(n);
}

async function renderAccount(view, accountId, seq) {
  document.title = "Account · streamfold";
  const back = h("a", { class: "back", href: "#/" }, "← All accounts");
  const heroHost = h("section", { class: "card hero", "data-testid": "account-header" },
    h("div", { class: "skeleton", style: { width: "40%", height: "24px" } }),
    h("div", { class: "skeleton", style: { width: "70%" } }),
    h("div", { class: "skeleton", style: { width: "100%", height: "60px" } }));
  const gaugeCanvas = h("canvas", { "data-testid": "chart-gauge", role: "img", "aria-label": "Health score gauge" });
  const gaugeCenter = h("div", { class: "gauge-center" });
  const scoreMeta = h("div", { class: "scorecard-meta" });
  const scoreFoot = h("div", { class: "scorecard-foot" });
  const scorecard = h("section", { class: "card scorecard", "data-testid": "score-card" },
    h("h2", null, "Health score"),
    h("div", { class: "gauge" }, gaugeCanvas, gaugeCenter), scoreMeta, scoreFoot);

  const history = chartBox("chart-score-history", "grow");
  const factors = chartBox("chart-factors");
  const factorList = h("div", { class: "factors", "data-testid": "factor-list" });
  const usage = chartBox("chart-usage", "tall");
  const active = chartBox("chart-active-users", "tall");
  let days = 30;
  const daysSel = h("div", { class: "segmented", role: "group", "aria-label": "Days", "data-testid": "days-selector" },
    [7, 30, 90].map((d) => h("button", { type: "button", class: d === days ? "active" : "", dataset: { days: String(d) }, onclick: () => setDays(d) }, `${d}d`)));
  const usageSub = h("span", null, "last 30 days");
  const activeSub = h("span", null, "last 30 days");

  const featuresBody = h("div");
  const usersList = h("ul", { class: "list", "data-testid": "users-list" });
  const usersFoot = h("div", { class: "table-foot" });
  const timelineList = h("ul", { class: "list", "data-testid": "timeline" });
  const timelineFoot = h("div", { class: "table-foot" });
  const usersSub = h("span");

  view.append(
    back,
    h("div", { class: "grid grid-hero" }, heroHost, scorecard),
    h("div", { class: "grid grid-2" },
      card("Score history", { sub: "last 30 days", body: history.box, testid: "card-score-history", cls: "stretch" }),
      card("Why this score", { sub: "points per factor", body: [factors.box, factorList], testid: "card-factors" })),
    h("div", { class: "grid grid-usage" },
      card("Product usage", { sub: [usageSub, " · daily events by name"], actions: daysSel, body: usage.box, testid: "card-usage" }),
      card("Active users", { sub: activeSub, body: active.box, testid: "card-active-users" })),
    h("div", { class: "grid grid-3" },
      card("Key features", { sub: "most used", body: featuresBody, bodyClass: "card-body flush", testid: "card-features" }),
      card("Users", { sub: usersSub, body: [h("div", { class: "scroll" }, usersList), usersFoot], bodyClass: "card-body flush", testid: "card-users" }),
      card("Recent activity", { sub: "newest first", body: [h("div", { class: "scroll" }, timelineList), timelineFoot], bodyClass: "card-body flush", testid: "card-timeline" })),
  );

  // --- account header
  api.account(accountId).then((acct) => {
    if (!current(seq)) return;
    document.title = `${acct.name || acct.account_id} · streamfold`;
    renderHero(heroHost, acct);
    renderFeatures(featuresBody, acct.key_features || [], acct.key_features_wau || null);
    usersSub.textContent = `${formatNumber(acct.users_count)} total`;
    if (!acct.score) renderScore(null);
  }).catch((err) => {
    if (!current(seq)) return;
    if (err instanceof ApiError && err.status === 404) {
      clear(view).append(back, h("section", { class: "card" }, h("div", { class: "empty", "data-testid": "account-not-found" },
        h("strong", null, "Account not found"), `There is no account “${accountId}” in this workspace.`)));
      destroyCharts();
      return;
    }
    clear(heroHost).append(errorBox(err));
    reportError(err);
  });

  // --- score, history, factors
  function renderScore(s) {
    clear(gaugeCenter);
    clear(scoreMeta);
    clear(scoreFoot);
    if (!s || s.score === null || s.score === undefined) {
      gauge(gaugeCanvas, 0, null);
      gaugeCenter.append(h("div", { class: "gauge-score" }, "—"), h("div", { class: "gauge-max" }, "not scored yet"));
      chartMessage(history.box, "No score history yet.");
      chartMessage(factors.box, "The score appears after the first events are projected.");
      return;
    }
    gauge(gaugeCanvas, s.score, s.band);
    gaugeCenter.append(h("div", { class: `gauge-score ${s.band || ""}`, "data-testid": "score-value" }, String(s.score)), h("div", { class: "gauge-max" }, "out of 100"));
    scoreMeta.append(bandPill(s.band), trendBadge(s.trend), h("span", { class: "muted small" }, "vs. 7 days ago"));
    if (s.as_of || s.model_version !== undefined) {
      scoreFoot.append(`As of ${formatDateTime(s.as_of)}`, s.model_version !== undefined && s.model_version !== null ? ` · model v${s.model_version}` : "");
    }
    const hist = s.history || [];
    if (hist.length) scoreHistory(history.canvas, hist);
    else chartMessage(history.box, "No score history yet.");
    const fs = s.factors || [];
    if (fs.length) {
      factors.box.classList.add("short");
      factorBars(factors.canvas, fs, describeFactor);
      clear(factorList);
      for (const f of fs) {
        const max = factorMax(f, fs);
        factorList.append(h("div", { class: "factor", "data-testid": "factor" },
          h("div", { class: "factor-label" }, factorLabel(f)),
          h("div", { class: "factor-pts" }, `${Math.round((Number(f.points) || 0) * 10) / 10}`, h("span", { class: "muted" }, ` / ${Math.round(max * 10) / 10} pts`)),
          h("div", { class: "factor-meta" }, describeFactor(f).join(" · "))));
      }
    } else {
      chartMessage(factors.box, "No factor breakdown available.");
    }
  }

  api.score(accountId).then((s) => { if (current(seq)) renderScore(s); }).catch((err) => {
    if (!current(seq)) return;
    if (err instanceof ApiError && err.status === 404) { renderScore(null); return; }
    chartMessage(history.box, err.message);
    chartMessage(factors.box, err.message);
    reportError(err);
  });

  // --- usage + active users
  let usageSeq = 0;
  async function loadUsage() {
    const mine = ++usageSeq;
    usageSub.textContent = `last ${days} days`;
    activeSub.textContent = `daily, last ${days} days`;
    try {
      const u = await api.usage(accountId, days);
      if (!current(seq) || mine !== usageSeq) return;
      const anyEvents = (u.series || []).some((s) => s.counts.some((c) => c > 0));
      chartMessage(usage.box, anyEvents ? null : `No events in the last ${days} days.`);
      usageBars(usage.canvas, u);
      activeUsersLine(active.canvas, u);
    } catch (err) {
      if (!current(seq) || mine !== usageSeq) return;
      chartMessage(usage.box, err.message);
      reportError(err);
    }
  }
  function setDays(d) {
    days = d;
    for (const b of daysSel.children) b.classList.toggle("active", Number(b.dataset.days) === d);
    loadUsage();
  }
  loadUsage();

  // --- users and timeline (cursor pagination)
  paged({
    list: usersList, foot: usersFoot, seq, testid: "users-more", empty: "No users yet.",
    fetch: (cursor) => api.users(accountId, { limit: 25, cursor }),
    row: (u) => {
      const t = u.traits || {};
      const name = t.name || [t.firstName, t.lastName].filter(Boolean).join(" ") || t.email || u.user_id;
      const meta = [t.email && t.email !== name ? t.email : null, t.title || t.role, `since ${formatDate(u.first_seen)}`].filter(Boolean).join(" · ");
      return h("li", { "data-testid": "user-row" }, avatar(name, u.user_id, "user-avatar"),
        h("div", { class: "grow" }, h("div", { class: "title" }, name), h("div", { class: "meta" }, meta)),
        h("div", { class: "right" }, timeEl(u.last_seen)));
    },
  });
  paged({
    list: timelineList, foot: timelineFoot, seq, testid: "timeline-more", empty: "No activity yet.",
    fetch: (cursor) => api.timeline(accountId, { limit: 25, cursor }),
    row: (e) => {
      const type = String(e.type || "track").toLowerCase();
      const icons = { track: "T", page: "P", screen: "S", identify: "I", group: "G" };
      const title = e.name || { page: "Page view", screen: "Screen view", identify: "Identified", group: "Account traits updated" }[type] || humanize(type);
      return h("li", { "data-testid": "timeline-item" },
        h("span", { class: `ev-icon ev-${icons[type] ? type : "other"}`, title: type }, icons[type] || "•"),
        h("div", { class: "grow" }, h("div", { class: "title" }, title), h("div", { class: "meta" }, e.userId ? `${humanize(type)} · ${e.userId}` : humanize(type))),
        h("div", { class: "right", title: formatDateTime(e.timestamp) }, timeEl(e.timestamp)));
    },
  });
}

function paged({ list, foot, seq, fetch, row, empty, testid }) {
  let cursor = null;
  let loading = false;
  async function more() {
    if (loading) return;
    loading = true;
    clear(foot).append(h("span", { class: "spinner", "aria-label": "Loading" }));
    try {
      const res = await fetch(cursor);
      if (!current(seq)) return;
      for (const item of res.items || []) list.append(row(item));
      cursor = res.next_cursor || null;
      clear(foot);
      if (!list.childElementCount) foot.append(empty);
      if (cursor) foot.append(h("button", { type: "button", class: "btn btn-sm", "data-testid": testid, onclick: more }, "Load more"));
      foot.hidden = !foot.childElementCount;
    } catch (err) {
      if (!current(seq)) return;
      clear(foot).append(h("span", { class: "trend-down" }, err.message), h("button", { type: "button", class: "btn btn-sm", onclick: more }, "Retry"));
      reportError(err);
    } finally {
      loading = false;
    }
  }
  more();
}

function renderHero(host, acct) {
  const traits = { ...(acct.traits || {}) };
  delete traits.name;
  const preferred = ["plan", "seats", "industry", "employees", "mrr", "arr", "region", "country", "website", "created_at", "createdAt"];
  const keys = Object.keys(traits).sort((a, b) => {
    const ia = preferred.indexOf(a); const ib = preferred.indexOf(b);
    return (ia < 0 ? 99 : ia) - (ib < 0 ? 99 : ib) || a.localeCompare(b);
  });
  const au = acct.active_users || {};
  const stat = (label, value, sub) => h("div", { class: "stat" }, h("div", { class: "stat-label" }, label), h("div", { class: "stat-value" }, value), sub ? h("div", { class: "stat-sub" }, sub) : null);
  clear(host).append(
    h("div", { class: "hero-top" }, avatar(acct.name || acct.account_id, acct.account_id),
      h("div", null, h("h1", { "data-testid": "account-name" }, acct.name || acct.account_id), h("span", { class: "acct-id" }, acct.account_id))),
    keys.length ? h("div", { class: "traits", "data-testid": "traits" }, keys.map((k) =>
      h("span", { class: "trait", title: `${humanize(k)}: ${traitValue(traits[k])}` }, h("b", null, humanize(k)), h("span", null, k === "plan" ? humanize(traits[k]) : traitValue(traits[k]))))) : null,
    h("div", { class: "stats" },
      stat("Users", formatNumber(acct.users_count)),
      stat("Active today", formatNumber(au["1d"])),
      stat("Active 7d", formatNumber(au["7d"])),
      stat("Active 30d", formatNumber(au["30d"])),
      stat("Last seen", relativeTime(acct.last_seen), acct.first_seen ? `customer since ${formatDate(acct.first_seen)}` : null)),
  );
}

function renderFeatures(host, features, wau) {
  clear(host);
  if (!features.length) { host.append(h("div", { class: "empty" }, "No key-feature usage recorded yet.")); return; }
  const max = Math.max(...features.map((f) => Number(f.count) || 0), 1);
  host.append(h("ul", { class: "list", "data-testid": "key-features" }, features.map((f) => h("li", null,
    h("div", { class: "grow" },
      h("div", { class: "title" }, f.name),
      h("div", { class: "meta" }, f.last_used ? `last used ${relativeTime(f.last_used)}` : "never used",
        // View version 3: the feature's distinct users in the last 7 days (null on version 2).
        wau && f.name in wau ? ` · ${formatNumber(wau[f.name])} users this week` : ""),
      h("div", { class: "feature-bar" }, h("span", { style: { width: `${Math.round(((Number(f.count) || 0) / max) * 100)}%` } }))),
    h("div", { class: "right num" }, h("strong", null, formatNumber(f.count)), " uses")))));
}

// ---------------------------------------------------------------- pipeline status

function mappingHealth(m) {
  const state = String(m.state || "").toLowerCase();
  if (state !== "enabled") return state === "disabled" ? "grey" : "yellow"; // disabled = blue/green standby
  if ((m.lag_records || 0) > 1000 || (m.iterator_age_ms || 0) > 60_000) return "yellow";
  return "green";
}

async function renderStatus(view, seq) {
  document.title = "Pipeline status · streamfold";
  const body = h("div", null, h("div", { class: "card" }, h("div", { class: "card-body" }, h("span", { class: "spinner" }))));
  const refresh = h("button", { type: "button", class: "btn", onclick: () => load() }, "Refresh");
  view.append(
    h("div", { class: "page-head" },
      h("div", null, h("h1", null, "Pipeline status"), h("p", { class: "muted" }, "Stream mappings feeding the projections, and how far behind they are.")),
      refresh),
    body);

  async function load() {
    refresh.disabled = true;
    try {
      const st = await api.status();
      if (!current(seq)) return;
      updateFooter(st);
      const mappings = st.mappings || [];
      const projections = st.projections || [];
      clear(body).append(
        card("Event source mappings", {
          sub: `${mappings.length} mapping${mappings.length === 1 ? "" : "s"}`, bodyClass: "card-body flush", testid: "status-mappings",
          body: mappings.length ? h("div", { class: "table-wrap" }, h("table", { class: "table table-compact" },
            h("thead", null, h("tr", null, h("th", null, "Mapping"), h("th", null, "Function"), h("th", null, "State"), h("th", { class: "right" }, "Lag (records)"), h("th", { class: "right" }, "Iterator age"))),
            h("tbody", null, mappings.map((m) => {
              const health = mappingHealth(m);
              return h("tr", null,
                h("td", { class: "mono", title: m.uuid }, String(m.uuid || "").slice(0, 8) || "—"),
                h("td", null, m.function || "—"),
                h("td", null, h("span", { class: `pill pill-${health} state` }, h("span", { class: `dot dot-${health}` }), String(m.state || "unknown").toLowerCase())),
                h("td", { class: "right num" }, formatNumber(m.lag_records)),
                h("td", { class: "right num" }, durationMs(m.iterator_age_ms)));
            })))) : h("div", { class: "empty" }, "No mappings."),
        }),
        h("div", { class: "grid" }),
        card("Projections", {
          sub: `${projections.length}`, bodyClass: "card-body flush", testid: "status-projections",
          body: projections.length ? h("table", { class: "table table-compact" },
            h("thead", null, h("tr", null, h("th", null, "Projection"), h("th", null, "Version"), h("th", null, "Serving reads"))),
            h("tbody", null, projections.map((p) => h("tr", null,
              h("td", null, h("strong", null, p.name)),
              h("td", { class: "num" }, `v${p.version}`),
              h("td", null, p.active ? h("span", { class: "pill pill-green" }, h("span", { class: "dot dot-green" }), "active") : h("span", { class: "pill" }, "inactive")))))) : h("div", { class: "empty" }, "No projections."),
        }),
      );
      body.querySelector(".grid").style.marginTop = "20px";
    } catch (err) {
      if (!current(seq)) return;
      clear(body).append(errorBox(err));
      reportError(err);
    } finally {
      refresh.disabled = false;
    }
  }
  load();
}

function updateFooter(st) {
  const el = $("status-footer");
  const mappings = st.mappings || [];
  const enabled = mappings.filter((m) => String(m.state || "").toLowerCase() === "enabled");
  const lag = enabled.reduce((s, m) => s + (Number(m.lag_records) || 0), 0);
  const order = ["grey", "green", "yellow", "red"];
  const worst = enabled.length ? enabled.map(mappingHealth).sort((a, b) => order.indexOf(b) - order.indexOf(a))[0] : mappings.length ? "red" : "grey";
  el.title = mappings.map((m) => `${m.function || m.uuid}: ${m.state}`).join("\n");
  clear(el).append(h("span", { class: `dot dot-${worst}`, "data-testid": "status-dot" }),
    !mappings.length ? "No stream mappings"
      : !enabled.length ? "No enabled stream mapping"
        : `${enabled.length} of ${mappings.length} mapping${mappings.length === 1 ? "" : "s"} enabled · lag ${formatNumber(lag)} record${lag === 1 ? "" : "s"}`);
}

function startStatusPolling() {
  stopStatusPolling();
  const poll = () => api.status().then(updateFooter).catch(() => {
    const el = $("status-footer");
    clear(el).append(h("span", { class: "dot dot-grey" }), "Pipeline status unavailable");
  });
  poll();
  statusTimer = setInterval(() => { if (!document.hidden) poll(); }, 30_000);
}
function stopStatusPolling() {
  if (statusTimer) clearInterval(statusTimer);
  statusTimer = null;
}

// ---------------------------------------------------------------- boot

$("signin-form").addEventListener("submit", onSignIn);
$("signout").addEventListener("click", signOut);
window.addEventListener("hashchange", () => {
  if (!auth.get()) return;
  if ($("shell").hidden) showShell();
  else route();
});
if (auth.get()) showShell();
else showSignIn();
