"""The web view's one page: rendered whole on the server (a plain HTML table works without
JavaScript), then kept current by a small script: it listens to ``/api/events`` (server-sent
events) and polls ``/api/state`` where it cannot. Everything ships here; nothing loads from
elsewhere. Text from the network is escaped (``html.escape`` on the
server, ``textContent`` in the script)."""

from __future__ import annotations

import html
import json
from typing import Any

__all__ = ["render_page"]

_GROUP_COLUMNS = (
    ("name", "group"),
    ("id", "id"),
    ("task", "task"),
    ("policy", "policy"),
    ("members", "members"),
    ("leader", "leader"),
    ("term", "term"),
    ("round", "round"),
    ("accuracy", "accuracy"),
    ("advert_age_s", "advert age (s)"),
)

_STYLE = """
body{font:14px system-ui,sans-serif;margin:1.5em;color:#222}
table{border-collapse:collapse;margin:.5em 0 1.5em}
td,th{border:1px solid #ccc;padding:.25em .6em;text-align:left}
th{background:#f3f3f3}
svg{border:1px solid #ccc;background:#fafafa}
.muted{color:#777}
"""

# Re-renders the tables from each state /api/events pushes (or, where the browser has no
# EventSource or the node refuses the stream, from /api/state every 2 s); text goes in with
# textContent only. <body data-live> says which.
_SCRIPT = """
const fmt = (k, v) => k === "accuracy" ? (100 * v).toFixed(1) + "%" : String(v);
function fill(id, rows, cols) {
  const body = document.querySelector("#" + id + " tbody");
  body.replaceChildren(...rows.map(r => {
    const tr = document.createElement("tr");
    for (const c of cols) { const td = document.createElement("td");
      td.textContent = c === "members" ? r.members + "/" + r.capacity : fmt(c, r[c]);
      tr.appendChild(td); }
    return tr; }));
}
function curve(points) {
  const line = document.getElementById("curve-line");
  if (!line || points.length === 0) return;
  const t0 = points[0].t, t1 = Math.max(points[points.length - 1].t, t0 + 1);
  line.setAttribute("points", points.map(p =>
    (((p.t - t0) / (t1 - t0)) * 600).toFixed(1) + "," + (150 - p.acc * 150).toFixed(1)).join(" "));
}
function show(s) {
  fill("groups", s.groups, COLUMNS);
  document.getElementById("count").textContent = s.groups.length + " group(s)";
  if (s.node) {
    for (const k of ["group", "role", "term", "round"])
      document.getElementById("node-" + k).textContent = String(s.node[k] ?? "-");
    curve(s.node.curve);
  }
  document.getElementById("updated").textContent = new Date().toLocaleTimeString();
}
const unreachable = () => { document.getElementById("updated").textContent = "unreachable"; };
async function poll() {
  try { show(await (await fetch("/api/state", {cache: "no-store"})).json()); }
  catch (e) { unreachable(); }
}
function polling() { document.body.dataset.live = "polling"; setInterval(poll, 2000); }
if (!window.EventSource) polling(); else {
  const events = new EventSource("/api/events");
  events.onmessage = e => { document.body.dataset.live = "events"; show(JSON.parse(e.data)); };
  events.onerror = () => events.readyState === EventSource.CLOSED ? polling() : unreachable();
}
"""


def _cell(key: str, row: dict[str, Any]) -> str:
    if key == "members":
        return f"{row['members']}/{row['capacity']}"
    if key == "accuracy":
        return f"{100 * float(row['accuracy']):.1f}%"
    return html.escape(str(row[key]))


def _node_section(node: dict[str, Any]) -> str:
    facts = "".join(
        f"<tr><th>{k}</th><td id='node-{k}'>{html.escape(str(node.get(k) or '-'))}</td></tr>"
        for k in ("group", "role", "term", "round")
    )
    curve = node.get("curve") or []
    points = ""
    if curve:
        t0, t1 = curve[0]["t"], max(curve[-1]["t"], curve[0]["t"] + 1)
        points = " ".join(
            f"{(p['t'] - t0) / (t1 - t0) * 600:.1f},{150 - float(p['acc']) * 150:.1f}"
            for p in curve
        )
    moves = "".join(f"<li>{html.escape(m['text'])}</li>" for m in node.get("moves", [])[-10:])
    traffic = node.get("traffic", {})
    return (
        "<h2>This node</h2>"
        f"<table id='node'>{facts}</table>"
        "<h3>Accuracy over time (rounds it led, evaluations on its own data)</h3>"
        "<svg width='600' height='150' viewBox='0 0 600 150'>"
        f"<polyline id='curve-line' fill='none' stroke='#2a6' points='{points}'/></svg>"
        f"<h3>Moves</h3><ul id='moves'>{moves or '<li class=muted>none</li>'}</ul>"
        f"<p class='muted'>channels open {int(traffic.get('channels_open', 0))}, "
        f"bytes in {int(traffic.get('bytes_in', 0))}, out {int(traffic.get('bytes_out', 0))}</p>"
    )


def render_page(groups: list[dict[str, Any]], node: dict[str, Any] | None) -> str:
    """The whole page, as of now."""
    head = "".join(f"<th>{label}</th>" for _, label in _GROUP_COLUMNS)
    rows = "".join(
        "<tr>" + "".join(f"<td>{_cell(key, row)}</td>" for key, _ in _GROUP_COLUMNS) + "</tr>"
        for row in groups
    )
    columns = json.dumps([key for key, _ in _GROUP_COLUMNS])
    return (
        "<!doctype html><html><head><meta charset='utf-8'>"
        "<title>mycelium-p2p</title>"
        f"<style>{_STYLE}</style></head><body>"
        "<h1>mycelium-p2p</h1>"
        f"<p><span id='count'>{len(groups)} group(s)</span> "
        "<span class='muted'>updated <span id='updated'>now</span></span></p>"
        f"<table id='groups'><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>"
        + (_node_section(node) if node is not None else "")
        + f"<script>const COLUMNS = {columns};{_SCRIPT}</script></body></html>"
    )
