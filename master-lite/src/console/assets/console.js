// slapos-edge web console: polls the master's /console/api/view and draws it. Read-only; every
// value is inserted as text (never as HTML) and secrets arrive already masked by the master.
"use strict";

const POLL_MS = 3000;
const MASK = "\u2022\u2022\u2022\u2022\u2022\u2022";
const SVG = "http://www.w3.org/2000/svg";
// Browser-side history of the numeric KPIs, per instance and key: [[ms, value], …].
const history = new Map();
const HISTORY_POINTS = 120;
// KPI charts show the last half hour this page has seen.
const KPI_WINDOW_MS = 30 * 60 * 1000;

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v !== undefined && v !== null) e.setAttribute(k, v);
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined) continue;
    e.append(c instanceof Node ? c : String(c));
  }
  return e;
}

function svg(tag, attrs) {
  const e = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  return e;
}

function age(nowMs, ms) {
  if (ms === null || ms === undefined) return "never";
  const s = Math.max(0, Math.round((nowMs - ms) / 1000));
  if (s < 90) return s + " s ago";
  if (s < 5400) return Math.round(s / 60) + " min ago";
  if (s < 172800) return Math.round(s / 3600) + " h ago";
  return Math.round(s / 86400) + " d ago";
}

function badge(text, cls, title) {
  return el("span", { class: "badge " + (cls || ""), title: title }, text);
}

function stateClass(s) {
  return { started: "ok", available: "ok", stopped: "warn", building: "warn",
           destroyed: "muted", error: "bad" }[s] || "";
}

function text(v) {
  return typeof v === "string" ? v : JSON.stringify(v);
}

// A key/value list; http(s) values become links (the href is only ever http or https).
function kv(params, cls) {
  const entries = Object.entries(params || {});
  if (entries.length === 0) return el("span", { class: "muted" }, "—");
  const dl = el("dl", { class: "kv " + (cls || "") });
  for (const [k, v] of entries) {
    const t = text(v);
    let dd;
    if (t === MASK) {
      dd = el("dd", { class: "masked", title: "masked by the master" }, t);
    } else if (/^https?:\/\//.test(t)) {
      dd = el("dd", {}, el("a", { href: t, rel: "noopener noreferrer", target: "_blank" }, t));
    } else {
      dd = el("dd", {}, t);
    }
    dl.append(el("dt", {}, k), dd);
  }
  return dl;
}

function fill(tableId, rows, empty, columns) {
  const body = document.querySelector("#" + tableId + " tbody");
  body.replaceChildren(...(rows.length ? rows
    : [el("tr", {}, el("td", { colspan: columns, class: "muted" }, empty))]));
}

function computers(v) {
  fill("computers", v.computers.map(c => el("tr", { "data-computer": c.id },
    el("td", { class: "mono" }, c.id),
    el("td", { title: c.last_seen_ms ? new Date(c.last_seen_ms).toISOString() : "" },
       age(v.now_ms, c.last_seen_ms)),
    el("td", {}, c.free_partitions + " / " + c.partitions),
    el("td", {}, Object.entries(c.labels).map(([k, l]) => badge(k + "=" + l, "muted"))))),
    "no computer registered", 4);
}

function software(v) {
  const rows = [];
  for (const c of v.computers) {
    for (const s of c.software) {
      rows.push(el("tr", { "data-release": s.url },
        el("td", { class: "mono" }, c.id),
        el("td", { class: "url" }, s.url),
        el("td", {}, badge(s.requested, stateClass(s.requested))),
        el("td", {}, s.install ? badge(s.install, stateClass(s.install)) : badge("not reported", "muted")),
        el("td", { class: "mono" }, s.message || "")));
    }
  }
  fill("software", rows, "no release supplied", 5);
}

function promises(i) {
  if (i.promises.length === 0) return el("span", { class: "muted" }, "—");
  return i.promises.map(p => badge((p.ok ? "\u2713 " : "\u2717 ") + p.name, p.ok ? "ok" : "bad",
                                   p.message));
}

function instances(v) {
  fill("instances", v.instances.map(i => {
    let reported = badge("not reported", "muted");
    if (i.reported) {
      reported = el("span", {}, badge(i.reported, stateClass(i.reported)),
        i.current ? null : badge("older revision", "warn"),
        el("div", { class: "muted" }, age(v.now_ms, i.reported_ms)));
    }
    return el("tr", { "data-instance": i.title },
      el("td", {}, el("strong", {}, i.title),
         i.root_title !== i.title ? el("div", { class: "muted" }, "in " + i.root_title) : null,
         el("div", { class: "url muted" }, i.software_url)),
      el("td", { class: "mono" }, i.computer + "/" + i.partition),
      el("td", {}, badge(i.requested, stateClass(i.requested))),
      el("td", { class: "reported" }, reported,
         i.error ? el("div", { class: "bad mono" }, i.error) : null,
         i.bang ? el("div", { class: "warn" }, "bang: " + i.bang) : null),
      el("td", {}, promises(i)),
      el("td", { class: "connection" }, kv(i.connection)),
      el("td", { class: "parameters" }, kv(i.parameters)));
  }), "no instance requested", 7);
}

// A line chart of [x, y] points (x in ms, from xmin to xmax) in a 300 × h box, y from 0.
function chart(title, points, format, xmin, xmax, h = 90) {
  const w = 300, pad = 4, top = 12;
  points = points.filter(p => p[0] >= xmin);
  const box = el("div", { class: "chart" }, el("h3", {}, title));
  const s = svg("svg", { width: w, height: h + top, viewBox: `0 0 ${w} ${h + top}`,
                         role: "img", "aria-label": title });
  const ymax = Math.max(...points.map(p => p[1]), 0);
  const span = Math.max(xmax - xmin, 1);
  const x = t => pad + (w - 2 * pad) * (t - xmin) / span;
  const y = v => top + h - pad - (h - 2 * pad) * (ymax > 0 ? v / ymax : 0);
  s.append(svg("line", { class: "axis", x1: pad, y1: top + h - pad, x2: w - pad, y2: top + h - pad }));
  if (points.length > 0) {
    const d = points.map((p, k) => (k ? "L" : "M") + x(p[0]).toFixed(1) + " " + y(p[1]).toFixed(1)).join(" ");
    const first = x(points[0][0]).toFixed(1), last = x(points[points.length - 1][0]).toFixed(1);
    s.append(svg("path", { class: "area", d: d + ` L${last} ${top + h - pad} L${first} ${top + h - pad} Z` }));
    s.append(svg("path", { class: "line", d: d }));
    for (const p of points.length === 1 ? points : []) {
      s.append(svg("circle", { cx: x(p[0]), cy: y(p[1]), r: 2.5, class: "line" }));
    }
  }
  const label = svg("text", { x: pad, y: 10 });
  label.textContent = "max " + format(ymax) + (points.length ? ", last " + format(points[points.length - 1][1]) : ", no data");
  s.append(label);
  box.append(s);
  return box;
}

function bytes(b) {
  const u = ["B", "KiB", "MiB", "GiB", "TiB"];
  let k = 0;
  while (b >= 1024 && k < u.length - 1) { b /= 1024; k++; }
  return (k ? b.toFixed(1) : Math.round(b)) + " " + u[k];
}

function usage(v) {
  const box = document.getElementById("usage");
  if (!v.usage) {
    box.replaceChildren(el("p", { class: "muted" }, "Usage is for operators and admins."));
    return;
  }
  const u = v.usage;
  if (u.series.length === 0) {
    box.replaceChildren(el("p", { class: "muted" },
      "No usage sample in this window (nodes post them to POST /v1/computers/{c}/usage)."));
    return;
  }
  box.replaceChildren(...u.series.map(s => {
    const col = k => s.points.map(p => [p[0], p[k]]);
    return el("div", { "data-usage": s.instance },
      el("h3", {}, s.instance + " ", el("span", { class: "muted mono" }, s.computer + "/" + s.partition)),
      el("div", { class: "charts" },
        chart("CPU (cores)", col(1), n => n.toFixed(2), u.since_ms, u.until_ms),
        chart("memory", col(2), bytes, u.since_ms, u.until_ms),
        chart("disk", col(3), bytes, u.since_ms, u.until_ms)));
  }));
}

function kpis(v) {
  const box = document.getElementById("kpis");
  const shown = v.instances.filter(i => Object.keys(i.rt).length || Object.keys(i.radio).length);
  if (shown.length === 0) {
    box.replaceChildren(el("p", { class: "muted" },
      "No partition publishes real-time latency (rt-*) or radio KPIs (kpi-*)."));
    return;
  }
  box.replaceChildren(...shown.map(i => {
    const charts = [];
    for (const [k, val] of Object.entries(Object.assign({}, i.rt, i.radio))) {
      const n = Number(val);
      if (val === "" || !Number.isFinite(n)) continue;
      const key = i.title + "\u0000" + k;
      const h = history.get(key) || [];
      if (h.length === 0 || h[h.length - 1][1] !== n || v.now_ms - h[h.length - 1][0] > 60000) {
        h.push([v.now_ms, n]);
      }
      while (h.length > HISTORY_POINTS) h.shift();
      history.set(key, h);
      if (/p99|max-us|miss-ratio|bitrate|connected-ues/.test(k)) {
        charts.push(chart(k, h, x => String(Math.round(x * 1000) / 1000),
                          v.now_ms - KPI_WINDOW_MS, v.now_ms, 50));
      }
    }
    const latency = i.promises.filter(p => ["latency", "tti", "kpi"].includes(p.name));
    return el("div", { "data-kpis": i.title },
      el("h3", {}, i.title + " ", latency.map(p => badge((p.ok ? "\u2713 " : "\u2717 ") + p.name,
                                                         p.ok ? "ok" : "bad", p.message))),
      el("div", { class: "charts" }, charts),
      el("div", { class: "charts" },
        Object.keys(i.rt).length ? el("div", {}, el("h3", {}, "real-time"), kv(i.rt, "rt")) : null,
        Object.keys(i.radio).length ? el("div", {}, el("h3", {}, "radio"), kv(i.radio, "radio")) : null));
  }));
}

async function refresh() {
  const status = document.getElementById("status");
  const hours = document.getElementById("hours").value;
  try {
    const res = await fetch("/console/api/view?hours=" + encodeURIComponent(hours),
                            { cache: "no-store", credentials: "same-origin" });
    if (!res.ok) {
      let msg = res.status + " " + res.statusText;
      try { msg += ": " + (await res.json()).error; } catch (_) { /* not JSON */ }
      throw new Error(msg);
    }
    const v = await res.json();
    computers(v);
    instances(v);
    software(v);
    kpis(v);
    usage(v);
    status.className = "status";
    status.textContent = "updated " + new Date(v.now_ms).toLocaleTimeString();
    document.body.setAttribute("data-loaded", "true");
  } catch (e) {
    status.className = "status error";
    status.textContent = "update failed: " + e.message;
  }
}

// Poll while the page is visible; a hidden tab costs the master nothing.
function loop() {
  const next = () => setTimeout(loop, POLL_MS);
  if (document.hidden) next(); else refresh().finally(next);
}

document.addEventListener("DOMContentLoaded", () => {
  document.getElementById("hours").addEventListener("change", refresh);
  document.addEventListener("visibilitychange", () => { if (!document.hidden) refresh(); });
  loop();
});
