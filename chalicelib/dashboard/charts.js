// Chart.js (UMD global `Chart`, served at /vendor/chart.umd.js) wrappers for the account page.

import { BANDS, humanize, shortDay } from "./ui.js";

const live = new Set();
const PALETTE = ["#4f46e5", "#0ea5e9", "#14b8a6", "#f59e0b", "#ec4899", "#8b5cf6", "#84cc16", "#94a3b8"];
const GRID = "#eef0f3";
const TICK = "#667085";
let configured = false;

function ChartJs() {
  const C = window.Chart;
  if (!C) throw new Error("Chart.js did not load (vendor/chart.umd.js)");
  if (!configured) {
    C.defaults.font.family = getComputedStyle(document.body).fontFamily;
    C.defaults.font.size = 12;
    C.defaults.color = TICK;
    C.defaults.borderColor = GRID;
    C.defaults.plugins.legend.labels.boxWidth = 10;
    C.defaults.plugins.legend.labels.boxHeight = 10;
    C.defaults.plugins.legend.labels.usePointStyle = true;
    C.defaults.plugins.tooltip.backgroundColor = "#101828";
    C.defaults.plugins.tooltip.padding = 10;
    C.defaults.plugins.tooltip.cornerRadius = 8;
    C.defaults.plugins.tooltip.boxPadding = 4;
    // Respect the operating system's "reduce motion" setting (also makes screenshots deterministic).
    if (window.matchMedia && window.matchMedia("(prefers-reduced-motion: reduce)").matches) {
      C.defaults.animation = false;
    }
    C.defaults.animation.duration = 400;
    configured = true;
  }
  return C;
}

function make(canvas, config) {
  const C = ChartJs();
  const existing = C.getChart(canvas);
  if (existing) { existing.destroy(); live.delete(existing); }
  const chart = new C(canvas, config);
  live.add(chart);
  return chart;
}

/** Destroy every chart (called when the view changes). */
export function destroyCharts() {
  for (const chart of live) chart.destroy();
  live.clear();
}

const bandColor = (band, fallback = "#98a2b3") => (BANDS[band] ? BANDS[band].color : fallback);

function alpha(hex, a) {
  const n = parseInt(hex.slice(1), 16);
  return `rgba(${(n >> 16) & 255}, ${(n >> 8) & 255}, ${n & 255}, ${a})`;
}

/** Half-doughnut gauge 0–100 in the band colour. */
export function gauge(canvas, score, band) {
  const value = Math.max(0, Math.min(100, Number(score) || 0));
  return make(canvas, {
    type: "doughnut",
    data: {
      datasets: [{
        data: [value, 100 - value],
        backgroundColor: [bandColor(band, "#4f46e5"), "#eef0f3"],
        borderWidth: 0,
        borderRadius: [6, 0],
      }],
    },
    options: {
      responsive: true,
      maintainAspectRatio: false,
      rotation: -90,
      circumference: 180,
      cutout: "78%",
      events: [],
      plugins: { legend: { display: false }, tooltip: { enabled: false } },
    },
  });
}

/** Score history: a 0–100 line, segments and points coloured by band. */
export function scoreHistory(canvas, history) {
  const points = history.map((p) => ({ x: shortDay(p.date), y: p.score, band: p.band }));
  return make(canvas, {
    type: "line",
    data: {
      labels: points.map((p) => p.x),
      datasets: [{
        label: "Health score",
        data: points.map((p) => p.y),
        borderWidth: 2.5,
        cubicInterpolationMode: "monotone",
        pointRadius: points.length > 45 ? 0 : 2.5,
        pointHoverRadius: 5,
        pointBackgroundColor: points.map((p) => bandColor(p.band, "#4f46e5")),
        pointBorderColor: points.map((p) => bandColor(p.band, "#4f46e5")),
        borderColor: "#4f46e5",
        segment: { borderColor: (ctx) => bandColor(points[ctx.p1DataIndex]?.band, "#4f46e5") },
        spanGaps: true,
        fill: { target: "origin", above: "rgba(79, 70, 229, 0.06)" },
      }],
    },
    options: {
      responsive: true,
      maintainAspectRatio: false,
      interaction: { mode: "index", intersect: false },
      scales: {
        y: { min: 0, max: 100, ticks: { stepSize: 25 }, grid: { color: GRID }, border: { display: false } },
        x: { grid: { display: false }, ticks: { maxTicksLimit: 8, maxRotation: 0 } },
      },
      plugins: {
        legend: { display: false },
        tooltip: {
          callbacks: {
            label: (ctx) => {
              const band = points[ctx.dataIndex]?.band;
              return ` Score ${ctx.parsed.y}${BANDS[band] ? ` · ${BANDS[band].label}` : ""}`;
            },
          },
        },
      },
    },
  });
}

/** Maximum points a factor can contribute (derived from points/normalised or the weight). */
export function factorMax(factor, factors) {
  const pts = Number(factor.points) || 0;
  const w = Number(factor.weight) || 0;
  const totalWeight = factors.reduce((s, f) => s + (Number(f.weight) || 0), 0);
  // Weights that sum to 1 (or to 100) say directly how many of the 100 points a factor is worth.
  if (Math.abs(totalWeight - 1) < 0.01) return Math.max(pts, w * 100);
  if (Math.abs(totalWeight - 100) < 1) return Math.max(pts, w);
  const norm = Number(factor.normalised);
  if (norm > 0.001) return Math.max(pts, pts / norm);
  return Math.max(pts, w);
}

export function factorLabel(f) {
  return f.label || humanize(f.name);
}

function factorColor(f, max) {
  const ratio = max > 0 ? (Number(f.points) || 0) / max : 0;
  return ratio >= 0.7 ? BANDS.green.color : ratio >= 0.4 ? BANDS.yellow.color : BANDS.red.color;
}

/** "Why this score": horizontal stacked bars, points earned vs. points left on the table. */
export function factorBars(canvas, factors, describe) {
  const maxes = factors.map((f) => factorMax(f, factors));
  const earned = factors.map((f) => Math.round((Number(f.points) || 0) * 10) / 10);
  return make(canvas, {
    type: "bar",
    data: {
      labels: factors.map(factorLabel),
      datasets: [
        {
          label: "Points earned",
          data: earned,
          backgroundColor: factors.map((f, i) => factorColor(f, maxes[i])),
          borderRadius: 4,
          borderSkipped: false,
          barPercentage: 0.7,
          categoryPercentage: 0.9,
        },
        {
          label: "Points possible",
          data: maxes.map((m, i) => Math.max(0, Math.round((m - earned[i]) * 10) / 10)),
          backgroundColor: "#eef0f3",
          borderRadius: 4,
          borderSkipped: false,
          barPercentage: 0.7,
          categoryPercentage: 0.9,
        },
      ],
    },
    options: {
      indexAxis: "y",
      responsive: true,
      maintainAspectRatio: false,
      scales: {
        x: { stacked: true, grid: { color: GRID }, border: { display: false }, title: { display: true, text: "points" } },
        y: { stacked: true, grid: { display: false }, ticks: { color: "#344054", font: { weight: 600 } } },
      },
      plugins: {
        legend: { display: false },
        tooltip: {
          callbacks: {
            title: (items) => factorLabel(factors[items[0].dataIndex]),
            label: (ctx) => {
              const i = ctx.dataIndex;
              return ` ${earned[i]} of ${Math.round(maxes[i] * 10) / 10} points`;
            },
            afterBody: (items) => describe(factors[items[0].dataIndex]),
          },
        },
      },
    },
  });
}

/** Daily events per event name (top names + "Other"), stacked bars. */
export function usageBars(canvas, usage, top = 6) {
  const series = [...(usage.series || [])]
    .map((s) => ({ name: s.name, counts: s.counts, total: s.counts.reduce((a, b) => a + (b || 0), 0) }))
    .sort((a, b) => b.total - a.total);
  const shown = series.slice(0, top);
  const rest = series.slice(top);
  if (rest.length) {
    shown.push({
      name: `Other (${rest.length})`,
      counts: usage.days.map((_, i) => rest.reduce((s, r) => s + (r.counts[i] || 0), 0)),
    });
  }
  return make(canvas, {
    type: "bar",
    data: {
      labels: usage.days.map(shortDay),
      datasets: shown.map((s, i) => ({
        label: s.name,
        data: s.counts,
        backgroundColor: s.name.startsWith("Other (") ? PALETTE[PALETTE.length - 1] : PALETTE[i % (PALETTE.length - 1)],
        borderRadius: 2,
        maxBarThickness: 28,
      })),
    },
    options: {
      responsive: true,
      maintainAspectRatio: false,
      interaction: { mode: "index", intersect: false },
      scales: {
        x: { stacked: true, grid: { display: false }, ticks: { maxTicksLimit: 10, maxRotation: 0 } },
        y: { stacked: true, beginAtZero: true, grid: { color: GRID }, border: { display: false }, ticks: { precision: 0 } },
      },
      plugins: {
        legend: { position: "bottom", labels: { padding: 16 } },
        tooltip: { itemSort: (a, b) => b.parsed.y - a.parsed.y, filter: (item) => item.parsed.y > 0 },
      },
    },
  });
}

/** Daily active users line. */
export function activeUsersLine(canvas, usage) {
  return make(canvas, {
    type: "line",
    data: {
      labels: usage.days.map(shortDay),
      datasets: [{
        label: "Active users",
        data: usage.active_users || [],
        borderColor: "#0ea5e9",
        backgroundColor: alpha("#0ea5e9", 0.12),
        fill: "origin",
        cubicInterpolationMode: "monotone",
        borderWidth: 2.5,
        pointRadius: 0,
        pointHoverRadius: 4,
      }],
    },
    options: {
      responsive: true,
      maintainAspectRatio: false,
      interaction: { mode: "index", intersect: false },
      scales: {
        x: { grid: { display: false }, ticks: { maxTicksLimit: 6, maxRotation: 0 } },
        y: { beginAtZero: true, grid: { color: GRID }, border: { display: false }, ticks: { precision: 0 } },
      },
      plugins: { legend: { display: false } },
    },
  });
}
