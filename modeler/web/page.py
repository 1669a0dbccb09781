"""The supervision page: one self-contained HTML document (no CDN: deployments run on
closed networks), drawing with SVG from the JSON routes of :mod:`modeler.web.app`.

Kept as a Python string so it ships inside the package without package-data rules.
"""

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>masa modeler</title>
<style>
 body { font: 14px system-ui, sans-serif; margin: 0; background: #f4f5f7; color: #222; }
 header { background: #1f3a5f; color: #fff; padding: 8px 16px; display: flex; gap: 16px; align-items: center; }
 header h1 { font-size: 18px; margin: 0; flex: 1; }
 button { padding: 4px 12px; border: 0; border-radius: 3px; background: #e8eef7; cursor: pointer; }
 main { display: grid; grid-template-columns: 2fr 1fr; gap: 12px; padding: 12px; }
 section { background: #fff; border-radius: 4px; padding: 8px 12px; box-shadow: 0 1px 2px #0002; }
 h2 { font-size: 15px; margin: 4px 0 8px; }
 table { border-collapse: collapse; width: 100%; font-size: 13px; }
 td, th { text-align: left; padding: 2px 6px; border-bottom: 1px solid #eee; }
 #graph { width: 100%; height: 460px; background: #ffffff; border: 1px solid #ddd; }
 .plot { width: 100%; height: 60px; background: #fafafa; }
 .down { color: #b00; } .up { color: #070; } .moving { color: #c60; }
 pre { font-size: 12px; max-height: 220px; overflow: auto; background: #fafafa; margin: 0; }
</style></head>
<body>
<header><h1>masa modeler <span id="name"></span></h1>
 <button id="run">Run now</button><button id="start">Start</button><button id="stop">Stop</button>
 <span id="state">…</span>
</header>
<main>
 <section><h2>Model <span id="version"></span></h2><svg id="graph" viewBox="0 0 1000 460"></svg>
  <div id="legend">edge width and opacity: confidence</div></section>
 <section><h2>Hosts and agents</h2><table id="nodes"><thead><tr><th>agent</th><th>kind</th><th>host</th><th>status</th></tr></thead><tbody></tbody></table></section>
 <section><h2>Activity</h2><div id="plots"></div></section>
 <section><h2>Versions</h2><table id="versions"><tbody></tbody></table>
  <p>diff <select id="old"></select> → <select id="new"></select> <button id="diff">Compare</button></p>
  <pre id="diffout"></pre></section>
</main>
<script>
const $ = (id) => document.getElementById(id);
const SVG = "http://www.w3.org/2000/svg";
const get = (url) => fetch(url).then((r) => r.ok ? r.json() : r.json().then((e) => Promise.reject(e.error)));
// node-list strings (names, domains, locations) come from whoever runs a host: text, never markup
function esc(s) {
  return String(s).replace(/[&<>"']/g, (c) => ({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;"})[c]);
}
function el(tag, attrs, parent) {
  const e = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  if (parent) parent.appendChild(e);
  return e;
}
let shown = null;
async function drawModel(version) {
  const [m, lay] = await Promise.all([get("api/model" + (version ? "?version=" + version : "")),
                                      get("api/layout" + (version ? "?version=" + version : ""))]);
  const svg = $("graph");
  svg.innerHTML = "";
  const P = (n) => { const p = lay.nodes[n] || [0.5, 0.5]; return [40 + p[0] * 920, 30 + p[1] * 400]; };
  el("defs", {}, svg).innerHTML = '<marker id="arrow" viewBox="0 0 10 10" refX="18" refY="5" markerWidth="6" markerHeight="6" orient="auto"><path d="M0,0L10,5L0,10z" fill="#1f3a5f"/></marker>';
  for (const e of m.model.edges) {
    const [x1, y1] = P(e.source), [x2, y2] = P(e.target), c = e.confidence ?? 1;
    const line = el("line", {x1, y1, x2, y2, stroke: "#1f3a5f", "stroke-width": 1 + 4 * c,
                             "stroke-opacity": 0.25 + 0.75 * c, "marker-end": "url(#arrow)", class: "edge"}, svg);
    el("title", {}, line).textContent = e.source + " → " + e.target + " (" + c + ")";
    el("text", {x: (x1 + x2) / 2, y: (y1 + y2) / 2 - 3, "font-size": 11, fill: "#555"}, svg).textContent = c.toFixed(2);
  }
  for (const n of m.model.nodes) {
    const [x, y] = P(n.id);
    el("circle", {cx: x, cy: y, r: 9, fill: n.submodel ? "#6a9fd8" : "#e07b39", class: "node"}, svg);
    el("text", {x: x + 11, y: y + 4, "font-size": 12}, svg).textContent = n.id;
  }
  $("version").textContent = "v" + m.version.version + " · " + m.model.nodes.length + " objects, " +
    m.model.edges.length + " dependencies · network " + m.version.network;
  shown = m.version.version;
}
async function refresh() {
  const st = await get("api/status");
  $("name").textContent = st.name + " on " + st.host;
  const job = st.job || {};
  $("state").textContent = (st.running ? "scheduled" : "stopped") + " · job " + (job.job ?? "-") + ": " + job.state +
    (job.pool ? " (" + Object.values(job.pool.by_agent).reduce((a, b) => a + b, 0) + "/" + job.pool.batches + " batches)" : "");
  if (st.latest && st.latest !== shown) await drawModel(st.latest);
  const nodes = await get("api/nodes");
  const live = nodes.filter((n) => n.status !== "gone");
  $("nodes").tBodies[0].innerHTML =
    live.filter((n) => n.type === "host").map((n) =>
      `<tr class="host"><th>${esc(n.name)}</th><td>host</td><td>domain ${esc(n.domain)}</td><td class="${esc(n.status)}">${esc(n.status)}</td></tr>`).join("") +
    live.filter((n) => n.type === "agent").map((n) =>
      `<tr><td>${esc(n.name)}</td><td>${esc(n.kind)}</td><td>${esc(n.location)}</td><td class="${esc(n.status)}">${esc(n.status)}</td></tr>`).join("");
  const versions = await get("api/versions");
  $("versions").tBodies[0].innerHTML = versions.slice(-8).reverse().map((v) =>
    `<tr><td>v${esc(v.version)}</td><td>${esc(new Date(v.created * 1000).toLocaleTimeString())}</td><td>${esc(v.info.pairs_scored)} pairs</td><td>${esc(v.sources.join(", "))}</td></tr>`).join("");
  for (const sel of [$("old"), $("new")]) {
    const keep = sel.value;
    sel.innerHTML = versions.map((v) => `<option>${esc(v.version)}</option>`).join("");
    if (keep) sel.value = keep;
  }
  const plots = await get("api/activity");
  const div = $("plots");
  div.innerHTML = "";
  for (const [obj, p] of Object.entries(plots).slice(0, 12)) {
    const box = document.createElement("div");
    box.textContent = obj + " (" + p.unit + ")";
    const svg = el("svg", {class: "plot", viewBox: "0 0 300 60", preserveAspectRatio: "none"}, box);
    const t0 = p.t[0], t1 = p.t[p.t.length - 1], hi = Math.max(...p.v, 1e-9);
    const pts = p.t.map((t, i) => `${(300 * (t - t0) / Math.max(t1 - t0, 1e-9)).toFixed(1)},${(58 - 56 * p.v[i] / hi).toFixed(1)}`);
    el("polyline", {points: pts.join(" "), fill: "none", stroke: "#e07b39", "stroke-width": 1}, svg);
    div.appendChild(box);
  }
}
for (const action of ["run", "start", "stop"])
  $(action).onclick = () => fetch("api/" + action, {method: "POST", headers: {"X-Masa-Control": "1"}}).then(refresh);
$("diff").onclick = async () => {
  const d = await get("api/diff?old=" + $("old").value + "&new=" + $("new").value);
  $("diffout").textContent = JSON.stringify(d, null, 1);
};
refresh();
setInterval(() => refresh().catch((e) => { $("state").textContent = "error: " + e; }), 1500);
</script></body></html>
"""
