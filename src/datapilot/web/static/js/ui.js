// Small DOM helpers shared by the pages: element builder, panels, toasts, formatting.

import { ApiError, isUnavailable } from "./api.js";

/** h("div", {class: "x", onclick: fn}, child, "text", [more]) */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on") && typeof v === "function") el.addEventListener(k.slice(2), v);
    else if (k === "class") el.className = v;
    else if (k === "html") el.innerHTML = v;
    else if (k === "dataset") Object.assign(el.dataset, v);
    else if (k === "value" && "value" in el) el.value = v;
    else if (v === true) el.setAttribute(k, "");
    else el.setAttribute(k, String(v));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const c of children) {
    if (c === undefined || c === null || c === false) continue;
    if (Array.isArray(c)) append(el, c);
    else el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
}

const SVG_NS = "http://www.w3.org/2000/svg";
export function svg(tag, attrs = {}, ...children) {
  const el = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs)) if (v !== undefined && v !== null) el.setAttribute(k, String(v));
  for (const c of children) if (c) el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return el;
}

let uid = 0;
export function newId(prefix = "f") {
  uid += 1;
  return `${prefix}-${uid}`;
}

/** A labelled form control: field("Name", input) links the label to the input. */
export function field(label, control, { cls = "", hint } = {}) {
  if (!control.id) control.id = newId("field");
  return h("div", { class: `field ${cls}` }, h("label", { for: control.id }, label), control, hint ? h("div", { class: "muted small" }, hint) : null);
}

export function button(label, onclick, { kind = "", type = "button", small = false, title, testid } = {}) {
  return h(
    "button",
    { class: `button ${kind} ${small ? "small" : ""}`.trim(), type, onclick, title, "data-testid": testid },
    label,
  );
}

export function badge(text, kind = "") {
  return h("span", { class: `badge ${kind}` }, text);
}

export function statusBadge(status) {
  const s = String(status || "unknown").toLowerCase();
  const kind = ["ready", "done", "ok", "running", "hit"].includes(s)
    ? "ok"
    : ["failed", "error", "stopped", "broken", "unhealthy"].includes(s)
      ? "danger"
      : "warn";
  return badge(s, kind);
}

export function spinner(label = "Loading") {
  return h("span", { class: "row muted" }, h("span", { class: "spinner", "aria-hidden": "true" }), label);
}

export function toast(message, kind = "") {
  const box = document.getElementById("toasts");
  const el = h("div", { class: `toast ${kind}` }, message);
  box.append(el);
  setTimeout(() => el.remove(), kind === "error" ? 8000 : 4000);
}

export function errorNotice(err, title = "Something went wrong") {
  const message = err instanceof Error ? err.message : String(err);
  return h("div", { class: "notice error", role: "alert" }, h("strong", {}, `${title}: `), message);
}

const EMPTY_ICON =
  '<svg viewBox="0 0 24 24" aria-hidden="true"><rect x="3" y="4" width="18" height="16" rx="2"></rect><path d="M3 9h18M8 14h8"></path></svg>';

export function unavailable(what, detail) {
  return h(
    "div",
    { class: "notice unavailable", "data-testid": "unavailable" },
    h("div", { html: EMPTY_ICON }),
    h("h2", {}, `${what} is not available`),
    h("p", { class: "muted" }, detail),
  );
}

/** A page-level failure to load: the module is missing (a calm panel) or another error (its message). */
export function loadFailure(err, what, detail) {
  if (isUnavailable(err)) {
    const why = /^not found$/i.test(err.message) ? "its API is not part of this server (the module has not landed, or this server role leaves it out)." : err.message;
    return unavailable(what, detail || `This DataPilot server does not offer ${what.toLowerCase()}: ${why}`);
  }
  if (err instanceof ApiError && err.status === 401) return errorNotice(err, "Not signed in");
  return errorNotice(err, `Could not load ${what.toLowerCase()}`);
}

export function pageHead(title, subtitle, ...actions) {
  return h(
    "div",
    { class: "page-head" },
    h("div", {}, h("h1", {}, title), subtitle ? h("p", {}, subtitle) : null),
    actions.length ? h("div", { class: "row" }, actions) : null,
  );
}

export function panel(title, ...children) {
  const head = title
    ? h("div", { class: "panel-title" }, typeof title === "string" ? h("h2", {}, title) : title)
    : null;
  return h("section", { class: "panel" }, head, children);
}

export function formatBytes(n) {
  if (n === null || n === undefined) return "";
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KB`;
  return `${(n / 1024 / 1024).toFixed(1)} MB`;
}

export function formatTime(seconds) {
  if (!seconds) return "";
  const d = new Date(seconds * 1000);
  const today = new Date();
  return d.toDateString() === today.toDateString() ? d.toLocaleTimeString() : d.toLocaleString();
}

export function formatMs(ms) {
  if (ms === null || ms === undefined) return "\u2013";
  if (ms >= 1000) return `${(ms / 1000).toFixed(2)} s`;
  return `${ms.toFixed(ms < 10 ? 1 : 0)} ms`;
}

export function percent(x) {
  if (x === null || x === undefined || Number.isNaN(x)) return "\u2013";
  return `${(x * 100).toFixed(x === 0 || x === 1 ? 0 : 1)}%`;
}

/** Run an action from a button: disable it meanwhile, toast the error's message if it fails. */
export async function busy(btn, work) {
  const was = btn?.disabled;
  if (btn) btn.disabled = true;
  try {
    return await work();
  } catch (err) {
    toast(err.message || String(err), "error");
    return undefined;
  } finally {
    if (btn) btn.disabled = was;
  }
}
