// Collections: the shard x replica map of one collection (GET /v1/shards?collection=NAME),
// each cell synced, syncing or missing, with its documents and chunks.

import { el, replace, shortId } from "./dom.js";

/** The health of each replica of a shard row: "synced" (answers, healthy, same digest as
 * most replicas), "syncing" (answers but behind or unhealthy, or does not answer) and
 * "missing" (an owner that holds no replica, or a replica on a peer the swarm sees DEAD). */
export function replicaHealth(row, deadPeers = new Set()) {
  const digests = {};
  for (const r of row.replicas) if (r.healthy) digests[r.digest] = (digests[r.digest] || 0) + 1;
  const best = Object.entries(digests).sort((a, b) => b[1] - a[1])[0]?.[0];
  const cells = {};
  for (const r of row.replicas) {
    const health = deadPeers.has(r.peer) ? "missing"
      : r.healthy && r.digest === best ? "synced" : "syncing";
    cells[r.peer] = { health, docs: health === "missing" ? null : r.docs, chunks: r.chunks,
      owner: row.owners.includes(r.peer) };
  }
  for (const owner of row.owners) {
    if (!cells[owner]) cells[owner] = { health: "missing", docs: null, chunks: null, owner: true };
  }
  return cells;
}

export function renderShardMap(target, summary, rows, deadPeers) {
  const peers = new Set();
  for (const row of rows) {
    for (const r of row.replicas) peers.add(r.peer);
    for (const o of row.owners) peers.add(o);
  }
  const columns = [...peers].sort();
  let docs = 0, chunks = 0, synced = 0, total = 0;
  const body = rows.map((row) => {
    const cells = replicaHealth(row, deadPeers);
    const best = Object.values(cells).filter((c) => c.health === "synced");
    docs += best.length ? Math.max(...best.map((c) => c.docs ?? 0)) : 0;
    chunks += best.length ? Math.max(...best.map((c) => c.chunks ?? 0)) : 0;
    return el("tr", {},
      el("th", {}, `shard ${row.shard}`),
      columns.map((peer) => {
        const cell = cells[peer];
        if (!cell) return el("td", { class: "none" });
        total++;
        if (cell.health === "synced") synced++;
        return el("td", { class: `cell ${cell.health}`, "data-health": cell.health,
          title: `${peer}: ${cell.health}` },
          cell.owner ? el("span", { class: "owner-mark" }, "●") : "",
          cell.docs !== null ? `${cell.docs} docs / ${cell.chunks} chunks`
            : cell.health === "missing" ? (deadPeers.has(peer) ? "peer dead" : "missing")
              : "no answer");
      }),
      el("td", { class: "dim" }, `${row.live_replicas}/${row.wanted}`));
  });
  replace(target, el("table", { class: "shards" },
    el("thead", {}, el("tr", {}, el("th", {}, ""),
      columns.map((p) => el("th", { class: "mono", title: p }, shortId(p))),
      el("th", {}, "live/wanted"))),
    el("tbody", {}, body)));
  summary.textContent = rows.length
    ? `${rows.length} shards · ${docs} documents · ${chunks} chunks · ${synced}/${total} replicas synced`
    : "";
}
