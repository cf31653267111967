// In-browser embedding of a search query, with the node's own model: the same vector the node
// would compute, so a search by this vector (POST /v1/search {collection, vector, model_sha256})
// finds what a search by the text finds, without the node spending its CPU on the query.
//
//   import { embedQuery } from "./embed.js";
//   const { vector, sha256 } = await embedQuery("", "minilm-l6-int8", "how do shards move?");
//
// What it does, matching calinode's models/embedder.py step by step:
// 1. the model is found by name in GET /v1/models (or given by its sha256), its manifest read
//    from GET /v1/models/{sha256}/manifest;
// 2. the ONNX graph and tokenizer.json (.../tokenizer) are fetched once, checked against their
//    sha256 (SubtleCrypto), and kept in the browser's Cache API keyed by that sha256:
//    content-addressed, so a cached copy never goes stale. The graph is the model file
//    (GET /v1/models/{sha256}/file) unless the manifest's browser_graph says the node's CPU
//    int8 kernel saturates: then it is the node's copy that spells that arithmetic out
//    (.../browser-graph, see models/browser_graph.py), or the vectors would differ (cosine
//    ~0.99 instead of 1.0 on an AVX2 CPU without VNNI);
// 3. the text gets the manifest's query prefix (E5: "query: "; none for MiniLM) and is
//    tokenized by BertWordPiece below, which reads the model's own tokenizer.json (Hugging Face
//    `tokenizers` format): BertNormalizer, BertPreTokenizer, WordPiece, the [CLS]/[SEP]
//    template, cut to the manifest's max_tokens (special tokens included), never padded;
// 4. onnxruntime-web (the WASM build vendored in ./vendor, loaded from this node's own URLs,
//    never a CDN) runs the graph with input_ids, attention_mask and token_type_ids (int64), one
//    text per run, as the node runs its dynamically quantized models;
// 5. the token states are pooled as the manifest says (mean over the attention mask, or the
//    CLS token) and L2-normalized when it says so.
//
// Authentication: requests are same-origin, so the dashboard's login cookie goes with them;
// `options.headers` adds others (e.g. {Authorization: "Bearer ..."} for a script or a test).

const VENDOR = new URL("./vendor/onnxruntime-web/", import.meta.url).href;
const CACHE_NAME = "calinode-models-v1";
const SHA256 = /^[0-9a-f]{64}$/;

let ortPromise = null;
const bundles = new Map(); // sha256 -> Promise<{manifest, tokenizer, session, output}>

/** The onnxruntime-web module, loaded once from this node (never a CDN). */
function loadOrt() {
  if (ortPromise === null) {
    ortPromise = import(new URL("ort.wasm.min.mjs", VENDOR).href).then((ort) => {
      ort.env.wasm.wasmPaths = VENDOR; // the .mjs glue and the .wasm come from the node too
      // threads need SharedArrayBuffer, i.e. a cross-origin isolated page; else one thread
      ort.env.wasm.numThreads = globalThis.crossOriginIsolated
        ? Math.max(1, Math.min(4, navigator.hardwareConcurrency || 1)) : 1;
      ort.env.wasm.proxy = false;
      return ort;
    }).catch((error) => {
      ortPromise = null;
      throw error;
    });
  }
  return ortPromise;
}

/**
 * Embed one search query in the browser with the node's model.
 * @param {string} baseUrl the node's API origin ("" for this page's origin)
 * @param {string} modelName the embedding model's name (as in /v1/models), or its sha256
 * @param {string} text the query
 * @param {{headers?: Object, inputType?: "query"|"passage"|"raw"}} [options]
 * @returns {Promise<{vector: Float32Array, sha256: string}>}
 */
export async function embedQuery(baseUrl, modelName, text, options = {}) {
  if (typeof text !== "string" || !text.trim()) {
    throw new Error("the text to embed is empty or only whitespace");
  }
  const base = new URL(baseUrl || globalThis.location.origin);
  const headers = options.headers || {};
  const sha256 = await resolveModel(base, modelName, headers);
  const bundle = await loadBundle(base, sha256, headers);
  const prefix = { query: bundle.manifest.query_prefix, passage: bundle.manifest.passage_prefix,
                   raw: "" }[options.inputType || "query"];
  if (prefix === undefined) {
    throw new Error(`inputType must be query, passage or raw, not ${options.inputType}`);
  }
  const ids = bundle.tokenizer.encode(prefix + text);
  const vector = await runModel(bundle, ids);
  return { vector, sha256 };
}

/** The sha256 of the embedding model named `modelName` on the node (or `modelName` itself). */
async function resolveModel(base, modelName, headers) {
  if (SHA256.test(modelName)) {
    return modelName;
  }
  const listing = await fetchJson(new URL("/v1/models", base), headers);
  const row = (listing.data || []).find((m) => m.id === modelName && m.kind === "embed");
  if (!row) {
    throw new Error(`no embedding model ${JSON.stringify(modelName)} in the swarm`);
  }
  return row.sha256;
}

function loadBundle(base, sha256, headers) {
  const key = `${base.origin} ${sha256}`;
  let bundle = bundles.get(key);
  if (bundle === undefined) {
    bundle = openBundle(base, sha256, headers);
    bundles.set(key, bundle);
    bundle.catch(() => bundles.delete(key)); // a failed load is tried again next time
  }
  return bundle;
}

async function openBundle(base, sha256, headers) {
  const root = new URL(`/v1/models/${sha256}/`, base);
  const manifest = await fetchJson(new URL("manifest", root), headers);
  if (manifest.kind !== "embed" || manifest.sha256 !== sha256) {
    throw new Error(`model ${sha256.slice(0, 12)} is not an embedding model of this node`);
  }
  const graph = manifest.browser_graph;
  const [ort, modelBytes, tokenizerBytes] = await Promise.all([
    loadOrt(),
    graph.sha256 === sha256
      ? cachedBytes(new URL("file", root), sha256, headers)
      : cachedBytes(new URL("browser-graph", root), graph.sha256, headers),
    cachedBytes(new URL("tokenizer", root), manifest.tokenizer.sha256, headers),
  ]);
  const tokenizer = new BertWordPiece(JSON.parse(new TextDecoder().decode(tokenizerBytes)),
                                      manifest.max_tokens);
  // the emulating copy runs unoptimized: ONNX Runtime's fusions take seconds on its extra
  // operators and gain nothing there (measured: session 2.3 s and 0.8 s a query, against
  // 5.9 s and 1.9 s with "all"); the plain file gets every optimization
  const session = await ort.InferenceSession.create(modelBytes, {
    executionProviders: ["wasm"],
    graphOptimizationLevel: graph.emulates ? "disabled" : "all" });
  for (const name of session.inputNames) {
    if (!["input_ids", "attention_mask", "token_type_ids"].includes(name)) {
      throw new Error(`model ${manifest.name}: unexpected input ${name}`);
    }
  }
  const output = session.outputNames.includes("last_hidden_state")
    ? "last_hidden_state" : session.outputNames[0];
  return { ort, manifest, tokenizer, session, output };
}

async function runModel(bundle, ids) {
  const { ort, manifest, session, output } = bundle;
  const n = ids.length;
  const columns = {
    input_ids: BigInt64Array.from(ids, BigInt),
    attention_mask: new BigInt64Array(n).fill(1n),
    token_type_ids: new BigInt64Array(n), // one sequence: type 0 throughout
  };
  const feeds = {};
  for (const name of session.inputNames) {
    feeds[name] = new ort.Tensor("int64", columns[name], [1, n]);
  }
  const result = await session.run(feeds);
  const states = result[output];
  const [, tokens, dim] = states.dims;
  if (states.dims.length !== 3 || tokens !== n || dim !== manifest.dim) {
    throw new Error(`model ${manifest.name}: output ${output} has shape ` +
                    `[${states.dims}], expected [1, ${n}, ${manifest.dim}]`);
  }
  const data = states.data;
  const pooled = new Float64Array(dim);
  if (manifest.pooling === "cls") {
    for (let j = 0; j < dim; j++) pooled[j] = data[j];
  } else { // mean over the attention mask: every token, since nothing is padded
    for (let t = 0; t < tokens; t++) {
      for (let j = 0; j < dim; j++) pooled[j] += data[t * dim + j];
    }
    for (let j = 0; j < dim; j++) pooled[j] /= Math.max(tokens, 1e-9);
  }
  let scale = 1;
  if (manifest.normalize) {
    let sum = 0;
    for (let j = 0; j < dim; j++) sum += pooled[j] * pooled[j];
    scale = 1 / Math.max(Math.sqrt(sum), 1e-12);
  }
  return Float32Array.from(pooled, (x) => x * scale);
}

// -- fetching, checking and caching content-addressed files ---------------------------------

async function fetchJson(url, headers) {
  const response = await fetch(url, { headers, credentials: "same-origin" });
  if (!response.ok) {
    throw new Error(`${url.pathname}: ${response.status} ${await errorText(response)}`);
  }
  return response.json();
}

async function errorText(response) {
  try {
    const body = await response.json();
    return body.error ? `${body.error.code}: ${body.error.message}` : JSON.stringify(body);
  } catch {
    return response.statusText;
  }
}

/** The bytes at `url`, whose sha256 is `sha256`: from the Cache API when there, else fetched,
 *  checked and cached. A file that does not hash to `sha256` is refused and never cached. */
async function cachedBytes(url, sha256, headers) {
  const cache = globalThis.caches ? await globalThis.caches.open(CACHE_NAME) : null;
  const key = `${url.origin}/calinode-cache/${sha256}`;
  const hit = cache ? await cache.match(key) : undefined;
  if (hit) {
    const bytes = new Uint8Array(await hit.arrayBuffer());
    if (await hashMatches(bytes, sha256)) {
      return bytes;
    }
    await cache.delete(key); // damaged storage: fetch it again
  }
  const response = await fetch(url, { headers, credentials: "same-origin" });
  if (!response.ok) {
    throw new Error(`${url.pathname}: ${response.status} ${await errorText(response)}`);
  }
  const bytes = new Uint8Array(await response.arrayBuffer());
  if (!(await hashMatches(bytes, sha256))) {
    throw new Error(`${url.pathname}: the bytes received do not have sha256 ${sha256}`);
  }
  if (cache) {
    await cache.put(key, new Response(bytes, {
      headers: { "content-type": "application/octet-stream" } }));
  }
  return bytes;
}

async function hashMatches(bytes, sha256) {
  const subtle = globalThis.crypto && globalThis.crypto.subtle;
  if (!subtle) {
    return true; // not a secure context (plain http to a non-loopback host): cannot check
  }
  const digest = new Uint8Array(await subtle.digest("SHA-256", bytes));
  return Array.from(digest, (b) => b.toString(16).padStart(2, "0")).join("") === sha256;
}

// -- the tokenizer: Hugging Face `tokenizers` JSON, BERT WordPiece family --------------------

const CJK_RANGES = [[0x4E00, 0x9FFF], [0x3400, 0x4DBF], [0x20000, 0x2A6DF], [0x2A700, 0x2B73F],
                    [0x2B740, 0x2B81F], [0x2B920, 0x2CEAF], [0xF900, 0xFAFF],
                    [0x2F800, 0x2FA1F]];
const OTHER = /^\p{C}$/u; // Cc, Cf, Cs, Co, Cn: `tokenizers`' is_control (but \t \n \r)
const WHITESPACE = /^\p{White_Space}$/u; // Rust's char::is_whitespace
const PUNCTUATION = /^[\p{P}!-/:-@[-`{-~]$/u; // Unicode P* or any ASCII punctuation
const NONSPACING_MARK = /^\p{Mn}$/u;

function isCjk(cp) {
  return CJK_RANGES.some(([lo, hi]) => cp >= lo && cp <= hi);
}

/**
 * The BERT WordPiece tokenizer of a `tokenizer.json`, as `tokenizers` runs it with truncation
 * at `maxTokens` (special tokens included) and no padding: the ids the node's embedder feeds.
 * Refuses a file of another family rather than tokenizing it differently.
 */
export class BertWordPiece {
  constructor(spec, maxTokens) {
    const model = spec.model || {};
    if (model.type !== "WordPiece") {
      throw new Error(`unsupported tokenizer model ${model.type}: only WordPiece`);
    }
    const normalizer = spec.normalizer;
    if (normalizer && normalizer.type !== "BertNormalizer") {
      throw new Error(`unsupported normalizer ${normalizer.type}: only BertNormalizer`);
    }
    if (spec.pre_tokenizer && spec.pre_tokenizer.type !== "BertPreTokenizer") {
      throw new Error(`unsupported pre-tokenizer ${spec.pre_tokenizer.type}`);
    }
    this.normalizer = normalizer || null;
    this.vocab = new Map(Object.entries(model.vocab));
    this.unk = model.unk_token;
    this.prefix = model.continuing_subword_prefix ?? "##";
    this.maxWordChars = model.max_input_chars_per_word ?? 100;
    this.added = (spec.added_tokens || []).filter((t) => t.content)
      .sort((a, b) => b.content.length - a.content.length); // longest match first
    [this.head, this.tail] = specialTemplate(spec.post_processor, this.vocab);
    this.maxTokens = maxTokens;
    if (!this.vocab.has(this.unk)) {
      throw new Error(`tokenizer: unk token ${this.unk} is not in the vocabulary`);
    }
  }

  /** Token ids of `text` with [CLS]/[SEP], cut at maxTokens. */
  encode(text) {
    const ids = [];
    for (const piece of this.splitAdded(text)) {
      if (piece.id !== undefined) {
        ids.push(piece.id);
        continue;
      }
      for (const word of preTokenize(this.normalize(piece.text))) {
        ids.push(...this.wordPiece(word));
      }
    }
    const room = Math.max(0, this.maxTokens - this.head.length - this.tail.length);
    return [...this.head, ...ids.slice(0, room), ...this.tail];
  }

  /** Text split around the added (special) tokens, which match the raw text. */
  splitAdded(text) {
    const pieces = [];
    let start = 0;
    let plain = 0;
    while (start < text.length) {
      const token = this.added.find((t) => text.startsWith(t.content, start)
                                           && this.boundaryOk(t, text, start));
      if (token === undefined) {
        start += 1;
        continue;
      }
      let from = start;
      let to = start + token.content.length;
      if (token.lstrip) while (from > plain && /\s/u.test(text[from - 1])) from--;
      if (token.rstrip) while (to < text.length && /\s/u.test(text[to])) to++;
      if (from > plain) pieces.push({ text: text.slice(plain, from) });
      pieces.push({ id: token.id });
      start = plain = to;
    }
    if (plain < text.length) pieces.push({ text: text.slice(plain) });
    return pieces;
  }

  boundaryOk(token, text, start) {
    if (!token.single_word) return true;
    const word = /[\p{L}\p{N}_]/u;
    const before = start > 0 ? text[start - 1] : "";
    const after = text[start + token.content.length] || "";
    return !word.test(before) && !word.test(after);
  }

  normalize(text) {
    const n = this.normalizer;
    if (n === null) return text;
    let chars = Array.from(text);
    if (n.clean_text) {
      chars = chars.filter((c) => {
        const cp = c.codePointAt(0);
        const control = c !== "\t" && c !== "\n" && c !== "\r" && OTHER.test(c);
        return !(cp === 0 || cp === 0xFFFD || control);
      }).map((c) => (c === "\t" || c === "\n" || c === "\r" || WHITESPACE.test(c) ? " " : c));
    }
    if (n.handle_chinese_chars) {
      chars = chars.map((c) => (isCjk(c.codePointAt(0)) ? ` ${c} ` : c));
    }
    let out = chars.join("");
    const stripAccents = n.strip_accents ?? n.lowercase;
    if (stripAccents) {
      out = Array.from(out.normalize("NFD")).filter((c) => !NONSPACING_MARK.test(c)).join("");
    }
    if (n.lowercase) {
      out = Array.from(out, (c) => c.toLowerCase()).join(""); // per character, as Rust does
    }
    return out;
  }

  wordPiece(word) {
    const chars = Array.from(word);
    if (chars.length > this.maxWordChars) return [this.vocab.get(this.unk)];
    const ids = [];
    let start = 0;
    while (start < chars.length) {
      let end = chars.length;
      let found;
      while (start < end) {
        const piece = (start > 0 ? this.prefix : "") + chars.slice(start, end).join("");
        found = this.vocab.get(piece);
        if (found !== undefined) break;
        end -= 1;
      }
      if (found === undefined) return [this.vocab.get(this.unk)];
      ids.push(found);
      start = end;
    }
    return ids;
  }
}

/** BertPreTokenizer: split on whitespace (dropped), then every punctuation mark alone. */
function preTokenize(text) {
  const words = [];
  let current = "";
  for (const c of text) {
    if (WHITESPACE.test(c)) {
      if (current) words.push(current);
      current = "";
    } else if (PUNCTUATION.test(c)) {
      if (current) words.push(current);
      words.push(c);
      current = "";
    } else {
      current += c;
    }
  }
  if (current) words.push(current);
  return words;
}

/** The ids put before and after a single sequence by the post-processor. */
function specialTemplate(post, vocab) {
  if (!post) return [[], []];
  if (post.type === "BertProcessing") {
    return [[post.cls[1]], [post.sep[1]]];
  }
  if (post.type !== "TemplateProcessing") {
    throw new Error(`unsupported post-processor ${post.type}`);
  }
  const head = [];
  const tail = [];
  let seen = false;
  for (const item of post.single) {
    if (item.Sequence) {
      seen = true;
      continue;
    }
    const name = item.SpecialToken.id;
    const special = post.special_tokens[name];
    const ids = special ? special.ids : [vocab.get(name)];
    (seen ? tail : head).push(...ids);
  }
  return [head, tail];
}
