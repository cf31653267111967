// Search, ask and chat: the answers of the node's query routes, shown as they come.

import { el, replace, shortId } from "./dom.js";
import { postJSON, postStream } from "./api.js";

function renderHits(target, hits) {
  replace(target, hits.map((hit) => el("li", { class: "hit", "data-key": `${hit.doc_id}#${hit.chunk}` },
    el("div", { class: "hit-head" },
      el("b", {}, hit.metadata?.title || hit.doc_id),
      el("span", { class: "score" }, `score ${Number(hit.score).toFixed(4)}`),
      el("span", { class: "dim" }, `shard ${hit.shard}`),
      el("span", { class: "mono dim", title: hit.peer }, `peer ${shortId(hit.peer)}`)),
    el("div", { class: "hit-text" }, String(hit.text || "").slice(0, 300)))));
}

/** The query vector from static/embed.js, when the browser embeds (see index.html). The
 * module is the webembed part's; when it is absent the node embeds. */
async function browserVector(collection, text) {
  let module;
  try {
    module = await import("./embed.js");
  } catch (error) {
    return { error: `embed.js is not available (${error.message}); the node embedded` };
  }
  const out = await module.embedQuery(location.origin, collection.model, text);
  if (out instanceof Float32Array) return { vector: out, sha256: collection.model_sha256 };
  return { vector: out.vector, sha256: out.sha256 || collection.model_sha256 };
}

export async function runSearch(ui, collection, text, inBrowser) {
  const body = { collection: collection.name, k: 10 };
  let side = "node";
  if (inBrowser) {
    const embedded = await browserVector(collection, text);
    if (embedded.vector) {
      body.vector = Array.from(embedded.vector);
      body.model_sha256 = embedded.sha256;
      side = "browser";
    } else {
      ui.embeddedBy.textContent = embedded.error;
    }
  }
  if (side === "node") body.query = text;
  const [result] = await postJSON("/v1/search", body);
  ui.embeddedBy.dataset.side = side;
  ui.embeddedBy.textContent = (side === "browser"
    ? `query embedded in this browser (${collection.model})`
    : `query embedded on the node (${collection.model})`)
    + (result.partial ? ` · partial: shards ${result.missing_shards.join(", ")} did not answer` : "")
    + ` · ${result.hits.length} hits`;
  replace(ui.answer);
  replace(ui.sources);
  renderHits(ui.hits, result.hits);
}

export async function runAsk(ui, collection, question, signal) {
  replace(ui.hits);
  replace(ui.sources);
  ui.answer.textContent = "";
  ui.answer.dataset.state = "streaming";
  ui.embeddedBy.textContent = `question embedded on the node (${collection.model}); the answer streams`;
  await postStream("/v1/ask", { collection: collection.name, question, k: 5, max_tokens: 128, stream: true },
    (line) => {
      const piece = JSON.parse(line);
      if (piece.text !== undefined) ui.answer.append(piece.text);
      if (piece.error) throw new Error(`${piece.error.code}: ${piece.error.message}`);
      if (piece.done) {
        replace(ui.sources, (piece.done.sources || []).map((s) => el("li", { value: s.n },
          el("b", {}, s.title || s.doc_id), " ",
          el("span", { class: "score" }, `score ${Number(s.score).toFixed(4)}`))));
        ui.answer.dataset.state = "done";
        ui.embeddedBy.textContent += ` · answered by ${shortId(piece.done.served_by)}`;
      }
    }, signal);
}

export async function runChat(ui, model, history, signal) {
  const reply = el("div", { class: "msg assistant", "data-state": "streaming" });
  ui.chatLog.append(reply);
  let text = "";
  await postStream("/v1/chat/completions", { model, messages: history, stream: true,
    max_tokens: 128 }, (line) => {
    if (!line.startsWith("data:")) return;
    const data = line.slice(5).trim();
    if (data === "[DONE]") return;
    const chunk = JSON.parse(data);
    if (chunk.error) throw new Error(`${chunk.error.code}: ${chunk.error.message}`);
    const delta = chunk.choices?.[0]?.delta?.content;
    if (delta) { text += delta; reply.append(delta); }
  }, signal);
  reply.dataset.state = "done";
  return text;
}
