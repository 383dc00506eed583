"use strict";
// dsctl console: hash routes over the JSON API, redrawn when the log moves (server-sent events).
// No framework and no build step: docs/console.md says why and what each view shows.

const main = document.getElementById("main");
const statusEl = document.getElementById("status");
const atInput = document.getElementById("at");
let lastSeq = 0;
let untrusted = "";
let pending = null;

function esc(v) {
  return String(v ?? "").replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);
}
function route() {
  const raw = location.hash.replace(/^#/, "") || "/fleet";
  const [path, qs] = raw.split("?");
  return { parts: path.split("/").filter(Boolean).map(decodeURIComponent), q: new URLSearchParams(qs || "") };
}
function at() { return route().q.get("at") || ""; }
function link(path, params) {
  const q = new URLSearchParams(params || {});
  if (at() && !q.has("at")) q.set("at", at());
  for (const [k, v] of [...q]) if (v === "" || v === null) q.delete(k);
  const s = q.toString();
  return "#" + path + (s ? "?" + s : "");
}
async function api(path, params) {
  const q = new URLSearchParams(params || {});
  if (at()) q.set("at", at());
  for (const [k, v] of [...q]) if (v === "" || v === null || v === undefined) q.delete(k);
  const r = await fetch("/api/" + path + (q.toString() ? "?" + q : ""));
  const body = await r.json();
  if (!r.ok) throw new Error(body.error || r.statusText);
  return body;
}
function st(state, text) { return `<span class="st st-${esc(state)}">${esc(text ?? state)}</span>`; }
function outcome(o) { return `<span class="st o-${esc(o)}">${esc(o)}</span>`; }
function when(t) { return t ? new Date(t * 1000).toISOString().replace("T", " ").replace(/\.\d+Z$/, "Z") : ""; }

function cellText(c) {
  const parts = [];
  const eligible = Object.entries(c).filter(([k]) => k !== "none").reduce((a, [, v]) => a + v, 0);
  parts.push(`${c.ready}/${eligible} ready`);
  for (const s of ["failed", "missing", "pending", "old", "terminating"]) if (c[s]) parts.push(`${c[s]} ${s}`);
  return parts.join(" · ");
}
function worst(c) {
  for (const s of ["failed", "missing", "pending", "old", "terminating", "ready"]) if (c[s]) return s;
  return "none";
}

async function fleet(q) {
  const group = q.get("group") ?? "topology.kubernetes.io/zone";
  const search = q.get("q") || "";
  const f = await api("fleet", { group, q: search });
  const dss = f.daemonsets;
  let h = `<h2>Fleet at log sequence ${f.seq}</h2>
  <p class="muted">${f.nodes} nodes · ${f.pods} pods · ${f.in_flight} commands in flight · ${esc(when(f.time))}</p>
  <form class="filters" id="fleetform" role="search">
    <label>Group nodes by label <input name="group" value="${esc(group)}" placeholder="(all nodes)"></label>
    <label>Search nodes (name or label) <input name="q" value="${esc(search)}"></label>
    <button type="submit">Apply</button></form>
  <table id="daemonsets"><caption>DaemonSets</caption><thead><tr><th scope="col">DaemonSet</th><th scope="col">Desired</th>
  <th scope="col">Ready</th><th scope="col">Up to date</th><th scope="col">Available</th><th scope="col">Revision</th><th scope="col">Rollout</th></tr></thead><tbody>`;
  for (const d of dss) {
    const done = d.complete ? st("ready", "complete") : d.strategy === "OnDelete" ? st("none", "OnDelete") : st("pending", "in progress");
    h += `<tr><th scope="row"><a href="${link("/rollout/" + encodeURIComponent(d.key))}">${esc(d.key)}</a></th>
      <td class="num">${d.desired}</td><td class="num">${d.ready}</td><td class="num">${d.updated}</td><td class="num">${d.available}</td>
      <td class="num">${d.revision}</td><td>${done}</td></tr>`;
  }
  h += `</tbody></table><table id="grid"><caption>Pods by ${esc(group || "(all nodes)")} × DaemonSet (state counts; open a group for its nodes)</caption>
  <thead><tr><th scope="col">${esc(group || "group")}</th><th scope="col">Nodes</th>`;
  for (const d of dss) h += `<th scope="col">${esc(d.key)}</th>`;
  h += "</tr></thead><tbody>";
  for (const g of f.groups) {
    h += `<tr><th scope="row"><a href="${link("/group/" + encodeURIComponent(g.value), { group, q: search })}">${esc(g.value)}</a></th><td class="num">${g.nodes}</td>`;
    for (const d of dss) {
      const c = g.cells[d.key];
      h += `<td class="cell w-${worst(c)}">${esc(cellText(c))}</td>`;
    }
    h += "</tr>";
  }
  h += "</tbody></table>";
  main.innerHTML = h;
  document.getElementById("fleetform").addEventListener("submit", (e) => {
    e.preventDefault();
    const fd = new FormData(e.target);
    location.hash = link("/fleet", { group: fd.get("group"), q: fd.get("q") });
  });
}

async function group(value, q) {
  const groupBy = q.get("group") ?? "topology.kubernetes.io/zone";
  const page = Number(q.get("page") || 0);
  const only = q.get("only") || "";
  const p = await api("nodes", { group: groupBy, value, q: q.get("q") || "", page, only });
  let h = `<h2>Nodes with ${esc(groupBy)} = ${esc(value)}</h2>
  <p><a href="${link("/fleet", { group: groupBy })}">Back to the fleet</a></p>
  <form class="filters" id="onlyform"><label>Only nodes with a pod in state
  <select name="only"><option value="">(any)</option>${["failed", "missing", "pending", "old", "terminating", "ready"].map((s) => `<option ${s === only ? "selected" : ""}>${s}</option>`).join("")}</select></label>
  <button type="submit">Filter</button></form>
  <table><caption>${p.total} nodes, page ${p.page + 1} of ${Math.max(p.pages, 1)}</caption><thead><tr><th scope="col">Node</th>`;
  for (const d of p.daemonsets) h += `<th scope="col">${esc(d)}</th>`;
  h += "</tr></thead><tbody>";
  for (const n of p.nodes) {
    h += `<tr><th scope="row"><a href="${link("/node/" + encodeURIComponent(n.name))}">${esc(n.name)}</a>${n.unschedulable ? " (cordoned)" : ""}</th>`;
    for (const c of n.cells) h += `<td>${st(c.state)}</td>`;
    h += "</tr>";
  }
  h += `</tbody></table><div class="pager">`;
  if (page > 0) h += `<a href="${link("/group/" + encodeURIComponent(value), { group: groupBy, page: page - 1, only })}">Previous page</a>`;
  if (page + 1 < p.pages) h += `<a href="${link("/group/" + encodeURIComponent(value), { group: groupBy, page: page + 1, only })}">Next page</a>`;
  main.innerHTML = h + "</div>";
  document.getElementById("onlyform").addEventListener("submit", (e) => {
    e.preventDefault();
    location.hash = link("/group/" + encodeURIComponent(value), { group: groupBy, only: new FormData(e.target).get("only") });
  });
}

async function node(name) {
  const n = await api("node/" + encodeURIComponent(name));
  let h = `<h2>Node ${esc(n.name)}${n.unschedulable ? " (cordoned)" : ""}</h2>
  <p>Labels: ${Object.entries(n.labels).map(([k, v]) => `<code>${esc(k)}=${esc(v)}</code>`).join(" ") || "none"}</p>
  <p>Taints: ${n.taints.map((t) => `<code>${esc(t)}</code>`).join(" ") || "none"}</p>
  <p><a href="${link("/timeline", { node: n.name })}">Decisions about this node</a></p>
  <table id="nodepods"><caption>Every DaemonSet on this node, and why</caption><thead><tr><th scope="col">DaemonSet</th><th scope="col">State</th>
  <th scope="col">Pod</th><th scope="col">Why</th><th scope="col">Placement rules</th></tr></thead><tbody>`;
  for (const r of n.daemonsets) {
    const pod = r.pod ? `${esc(r.pod.name)} (${esc(r.pod.phase)}${r.pod.ready ? ", Ready" : ""}, revision ${esc(r.pod.revision)}${r.pod.current ? "" : ", old"})` : "none";
    const checks = r.checks.map((c) => `<div class="${c.passed ? "pass" : "fail"}">${c.passed ? "PASS" : "FAIL"} ${esc(c.rule)}: ${esc(c.message)}</div>`).join("");
    h += `<tr><th scope="row"><a href="${link("/rollout/" + encodeURIComponent(r.daemonset))}">${esc(r.daemonset)}</a></th><td>${st(r.state)}</td>
      <td>${pod}</td><td>${esc(r.why)}</td><td>${checks}</td></tr>`;
  }
  main.innerHTML = h + "</tbody></table>";
}

async function rollout(key) {
  const r = await api("rollout/" + encodeURIComponent(key));
  const d = r.daemonset;
  const total = Math.max(d.desired, 1);
  let h = `<h2>Rollout of ${esc(d.key)}</h2>
  <p>Revision ${d.revision} (${esc(r.template_hash)}), generation ${d.generation} (observed ${d.observed}), strategy ${esc(d.strategy)}${r.paused ? ", <strong>paused</strong>" : ""}.
  ${d.complete ? st("ready", "rollout complete") : st("pending", "rollout in progress")}</p>
  <p id="progress">Updated ${d.updated} of ${d.desired}: <progress max="${total}" value="${d.updated}">${d.updated}/${d.desired}</progress>
  · available ${d.available} of ${d.desired}: <progress max="${total}" value="${d.available}">${d.available}/${d.desired}</progress></p>
  <p id="budget">Unavailability budget: ${r.budget.in_use} in use of ${r.budget.max_unavailable} allowed (maxUnavailable).</p>
  <p>By state: ${Object.entries(r.counts).filter(([, v]) => v).map(([k, v]) => st(k, `${v} ${k}`)).join(" ")}</p>
  <p><a href="${link("/timeline", { ds: d.key })}">Decisions of this DaemonSet</a></p>
  <table id="holding"><caption>Nodes holding the rollout back (${r.holding_total}${r.holding_total > r.holding.length ? `, first ${r.holding.length} shown` : ""})</caption>
  <thead><tr><th scope="col">Node</th><th scope="col">State</th><th scope="col">Pod</th><th scope="col">Why</th></tr></thead><tbody>`;
  for (const x of r.holding) h += `<tr><th scope="row"><a href="${link("/node/" + encodeURIComponent(x.node))}">${esc(x.node)}</a></th><td>${st(x.state)}</td><td>${esc(x.pod)}</td><td>${esc(x.why)}</td></tr>`;
  h += `</tbody></table><table><caption>Revisions</caption><thead><tr><th scope="col">Revision</th><th scope="col">Hash</th><th scope="col">Change cause</th></tr></thead><tbody>`;
  for (const v of r.revisions) h += `<tr><td class="num">${v.number}</td><td>${esc(v.hash)}</td><td>${esc(v.cause)}</td></tr>`;
  main.innerHTML = h + "</tbody></table>";
}

function axis(items) {
  if (!items.length) return "";
  const lanes = [...new Set(items.map((i) => i.ds))].sort();
  const t0 = Math.min(...items.map((i) => i.time)), t1 = Math.max(...items.map((i) => i.time));
  const L = Math.min(360, 16 + 7.2 * Math.max(...lanes.map((d) => d.length))), W = L + 720, lane = 22, H = lanes.length * lane + 30;
  const x = (t) => L + (t1 === t0 ? (W - L) / 2 : ((t - t0) / (t1 - t0)) * (W - L - 10));
  const colour = { failed: "#cf222e", acted: "#1a7f37", waiting: "#9a6700", noop: "#6e7781" };
  let s = `<svg class="axis" role="img" aria-label="Time axis of the decisions on this page, one lane per DaemonSet" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}">`;
  lanes.forEach((d, i) => { s += `<text x="4" y="${i * lane + 18}" font-size="12">${esc(d)}</text><line x1="${L}" x2="${W}" y1="${i * lane + 14}" y2="${i * lane + 14}" stroke="#d0d7de"/>`; });
  for (const it of items) {
    const y = lanes.indexOf(it.ds) * lane + 14;
    s += `<a href="${link("/decision/" + it.seq)}"><circle cx="${x(it.time).toFixed(1)}" cy="${y}" r="5" fill="${colour[it.outcome]}"><title>seq ${it.seq} ${esc(it.ds)} ${it.outcome}</title></circle></a>`;
  }
  s += `<text x="${L}" y="${H - 4}" font-size="11">${esc(when(t0))}</text><text x="${W - 4}" y="${H - 4}" font-size="11" text-anchor="end">${esc(when(t1))}</text></svg>`;
  return s;
}

async function timeline(q) {
  const params = { ds: q.get("ds") || "", node: q.get("node") || "", outcome: q.get("outcome") || "",
    failures: q.get("failures") || "", before: q.get("before") || "", limit: q.get("limit") || "50" };
  const p = await api("decisions", params);
  let h = `<h2>Decisions</h2><form class="filters" id="tlform" role="search">
  <label>DaemonSet <select name="ds"><option value="">(all)</option>${p.daemonsets.map((d) => `<option ${d === params.ds ? "selected" : ""}>${esc(d)}</option>`).join("")}</select></label>
  <label>Node <input name="node" value="${esc(params.node)}"></label>
  <label>Outcome <select name="outcome"><option value="">(any)</option>${p.outcomes.map((o) => `<option ${o === params.outcome ? "selected" : ""}>${o}</option>`).join("")}</select></label>
  <label><span>Failures only</span><input type="checkbox" name="failures" value="1" ${params.failures ? "checked" : ""}></label>
  <button type="submit">Apply</button></form>
  <p class="muted">${p.total} decisions in the log; newest first, ${p.items.length} on this page. Colours: ${p.outcomes.map(outcome).join(" ")}</p>`;
  h += axis(p.items);
  h += `<table id="decisions"><caption>Decisions</caption><thead><tr><th scope="col">Seq</th><th scope="col">Time</th><th scope="col">DaemonSet</th><th scope="col">Outcome</th>
  <th scope="col">Creates</th><th scope="col">Deletes</th><th scope="col">Waits</th><th scope="col">Nodes</th></tr></thead><tbody>`;
  for (const i of p.items) h += `<tr><th scope="row"><a href="${link("/decision/" + i.seq)}">${i.seq}</a></th><td>${esc(when(i.time))}</td><td>${esc(i.ds)}</td>
    <td>${outcome(i.outcome)}</td><td class="num">${i.creates}</td><td class="num">${i.deletes}</td><td class="num">${i.waits}</td><td class="num">${i.nodes}</td></tr>`;
  h += `</tbody></table><div class="pager">`;
  if (params.before) h += `<a href="${link("/timeline", { ...params, before: "" })}">Newest</a>`;
  if (p.next) h += `<a id="older" href="${link("/timeline", { ...params, before: p.next })}">Older decisions</a>`;
  main.innerHTML = h + "</div>";
  document.getElementById("tlform").addEventListener("submit", (e) => {
    e.preventDefault();
    const fd = new FormData(e.target);
    location.hash = link("/timeline", { ds: fd.get("ds"), node: fd.get("node"), outcome: fd.get("outcome"), failures: fd.get("failures") || "" });
  });
}

async function decision(seq) {
  const d = await api("decision/" + seq);
  const i = d.inputs;
  let h = `<h2>Decision ${d.seq} — ${esc(d.daemonset)} ${outcome(d.summary.outcome)}</h2>
  <p class="muted">${esc(when(d.time))} on <code>${esc(d.subject)}</code> · <a href="${link("/timeline", { ds: d.daemonset })}">timeline of ${esc(d.daemonset)}</a>
  · <a href="${link("/fleet", { at: d.seq })}">the fleet as it was right after it</a></p>
  <h3>1. Inputs</h3><p>State at log sequence <a href="${link("/fleet", { at: i.state_seq })}">${i.state_seq}</a>, generation ${i.generation}, template ${esc(i.template_hash)},
  clock ${esc(i.now)}, leader ${esc(i.leader || "?")}${i.applied ? `; DaemonSet applied at seq ${i.applied.seq} (generation ${i.applied.generation})` : ""}.</p>
  <h3>2. Per-node reasons</h3><table id="reasons"><caption>${d.reasons_total} reasons${d.reasons_total > d.reasons.length ? `, first ${d.reasons.length}` : ""}</caption>
  <thead><tr><th scope="col">Node</th><th scope="col">Action</th><th scope="col">Code</th><th scope="col">Message</th><th scope="col">Pod</th></tr></thead><tbody>`;
  for (const r of d.reasons) h += `<tr><td>${r.node ? `<a href="${link("/node/" + encodeURIComponent(r.node))}">${esc(r.node)}</a>` : "(summary)"}</td><td>${esc(r.action)}</td><td>${esc(r.code)}</td><td>${esc(r.message)}</td><td>${esc(r.pod)}</td></tr>`;
  h += `</tbody></table><h3>3. Commands</h3><table id="commands"><caption>${d.commands_total} commands</caption><thead><tr><th scope="col">Command</th><th scope="col">Kind</th><th scope="col">Node</th><th scope="col">Pod</th><th scope="col">Revision</th></tr></thead><tbody>`;
  for (const c of d.commands) h += `<tr><td>${esc(c.id)}</td><td>${esc(c.kind)}</td><td>${esc(c.node)}</td><td>${esc(c.pod)}</td><td>${esc(c.revision)}</td></tr>`;
  h += `</tbody></table><h3>4. Executor reports</h3>`;
  for (const r of d.reports) h += `<p><strong>${esc(r.pod)}</strong> on ${esc(r.node)}: ${r.reports.map((x) => `seq ${x.seq} ${esc(x.type)}`).join(" → ") || "no report yet"}</p>`;
  main.innerHTML = h;
}

function showStatus() {
  if (untrusted) {
    statusEl.textContent = `warning: the log cannot be trusted, what is shown stopped at sequence ${lastSeq}: ${untrusted}`;
    statusEl.setAttribute("role", "alert");
    return;
  }
  if (!lastSeq && !at()) return;
  statusEl.textContent = at() ? `time travel: sequence ${at()} (live log at ${lastSeq})` : `live · log sequence ${lastSeq}`;
}

async function render() {
  showStatus();
  const { parts, q } = route();
  atInput.value = q.get("at") || "";
  document.querySelectorAll("nav a").forEach((a) => a.toggleAttribute("aria-current", a.dataset.view === (parts[0] === "timeline" || parts[0] === "decision" ? "timeline" : "fleet")));
  try {
    if (parts[0] === "group") await group(parts[1] || "", q);
    else if (parts[0] === "node") await node(parts[1]);
    else if (parts[0] === "rollout") await rollout(parts.slice(1).join("/"));
    else if (parts[0] === "timeline") await timeline(q);
    else if (parts[0] === "decision") await decision(parts[1]);
    else await fleet(q);
    main.dataset.rendered = String(Date.now());
  } catch (err) {
    main.innerHTML = `<p role="alert">Could not load this view: ${esc(err.message)}</p>`;
  }
}

function refreshSoon() {
  if (at() || pending) return;
  pending = setTimeout(async () => {
    pending = null;
    // never redraw under someone typing in a filter: the next change will
    const el = document.activeElement;
    if (el && main.contains(el) && ["INPUT", "SELECT", "TEXTAREA"].includes(el.tagName)) return;
    const focused = el && main.contains(el) && el.tagName === "A" ? el.getAttribute("href") : null;
    await render();
    if (focused) main.querySelector(`a[href="${CSS.escape(focused)}"]`)?.focus();
  }, 400);
}

document.getElementById("travel").addEventListener("submit", (e) => {
  e.preventDefault();
  const { parts, q } = route();
  if (atInput.value === "") q.delete("at"); else q.set("at", atInput.value);
  location.hash = "#/" + parts.map(encodeURIComponent).join("/") + (q.toString() ? "?" + q : "");
});
document.getElementById("live").addEventListener("click", () => {
  const { parts, q } = route();
  q.delete("at");
  location.hash = "#/" + parts.map(encodeURIComponent).join("/") + (q.toString() ? "?" + q : "");
});
window.addEventListener("hashchange", () => { render(); main.focus(); });

const events = new EventSource("/api/stream");
events.addEventListener("log", (e) => {
  const d = JSON.parse(e.data);
  lastSeq = d.seq;
  untrusted = d.untrusted || "";
  showStatus();
  statusEl.dataset.seq = String(d.seq);
  refreshSoon();
});
events.addEventListener("error", () => { statusEl.textContent = "disconnected: retrying…"; });
render();
