// Talking to the DataPilot server: JSON calls, uploads with progress, server-sent events, readable errors.

const KEY_STORAGE = "datapilot.apiKey";

export function apiKey() {
  try {
    return localStorage.getItem(KEY_STORAGE) || "";
  } catch {
    return "";
  }
}

export function setApiKey(key) {
  if (key) localStorage.setItem(KEY_STORAGE, key);
  else localStorage.removeItem(KEY_STORAGE);
}

export class ApiError extends Error {
  constructor(message, status = 0, body = null) {
    super(message);
    this.name = "ApiError";
    this.status = status;
    this.body = body;
  }
}

/** The message a person should read, from any error shape the server (or the network) produces. */
export function errorMessage(body, status = 0, fallback = "") {
  if (body && typeof body === "object") {
    const err = body.error;
    if (err && typeof err === "object" && err.message) return String(err.message);
    if (typeof err === "string") return err;
    if (body.message) return String(body.message);
    if (typeof body.detail === "string") return body.detail;
    if (Array.isArray(body.detail) && body.detail[0]?.msg) return body.detail.map((d) => d.msg).join("; ");
  }
  if (typeof body === "string" && body.trim()) return body.trim().slice(0, 500);
  if (status === 401) return "This server needs an API key: set one with \u201cAPI key\u201d in the sidebar.";
  if (status) return fallback || `The server answered HTTP ${status}.`;
  return fallback || "The server could not be reached.";
}

/** A page's backing module is missing on this server: a route that does not exist, or a disabled module. */
export function isUnavailable(err) {
  if (!(err instanceof ApiError)) return false;
  if (err.status === 404 && /^not found$/i.test(err.message)) return true;
  return /not (available|enabled) on this server/i.test(err.message);
}

function headers(extra = {}) {
  const out = { ...extra };
  const key = apiKey();
  if (key) out.authorization = `Bearer ${key}`;
  return out;
}

async function readError(resp) {
  const text = await resp.text().catch(() => "");
  let body = text;
  try {
    body = JSON.parse(text);
  } catch {
    /* not JSON: keep the text */
  }
  return new ApiError(errorMessage(body, resp.status), resp.status, body);
}

/** fetch + JSON: resolves to the parsed body, rejects with an ApiError carrying the server's message. */
export async function api(path, { method = "GET", json, body, query, signal, headers: extra } = {}) {
  let url = path;
  if (query) {
    const params = new URLSearchParams();
    for (const [k, v] of Object.entries(query)) if (v !== undefined && v !== null && v !== "") params.set(k, v);
    const qs = params.toString();
    if (qs) url += (url.includes("?") ? "&" : "?") + qs;
  }
  const init = { method, signal, headers: headers(extra) };
  if (json !== undefined) {
    init.body = JSON.stringify(json);
    init.headers["content-type"] = "application/json";
  } else if (body !== undefined) {
    init.body = body;
  }
  let resp;
  try {
    resp = await fetch(url, init);
  } catch (e) {
    if (e.name === "AbortError") throw e;
    throw new ApiError(`The server could not be reached (${e.message}).`);
  }
  if (!resp.ok) throw await readError(resp);
  if (resp.status === 204) return null;
  const type = resp.headers.get("content-type") || "";
  return type.includes("json") ? resp.json() : resp.text();
}

/** POST a body with upload progress (fetch has none): onProgress(fraction) as bytes leave. */
export function upload(path, body, { onProgress, query } = {}) {
  return new Promise((resolve, reject) => {
    let url = path;
    if (query) url += "?" + new URLSearchParams(Object.entries(query).filter(([, v]) => v)).toString();
    const xhr = new XMLHttpRequest();
    xhr.open("POST", url);
    for (const [k, v] of Object.entries(headers())) xhr.setRequestHeader(k, v);
    xhr.upload.onprogress = (e) => {
      if (e.lengthComputable && onProgress) onProgress(e.loaded / e.total);
    };
    xhr.onload = () => {
      let parsed = xhr.responseText;
      try {
        parsed = JSON.parse(xhr.responseText);
      } catch {
        /* keep text */
      }
      if (xhr.status >= 200 && xhr.status < 300) resolve(parsed);
      else reject(new ApiError(errorMessage(parsed, xhr.status), xhr.status, parsed));
    };
    xhr.onerror = () => reject(new ApiError("The upload could not reach the server."));
    xhr.send(body);
  });
}

/**
 * POST JSON and read the answer as server-sent events. onOpen(response) sees the headers first;
 * onEvent(obj) gets each `data:` payload parsed (until `[DONE]`). An in-band {"error": ...} payload
 * is passed on as it is: the caller decides how to show it.
 */
export async function streamEvents(path, json, { signal, onOpen, onEvent }) {
  let resp;
  try {
    resp = await fetch(path, {
      method: "POST",
      signal,
      headers: headers({ "content-type": "application/json", accept: "text/event-stream" }),
      body: JSON.stringify(json),
    });
  } catch (e) {
    if (e.name === "AbortError") throw e;
    throw new ApiError(`The server could not be reached (${e.message}).`);
  }
  if (!resp.ok) throw await readError(resp);
  onOpen?.(resp);
  const type = resp.headers.get("content-type") || "";
  if (!type.includes("event-stream")) {
    onEvent(await resp.json());
    return resp;
  }
  const reader = resp.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += value;
    let cut;
    while ((cut = buffer.search(/\r?\n\r?\n/)) >= 0) {
      const block = buffer.slice(0, cut);
      buffer = buffer.slice(cut).replace(/^\r?\n\r?\n/, "");
      const data = block
        .split(/\r?\n/)
        .filter((l) => l.startsWith("data:"))
        .map((l) => l.slice(5).replace(/^ /, ""))
        .join("\n");
      if (!data) continue;
      if (data === "[DONE]") return resp;
      let obj;
      try {
        obj = JSON.parse(data);
      } catch {
        obj = { type: "text", delta: data };
      }
      onEvent(obj);
    }
  }
  return resp;
}
