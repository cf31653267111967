// The calinode dashboard: polls the node's JSON API about once a second and draws the swarm,
// the collections' shards, the activity charts, and runs search, ask and chat. Plain ES
// modules, no framework, nothing from the internet.

import { el, replace, shortId } from "./dom.js";
import { getJSON, postJSON, ApiError } from "./api.js";
import { renderPeers, renderTopology } from "./swarm.js";
import { renderShardMap } from "./collections.js";
import { ActivityHistory, drawChart } from "./charts.js";
import { runSearch, runAsk, runChat } from "./query.js";

const POLL_MS = 1000;
const $ = (id) => document.getElementById(id);

const state = {
  collections: [],      // definitions (GET /v1/collections)
  generateModels: [],   // names, every generation model some live peer serves
  deadPeers: new Set(), // peer ids the last /v1/peers said DEAD
  history: new ActivityHistory(),
  chat: [],
  polls: 0,
};

function setConnection(ok, text) {
  const pill = $("conn");
  pill.textContent = text;
  pill.className = `pill ${ok ? "alive" : "dead"}`;
}

function fillSelect(select, names) {
  const current = select.value;
  const same = select.options.length === names.length
    && [...select.options].every((o, i) => o.value === names[i]);
  if (!same) {
    replace(select, names.map((n) => el("option", { value: n }, n)));
    if (names.includes(current)) select.value = current;
  }
}

async function pollStatus() {
  const [status, peers, activity] = await Promise.all([
    getJSON("/v1/status"), getJSON("/v1/peers"), getJSON("/v1/activity")]);
  $("node-id").textContent = shortId(status.peer_id);
  $("node-id").title = status.peer_id;
  $("node-facts").textContent =
    `v${status.version} · ${status.swarm} swarm · up ${Math.round(status.uptime_s)} s`;
  const alive = peers.filter((p) => !p.self && p.alive).length;
  const dead = peers.filter((p) => !p.self && !p.alive).length;
  const refused = Object.entries(status.rejected_input || {});
  const refusedTotal = refused.reduce((sum, [, n]) => sum + n, 0);
  const summary = $("swarm-summary");
  summary.textContent = `${peers.length} nodes · ${alive} peers alive · ${dead} dead`
    + ` · ${refusedTotal} peer inputs refused`;
  summary.title = refused.map(([reason, n]) => `${reason}: ${n}`).join("\n");
  state.deadPeers = new Set(peers.filter((p) => !p.self && !p.alive).map((p) => p.peer_id));
  renderPeers($("peers").tBodies[0], peers);
  renderTopology($("topology"), peers);

  const models = new Set();
  for (const p of peers) {
    if (!p.self && !p.alive) continue;
    for (const m of p.capabilities?.generate || []) models.add(m.name);
  }
  state.generateModels = [...models].sort();
  fillSelect($("chat-model"), state.generateModels);

  state.history.add(activity);
  drawActivity(activity.at);
}

function drawActivity(now) {
  drawChart($("chart-jobs"), $("legend-jobs"), state.history.jobRates(), now, "/s");
  const { p50, p95 } = state.history.latency();
  drawChart($("chart-latency"), $("legend-latency"), { p50, p95 }, now, " ms", { log: true });
  drawChart($("chart-tokens"), $("legend-tokens"), { tokens: state.history.tokenRates() }, now, "/s");
}

async function pollCollections() {
  state.collections = await getJSON("/v1/collections");
  const names = state.collections.map((c) => c.name).sort();
  fillSelect($("shard-collection"), names);
  fillSelect($("search-collection"), names);
  const name = $("shard-collection").value;
  if (!name) {
    replace($("shard-map"), el("p", { class: "dim" },
      "no collection yet: calinode collections create NAME, then calinode ingest"));
    $("collection-summary").textContent = "";
    return;
  }
  const rows = await getJSON(`/v1/shards?collection=${encodeURIComponent(name)}`);
  renderShardMap($("shard-map"), $("collection-summary"), rows, state.deadPeers);
}

async function loop(name, work, every) {
  for (;;) {
    const started = performance.now();
    try {
      await work();
      if (name === "status") {
        state.polls++;
        document.body.dataset.polls = String(state.polls);
        setConnection(true, "live");
      }
    } catch (error) {
      if (error instanceof ApiError && error.status === 401) {
        setConnection(false, "logged out: run calinode dashboard");
        return;
      }
      if (name === "status") setConnection(false, `node unreachable (${error.message})`);
    }
    const spent = performance.now() - started;
    await new Promise((r) => setTimeout(r, Math.max(100, every - spent)));
  }
}

function selectedCollection() {
  return state.collections.find((c) => c.name === $("search-collection").value);
}

function showError(target, error) {
  target.textContent = `error: ${error.message}`;
  target.dataset.state = "error";
}

function wireQueries() {
  const ui = { answer: $("answer"), sources: $("sources"), hits: $("hits"),
    embeddedBy: $("embedded-by"), chatLog: $("chat-log") };
  let running = null;
  const start = () => {
    running?.abort();
    running = new AbortController();
    return running.signal;
  };
  $("search-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const collection = selectedCollection();
    const text = $("query").value.trim();
    if (!collection || !text) return;
    start();
    try {
      await runSearch(ui, collection, text, $("embed-in-browser").checked);
    } catch (error) { showError(ui.embeddedBy, error); }
  });
  $("ask-button").addEventListener("click", async () => {
    const collection = selectedCollection();
    const question = $("query").value.trim();
    if (!collection || !question) return;
    const signal = start();
    try {
      await runAsk(ui, collection, question, signal);
    } catch (error) { if (error.name !== "AbortError") showError(ui.answer, error); }
  });
  $("chat-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const model = $("chat-model").value;
    const text = $("chat-input").value.trim();
    if (!model || !text) return;
    $("chat-input").value = "";
    ui.chatLog.append(el("div", { class: "msg user" }, text));
    state.chat.push({ role: "user", content: text });
    state.chat = state.chat.slice(-12);
    try {
      const reply = await runChat(ui, model, state.chat, start());
      state.chat.push({ role: "assistant", content: reply });
    } catch (error) {
      if (error.name !== "AbortError") ui.chatLog.append(el("div", { class: "msg error" }, error.message));
    }
  });
  $("logout").addEventListener("click", async () => {
    await postJSON("/v1/dashboard/logout", {});
    location.reload();
  });
}

wireQueries();
loop("status", pollStatus, POLL_MS);
loop("collections", pollCollections, 2 * POLL_MS);
