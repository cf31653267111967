// The swarm: every peer this node knows (GET /v1/peers) as a table, and a topology drawing of
// the links this node sees (its open connections, and peers known through membership only).

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

/** This node in the middle, its peers around it: a solid line for an open connection, a
 * dashed one for a peer alive through membership only, none for a dead one. */
export function renderTopology(target, peers) {
  const size = 320, mid = size / 2, radius = 118;
  const self = peers.find((p) => p.self);
  const others = peers.filter((p) => !p.self);
  const parts = [];
  const spots = others.map((peer, i) => {
    const angle = -Math.PI / 2 + (2 * Math.PI * i) / Math.max(1, others.length);
    return { peer, x: mid + radius * Math.cos(angle), y: mid + radius * Math.sin(angle) };
  });
  for (const { peer, x, y } of spots) {
    if (!peer.alive) continue;
    parts.push(svg("line", { x1: mid, y1: mid, x2: x, y2: y,
      class: peer.connected === false ? "link membership" : "link connected" }));
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
