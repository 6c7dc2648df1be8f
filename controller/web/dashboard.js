// switchyard's dashboard. It follows the controller's board over
// server-sent events and draws it; every value that came from ZooKeeper or
// the registry is set as text, never as markup. The token asked for by
// Switch and Roll back stays in this script's memory: nothing is stored.
"use strict";

const $ = (id) => document.getElementById(id);
let token = null;
let board = null;
let pending = null; // the action the token dialog is for

function el(tag, attrs, ...kids) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") e.className = v;
    else e.setAttribute(k, v);
  }
  for (const k of kids) {
    if (k !== null && k !== undefined) e.append(k);
  }
  return e;
}

function isColor(c) {
  return c === "blue" || c === "green";
}

function colorClass(c) {
  return isColor(c) ? "c-" + c : "c-none";
}

function secs(ms) {
  if (ms < 1000) return Math.round(ms) + " ms";
  if (ms < 60000) return (ms / 1000).toFixed(1) + " s";
  return Math.floor(ms / 60000) + " min " + Math.round((ms % 60000) / 1000) + " s";
}

function took(rec) {
  const start = Date.parse(rec.started_at);
  const end = rec.finished_at ? Date.parse(rec.finished_at) : Date.now();
  return secs(Math.max(0, end - start));
}

function when(iso) {
  const d = new Date(iso);
  return isNaN(d) ? "—" : d.toLocaleString();
}

function notice(text, kind) {
  const n = $("notice");
  n.textContent = text;
  n.className = "notice " + (kind || "info");
  n.hidden = !text;
}

function health(inst) {
  if (inst.quarantined) return ["untrusted: " + inst.quarantined, "bad"];
  if (!inst.in_zookeeper) return ["registered without a ZooKeeper node", "bad"];
  if (!inst.registered) return ["in ZooKeeper, not registered", "bad"];
  if (inst.status === "DOWN") return ["failing its health check", "bad"];
  if (inst.status === "STARTING") return ["starting", "warn"];
  return ["healthy", "ok"];
}

function statusLabel(s) {
  return s === "OUT_OF_SERVICE" ? "OUT" : s || "—";
}

function renderHeader(b) {
  const v = b.view;
  const active = $("active");
  active.textContent = v.active_color_valid ? v.active_color : v.active_color + " (not a color: refused)";
  active.className = "color-badge " + colorClass(v.active_color_valid ? v.active_color : "");
  $("leader").textContent = v.leader ? v.leader.id : "none";
  $("me").textContent = b.controller + (b.leading ? " (leader)" : " (follower)");
  document.title = "switchyard · " + (v.active_color_valid ? v.active_color : "?");
  const other = v.active_color === "blue" ? "green" : "blue";
  if (!$("target").dataset.touched) $("target").value = other;
}

function renderSwitch(b) {
  const rec = b.view.switch;
  const steps = $("steps");
  steps.replaceChildren();
  if (!rec) {
    $("switch-summary").textContent = "No switch yet.";
    $("progress-wrap").hidden = true;
    return;
  }
  const what = (rec.from ? rec.from + " → " : "→ ") + rec.target;
  let line = "switch " + rec.id + ": " + what + ", " + took(rec);
  if (rec.reason) line += " — " + rec.reason;
  if (rec.checks && rec.checks.length) line += " · checks: " + rec.checks.map((c) => c.name + (c.ok ? " passed" : " failed")).join(", ");
  if (rec.asked_by) line += " (asked by " + rec.asked_by + ")";
  const sum = $("switch-summary");
  const parts = [el("span", { class: "phase p-" + rec.phase }, rec.phase), " "];
  if (rec.verdict) parts.push(verdictBadge(rec), " ");
  parts.push(line);
  const a = analysisLine(rec);
  if (a) parts.push(a);
  sum.replaceChildren(...parts);
  $("abort").hidden = rec.phase !== "switching" || !rec.from;
  const p = b.progress || { done: 0, total: 0 };
  $("progress-wrap").hidden = false;
  $("progress").max = Math.max(p.total, 1);
  $("progress").value = rec.phase === "done" ? Math.max(p.total, 1) : p.done;
  $("progress-text").textContent = p.done + " of " + p.total + " moves";
  for (const s of rec.steps.slice(-40)) {
    const action = s.action === "UP" ? "up" : "out";
    steps.append(
      el("li", { class: "step s-" + s.state },
        el("span", { class: "dot " + colorClass(s.color), "aria-hidden": "true" }),
        s.instance + " " + action + (s.batch ? " (batch " + s.batch + ")" : "") + ": " + s.state + (s.error ? " — " + s.error : "")));
  }
}

function verdictBadge(rec) {
  if (!rec.verdict) return null;
  return el("span", { class: "phase v-" + rec.verdict.replace(" ", "-") }, rec.verdict);
}

function figures(f) {
  return f.requests + " requests, " + (f.requests ? (100 * f.errors / f.requests).toFixed(1) : "0.0") + "% errors, p99 " + (1000 * f.p99_seconds).toFixed(1) + " ms";
}

// analysisLine shows the post-switch analysis: the new color against the
// old one before the flip, until when, and why it rolled back.
function analysisLine(rec) {
  const a = rec.analysis;
  if (!a) return null;
  let s = "Analysis: " + a.new.color + " " + figures(a.new) + "; " + a.baseline.color + " before the flip " + figures(a.baseline);
  if (rec.verdict === "analyzing") s += "; watching until " + new Date(a.until).toLocaleTimeString();
  if (a.reason) s += ". Rolled back: " + a.reason;
  return el("span", { class: "analysis" }, s);
}

function card(inst, rate) {
  const [h, hk] = health(inst);
  const st = inst.status || "";
  const r = rate ? rate.rps.toFixed(1) + " req/s · " + (rate.error_rate * 100).toFixed(1) + "% errors" : "no traffic";
  return el("article", { class: "card " + colorClass(inst.color) },
    el("header", {}, el("h4", {}, inst.id), el("span", { class: "status st-" + (st || "none") }, statusLabel(st))),
    el("dl", {},
      el("dt", {}, "address"), el("dd", {}, inst.address || "—"),
      el("dt", {}, "version"), el("dd", {}, inst.version || "—"),
      el("dt", {}, "health"), el("dd", { class: "h-" + hk }, h),
      el("dt", {}, "traffic"), el("dd", {}, r)));
}

function renderInstances(b) {
  const root = $("services");
  root.replaceChildren();
  const bySvc = new Map();
  for (const inst of b.view.instances) {
    const svc = inst.service || "(unknown service)";
    if (!bySvc.has(svc)) bySvc.set(svc, { blue: [], green: [], other: [] });
    const g = bySvc.get(svc);
    (isColor(inst.color) ? g[inst.color] : g.other).push(inst);
  }
  if (bySvc.size === 0) root.append(el("p", {}, "No instance has announced itself."));
  for (const [svc, g] of bySvc) {
    const cols = el("div", { class: "colors" });
    for (const c of ["blue", "green", "other"]) {
      if (c === "other" && g.other.length === 0) continue;
      const up = g[c].filter((i) => i.status === "UP").length;
      const live = b.view.active_color === c ? " · live" : "";
      const col = el("div", { class: "color-col " + colorClass(c) },
        el("h4", { class: "col-h" }, c + " — " + up + " of " + g[c].length + " UP" + live));
      for (const inst of g[c]) col.append(card(inst, b.traffic[inst.id]));
      if (g[c].length === 0) col.append(el("p", { class: "empty" }, "none"));
      cols.append(col);
    }
    root.append(el("section", { class: "service", "aria-label": "service " + svc }, el("h3", {}, svc), cols));
  }
}

function renderGateways(b) {
  const body = $("gateways").tBodies[0];
  body.replaceChildren();
  for (const gw of b.view.gateways) {
    const applied = Object.entries(gw.applied || {}).map(([s, i]) => s + " @ " + i).join(", ") || "—";
    const streams = Object.values(gw.streams || {}).reduce((a, n) => a + n, 0);
    body.append(el("tr", {}, el("th", { scope: "row" }, gw.id), el("td", {}, applied), el("td", {}, String(streams))));
  }
  if (b.view.gateways.length === 0) body.append(el("tr", {}, el("td", { colspan: "3" }, "No gateway has reported.")));
}

function renderHistory(b) {
  const body = $("history").tBodies[0];
  body.replaceChildren();
  for (const rec of b.history) {
    body.append(el("tr", {},
      el("td", {}, when(rec.started_at)),
      el("td", {}, (rec.from ? rec.from + " → " : "→ ") + rec.target),
      el("td", {}, el("span", { class: "phase p-" + rec.phase }, rec.phase), " ", verdictBadge(rec)),
      el("td", {}, took(rec)),
      el("td", {}, rec.asked_by || "unknown"),
      el("td", {}, [rec.analysis && rec.analysis.reason, rec.reason].filter(Boolean).join("; "))));
  }
  if (b.history.length === 0) body.append(el("tr", {}, el("td", { colspan: "6" }, "No switch yet.")));
}

function renderErrors(b) {
  const errs = b.view.errors || [];
  $("errors-panel").hidden = errs.length === 0;
  $("errors").replaceChildren(...errs.map((e) => el("li", {}, e)));
}

function render(b) {
  board = b;
  renderHeader(b);
  renderSwitch(b);
  renderInstances(b);
  renderGateways(b);
  renderHistory(b);
  renderErrors(b);
}

// ask opens the token dialog for an action, or runs it with the token
// this tab already holds.
function ask(action) {
  if (token) return act(action);
  pending = action;
  $("token-what").textContent = action.label + ". The controller needs the shared token to change anything.";
  $("token").value = "";
  $("token-dialog").showModal();
  $("token").focus();
}

async function act(action) {
  const headers = { "Content-Type": "application/json" };
  if (token) headers.Authorization = "Bearer " + token;
  notice(action.label + "…", "info");
  let res, out;
  try {
    res = await fetch(action.path, { method: "POST", headers, body: JSON.stringify(action.body), cache: "no-store" });
    out = await res.json().catch(() => ({}));
  } catch (e) {
    notice("Could not reach the controller: " + e.message + ". Nothing was changed.", "bad");
    return;
  }
  if (res.status === 401) token = null; // ask again next time
  if (!res.ok) {
    notice("Refused: " + (out.error || res.status + " " + res.statusText), "bad");
    return;
  }
  notice("Switch " + out.switch + " to " + out.target + " requested; follow it below.", "ok");
}

function switchAction() {
  const color = $("target").value;
  return { label: "Switch to " + color, path: "/v1/switch", body: { color } };
}

function rollbackAction() {
  const to = board && board.view.active_color === "blue" ? "green" : "blue";
  return { label: "Roll back to " + to, path: "/v1/rollback", body: {} };
}

function abortAction() {
  return { label: "Abort the switch in flight", path: "/v1/abort", body: {} };
}

function connect() {
  const es = new EventSource("/v1/events");
  es.addEventListener("board", (e) => {
    $("conn").textContent = "live";
    $("conn").className = "conn ok";
    render(JSON.parse(e.data));
  });
  es.onerror = () => {
    $("conn").textContent = "reconnecting…";
    $("conn").className = "conn bad";
  };
}

document.addEventListener("DOMContentLoaded", () => {
  $("target").addEventListener("change", () => { $("target").dataset.touched = "1"; });
  $("actions").addEventListener("submit", (e) => { e.preventDefault(); ask(switchAction()); });
  $("rollback").addEventListener("click", () => ask(rollbackAction()));
  $("abort").addEventListener("click", () => ask(abortAction()));
  $("token-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const ok = e.submitter && e.submitter.id === "token-ok";
    $("token-dialog").close();
    if (!ok || !pending) {
      notice("Cancelled; nothing was changed.", "info");
      return;
    }
    token = $("token").value.trim() || null;
    $("token").value = "";
    const action = pending;
    pending = null;
    act(action);
  });
  setInterval(() => { if (board) renderSwitch(board); }, 1000); // the elapsed time moves on
  connect();
});
