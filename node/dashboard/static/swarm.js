// The swarm: every peer this node knows (GET /v1/peers) as a table, and a topology drawing of
// who is connected to whom (this node's connections, and the links each peer's record names).

import { el, svg, replace, shortId, fmtMs } from "./dom.js";

export function peerState(peer) {
  if (peer.self) return "SELF";
  return peer.alive ? "ALIVE" : "DEAD";
}

function shardCount(caps) {
  let n = 0;
  for (const perCollection of Object.values(caps.shards || {})) n += Object.keys(perCollection).length;
  return n;
}

function modelList(caps) {
  const models = [...(caps.embed || []), ...(caps.generate || [])];
  if (!models.length) return "–";
  return el("ul", { class: "models" }, models.map((m) => el("li", {},
    el("b", {}, m.name), " ", el("span", { class: "mono dim", title: m.sha256 },
      String(m.sha256 || "").slice(0, 10)),
    m.dim ? ` dim ${m.dim}` : m.kind === "generate" ? " gen" : "")));
}

export function renderPeers(tbody, peers) {
  const rows = peers.map((peer) => {
    const state = peerState(peer);
    const caps = peer.capabilities || {};
    const load = peer.load || {};
    return el("tr", { "data-peer": peer.peer_id, "data-state": state, class: state.toLowerCase() },
      el("td", { class: "mono", title: peer.peer_id }, shortId(peer.peer_id)),
      el("td", {}, el("span", { class: `pill ${state.toLowerCase()}` }, state)),
      el("td", {}, peer.self || !peer.alive ? "–" : fmtMs(peer.rtt_ms)),
      el("td", {}, peer.version || "–"),
      el("td", {}, modelList(caps)),
      el("td", {}, caps.index ? String(shardCount(caps)) : "–"),
      el("td", {}, `${load.in_flight ?? 0} running, ${load.queue_depth ?? 0} queued`));
  });
  replace(tbody, rows);
}

/** This node in the middle, its peers around it. A line joins two peers that hold an open
 * connection: this node's own, and those every peer names in its record (``links``), so the
 * drawing is who is connected to whom. A peer alive only through membership (no open
 * connection to this node) gets a dashed line to it; a dead peer, no line of its own. */
export function renderTopology(target, peers) {
  const size = 320, mid = size / 2, radius = 118;
  const self = peers.find((p) => p.self);
  const others = peers.filter((p) => !p.self);
  const parts = [];
  const spots = others.map((peer, i) => {
    const angle = -Math.PI / 2 + (2 * Math.PI * i) / Math.max(1, others.length);
    return { peer, x: mid + radius * Math.cos(angle), y: mid + radius * Math.sin(angle) };
  });
  const at = new Map(spots.map((s) => [s.peer.peer_id, s]));
  if (self) at.set(self.peer_id, { peer: self, x: mid, y: mid });
  const drawn = new Set();
  const link = (a, b, kind) => {
    const key = [a.peer.peer_id, b.peer.peer_id].sort().join(" ");
    if (drawn.has(key)) return;
    drawn.add(key);
    if (a.peer.self || b.peer.self) {  // a spoke from the middle
      parts.push(svg("line", { x1: a.x, y1: a.y, x2: b.x, y2: b.y, class: `link ${kind}`,
        "data-link": key }));
      return;
    }
    // between two peers on the ring: a curve bowed away from the middle, so that it never
    // runs through this node (two peers facing each other would)
    let dx = (a.x + b.x) / 2 - mid, dy = (a.y + b.y) / 2 - mid;
    if (Math.hypot(dx, dy) < 1) { dx = -(b.y - a.y); dy = b.x - a.x; }
    const norm = Math.hypot(dx, dy), bow = radius * 0.6;
    const cx = (a.x + b.x) / 2 + (dx / norm) * bow, cy = (a.y + b.y) / 2 + (dy / norm) * bow;
    parts.push(svg("path", { d: `M ${a.x} ${a.y} Q ${cx} ${cy} ${b.x} ${b.y}`,
      class: `link ${kind}`, fill: "none", "data-link": key }));
  };
  for (const spot of spots) {  // this node's own view first
    if (!spot.peer.alive || !self) continue;
    link(at.get(self.peer_id), spot, spot.peer.connected === false ? "membership" : "connected");
  }
  for (const { peer } of [...spots, ...(self ? [{ peer: self }] : [])]) {
    if (!peer.self && !peer.alive) continue;  // a dead peer's last record is not news
    for (const other of peer.capabilities?.links || []) {
      const a = at.get(peer.peer_id), b = at.get(other);
      if (a && b && (b.peer.self || b.peer.alive)) link(a, b, "connected");
    }
  }
  const node = (peer, x, y) => {
    const state = peerState(peer).toLowerCase();
    return svg("g", { class: `node ${state}`, "data-peer": peer.peer_id },
      svg("circle", { cx: x, cy: y, r: peer.self ? 20 : 15 }),
      svg("text", { x, y: y + (peer.self ? 34 : 28), "text-anchor": "middle" }, shortId(peer.peer_id)),
      svg("title", {}, `${peer.peer_id} ${peerState(peer)}`));
  };
  for (const { peer, x, y } of spots) parts.push(node(peer, x, y));
  if (self) parts.push(node(self, mid, mid));
  replace(target, parts);
}
