// The node's JSON API, from the page: same-origin fetches, authenticated by the session
// cookie the login set (HttpOnly: this script never sees it).

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

async function check(response) {
  if (response.ok) return response;
  let code = "HTTP_" + response.status;
  let message = response.statusText;
  try {
    const body = await response.json();
    code = body.error?.code ?? code;
    message = body.error?.message ?? message;
  } catch { /* not JSON */ }
  throw new ApiError(response.status, code, message);
}

export async function getJSON(path, signal) {
  const response = await check(await fetch(path, { signal, cache: "no-store" }));
  return response.json();
}

export async function postJSON(path, body, signal) {
  const response = await check(await fetch(path, {
    method: "POST", signal, headers: { "content-type": "application/json" },
    body: JSON.stringify(body),
  }));
  return response.json();
}

/** POST `body`, then call `onLine(text)` for every line of the streamed answer as it comes
 * (fetch + ReadableStream: NDJSON lines, or server-sent events' lines). */
export async function postStream(path, body, onLine, signal) {
  const response = await check(await fetch(path, {
    method: "POST", signal, headers: { "content-type": "application/json" },
    body: JSON.stringify(body),
  }));
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffered = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffered += decoder.decode(value, { stream: true });
    let newline;
    while ((newline = buffered.indexOf("\n")) >= 0) {
      const line = buffered.slice(0, newline).trim();
      buffered = buffered.slice(newline + 1);
      if (line) onLine(line);
    }
  }
  if (buffered.trim()) onLine(buffered.trim());
}
