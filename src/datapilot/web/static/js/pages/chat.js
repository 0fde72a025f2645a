// Chat: conversations (kept in this browser), a mode and model picker, streamed answers with
// markdown, SQL, result tables and charts, a cache-hit mark (with thumbs that tell the cache whether
// the stored answer was right) and a stop button.

import { api, streamEvents, upload } from "../api.js";
import { chart, codeBlock, has, markdown, resultTable } from "../render.js";
import { badge, errorNotice, field, h, newId, spinner, toast } from "../ui.js";

const STORE = "datapilot.chat.v1";
const MODE_LABELS = {
  normal: "Chat",
  knowledge: "Knowledge",
  data: "Chat with data",
  db_qa: "Database Q&A",
  excel: "Excel / CSV",
  dashboard: "Dashboard",
  agent: "Agent",
};
const MODE_ORDER = ["normal", "knowledge", "data", "excel", "dashboard", "db_qa", "agent"];
const SOURCE_MODES = new Set(["data", "db_qa", "excel", "dashboard", "agent"]);
const FILE_KINDS = new Set(["csv", "excel", "parquet", "files", "duckdb"]);
const SUGGESTIONS = {
  normal: ["Explain what a semantic cache does in two sentences.", "Write a SQL query that counts orders per month."],
  data: ["How many customers are in each segment?", "What are the top 5 products by revenue?", "How many orders were placed per month?"],
  db_qa: ["Which tables reference customers?", "What does the orders table hold?"],
  dashboard: ["Orders by status; revenue by product category"],
  knowledge: ["Summarise the documents in this space."],
  excel: ["Upload a CSV or Excel file, then ask about it."],
  agent: ["Find the top customers and explain the result."],
};
// Thumbs as line icons (an emoji needs a font that many machines lack).
const THUMBS = {
  up: '<svg viewBox="0 0 24 24" aria-hidden="true"><path d="M14 9V5a3 3 0 0 0-3-3l-4 9v11h11.28a2 2 0 0 0 2-1.7l1.38-9a2 2 0 0 0-2-2.3zM7 22H4a2 2 0 0 1-2-2v-7a2 2 0 0 1 2-2h3"></path></svg>',
  down: '<svg viewBox="0 0 24 24" aria-hidden="true"><path d="M10 15v4a3 3 0 0 0 3 3l4-9V2H5.72a2 2 0 0 0-2 1.7l-1.38 9a2 2 0 0 0 2 2.3zm7-13h2.67A2.31 2.31 0 0 1 22 4v7a2.31 2.31 0 0 1-2.33 2H17"></path></svg>',
};

/** A pair of thumbs and a status line: ``submit(rating)`` saves the mark (its result goes to ``said``);
 * the buttons lock once it is saved and unlock with the error if it is not. ``rated``: a mark already made. */
function thumbs({ prefix, labels, said, rated, submit }) {
  const status = h("span", { class: "small muted", role: "status", "data-testid": `${prefix}-status` });
  const choice = (rating) =>
    h("button", { class: "icon-button feedback-button", type: "button", "aria-label": labels[rating], title: labels[rating], "aria-pressed": "false", "data-testid": `${prefix}-${rating}`, dataset: { rating }, html: THUMBS[rating] });
  const buttons = [choice("up"), choice("down")];
  const show = (rating, message) => {
    for (const b of buttons) {
      b.setAttribute("aria-pressed", String(b.dataset.rating === rating));
      b.disabled = true;
    }
    status.className = "small muted";
    status.textContent = message;
  };
  const rate = async (rating) => {
    for (const b of buttons) b.disabled = true;
    status.textContent = "Saving\u2026";
    try {
      show(rating, said(rating, await submit(rating)));
    } catch (err) {
      for (const b of buttons) b.disabled = false;
      status.className = "small error-text";
      status.textContent = err.message || String(err);
    }
  };
  for (const b of buttons) b.addEventListener("click", () => rate(b.dataset.rating));
  if (rated) show(rated, said(rated));
  return h("span", { class: "thumbs" }, buttons, status);
}

/** How sure the pipeline is: a verified SQL reused, or how many of its candidates agreed. */
function confidenceNote(answer) {
  let text = "";
  if (answer.reused) text = `verified SQL reused (from "${answer.reused.question}")`;
  else if (typeof answer.confidence === "number" && answer.confidence > 0) text = `confidence ${Math.round(answer.confidence * 100)}%`;
  return text ? h("span", { class: "small muted", "data-testid": "confidence" }, text + " · ") : "";
}
const KEEP_ROWS = 200; // rows of a table or chart kept in the browser's storage per message

// ---- storage ---------------------------------------------------------------------------------------------

function load() {
  try {
    const data = JSON.parse(localStorage.getItem(STORE) || "null");
    if (data && Array.isArray(data.conversations)) return data;
  } catch {
    /* start afresh */
  }
  return { conversations: [], current: null, mode: "normal" };
}

function save(state) {
  for (let attempt = 0; attempt < 5; attempt += 1) {
    try {
      localStorage.setItem(STORE, JSON.stringify(state));
      return;
    } catch {
      // Over the quota: drop the oldest conversation's rich events, then whole old conversations.
      const old = state.conversations[state.conversations.length - 1];
      if (!old || state.conversations.length === 1) return;
      state.conversations.pop();
    }
  }
}

function compact(value) {
  if (Array.isArray(value)) return value.slice(0, KEEP_ROWS).map(compact);
  if (value && typeof value === "object") {
    const out = {};
    for (const [k, v] of Object.entries(value)) out[k] = compact(v);
    return out;
  }
  return value;
}

function readable(value) {
  if (value === null || value === undefined) return "";
  if (typeof value === "string") return value;
  if (typeof value === "object" && value.message) return String(value.message);
  return JSON.stringify(value);
}

// ---- one assistant answer ------------------------------------------------------------------------------

function stepText(ev) {
  const list = (xs) => (xs || []).map((t) => (typeof t === "string" ? t : t.name)).join(", ");
  switch (ev.name) {
    case "text2sql":
      return `Writing SQL with ${ev.model} over ${ev.datasource}`;
    case "schema":
      return `Tables chosen: ${list(ev.tables)}`;
    case "attempt":
      return ev.error ? `Attempt ${ev.round} failed: ${readable(ev.error)}` : `Attempt ${ev.round} ran`;
    case "plan":
      return `Planning analyses over ${list(ev.tables)}`;
    case "fallback":
      return `Answering each question separately (${ev.reason})`;
    case "loaded":
      return `Loaded ${ev.file} as ${ev.datasource}`;
    default: {
      const { type: _t, scene: _s, name, ...rest } = ev;
      const detail = Object.keys(rest).length ? `: ${JSON.stringify(rest).slice(0, 200)}` : "";
      return `${name || "step"}${detail}`;
    }
  }
}

class AnswerView {
  constructor(msg) {
    this.msg = msg;
    this.text = "";
    this.textEl = null;
    this.steps = null;
    this.lastTable = null;
    this.frame = 0;
    this.streaming = true;
    this.meta = h(
      "div",
      { class: "meta" },
      h("strong", {}, "DataPilot"),
      h("span", {}, `\u00B7 ${MODE_LABELS[msg.mode] || msg.mode}`),
      msg.model ? h("span", {}, `\u00B7 ${msg.model}`) : null,
    );
    this.placeholder = h("div", { class: "muted" }, spinner("Thinking\u2026"));
    this.bubble = h("div", { class: "bubble" }, this.placeholder);
    this.el = h(
      "article",
      { class: "message assistant", "data-testid": "assistant-message", "aria-busy": "true" },
      h("div", { class: "avatar", "aria-hidden": "true" }, "DP"),
      h("div", { class: "body" }, this.meta, this.bubble),
    );
    if (msg.cache) this.setCache(msg.cache);
  }

  setCache(value) {
    if (value === "hit" && !this.meta.querySelector("[data-testid=cache-hit]")) {
      this.meta.append(h("span", { class: "badge ok", "data-testid": "cache-hit", title: "Answered from the semantic cache" }, "\u26A1 cache hit"));
    }
  }

  add(el) {
    this.placeholder?.remove();
    this.placeholder = null;
    // The streamed answer text stays last while events arrive around it.
    if (this.textEl && this.textEl.parentNode === this.bubble && el !== this.textEl) this.bubble.insertBefore(el, this.textEl);
    else this.bubble.append(el);
    return el;
  }

  appendText(delta) {
    if (!delta) return;
    if (!this.textEl) {
      this.textEl = h("div", { class: "answer", "data-testid": "answer-text" });
      this.add(this.textEl);
    }
    this.text += delta;
    if (!this.frame) this.frame = requestAnimationFrame(() => this.drawText());
  }

  drawText() {
    this.frame = 0;
    if (!this.textEl) return;
    markdown(this.text, this.textEl);
    if (!this.streaming) return;
    // The caret goes at the end of the last paragraph or list item, not on a line of its own.
    let host = this.textEl;
    while (host.lastElementChild && /^(P|UL|OL|LI|BLOCKQUOTE|H[1-6])$/.test(host.lastElementChild.tagName)) host = host.lastElementChild;
    host.append(h("span", { class: "caret", "aria-hidden": "true" }));
  }

  step(ev) {
    if (!this.steps) {
      this.stepList = h("ol");
      this.stepSummary = h("summary", {}, "Steps");
      this.steps = this.add(h("details", { class: "steps" }, this.stepSummary, this.stepList));
    }
    this.stepList.append(h("li", {}, stepText(ev)));
    this.stepSummary.textContent = `Steps (${this.stepList.children.length})`;
  }

  table(ev, caption) {
    const bits = [`${ev.row_count ?? ev.rows.length} rows`];
    if (ev.elapsed_ms !== undefined) bits.push(`${ev.elapsed_ms} ms`);
    if (ev.truncated) bits.push("cut at the row limit");
    return resultTable(ev.columns || [], ev.rows || [], { caption: caption || bits.join(" \u00B7 ") });
  }

  error(err) {
    const message = readable(err?.error ?? err) || "unknown error";
    this.add(h("div", { class: "notice error", role: "alert", "data-testid": "chat-error" }, message));
  }

  trace(ev) {
    // Process events (agents talking, tools called): one line each in a collapsed log.
    if (!this.traceBox) {
      this.traceList = h("ol");
      this.traceSummary = h("summary", {}, "Activity");
      this.traceBox = this.add(h("details", { class: "steps", "data-testid": "activity" }, this.traceSummary, this.traceList));
    }
    const who = ev.agent ? `${ev.agent}${ev.role ? ` (${ev.role})` : ""}` : "";
    const text = [ev.content, ev.task, ev.summary, ev.note, ev.observation, ev.goal, ev.tool].find((x) => typeof x === "string" && x.trim());
    const clipped = text && text.length > 240 ? `${text.slice(0, 239)}\u2026` : text;
    this.traceList.append(h("li", {}, h("strong", {}, ev.type.replace(/_/g, " ")), who ? ` \u00B7 ${who}` : "", clipped ? `: ${clipped}` : ""));
    this.traceSummary.textContent = `Activity (${this.traceList.children.length})`;
  }

  /** A report in markdown; its images of the team's charts (c1.svg ...) become live charts, not fetches. */
  report(text, charts) {
    if (!has.markdown) return markdown(text);
    const byFile = new Map();
    for (const c of charts) {
      for (const name of [c.file, `${c.id}.svg`, `${c.id}.png`]) if (name) byFile.set(name, c);
    }
    const marked = text.replace(/!\[[^\]]*\]\(([^)\s]+)[^)]*\)/g, (all, src) => {
      const c = byFile.get(src) || byFile.get(src.split("/").pop());
      return c ? `<div data-report-chart="${c.id}"></div>` : all;
    });
    const el = markdown(marked);
    for (const slot of el.querySelectorAll("[data-report-chart]")) {
      const c = charts.find((x) => x.id === slot.dataset.reportChart);
      slot.replaceWith(c?.vega_lite ? chart(c.vega_lite) : h("span"));
    }
    return el;
  }

  generic(ev) {
    const isReport = ev.type === "report" || typeof ev.markdown === "string";
    if (!isReport && ("agent" in ev || "run_id" in ev)) return this.trace(ev);
    const { type, scene: _scene, seq: _seq, run_id: _run, t: _t, ...rest } = ev;
    const box = h("div", { class: "event-generic", "data-event": type }, h("div", { class: "event-type" }, type));
    const prose = rest.report ?? rest.markdown ?? rest.content ?? rest.text ?? rest.message ?? rest.thought;
    if (typeof prose === "string" && isReport) {
      box.append(this.report(prose, rest.charts || []));
    } else if (typeof prose === "string" && Object.keys(rest).length <= 3) {
      box.append(markdown(prose));
    } else if (Object.keys(rest).length) {
      box.append(h("pre", { class: "json" }, JSON.stringify(rest, null, 2)));
    }
    this.add(box);
  }

  event(ev) {
    if (!ev || typeof ev !== "object") return;
    if (ev.error && !ev.type) return this.error(ev);
    switch (ev.type) {
      case "step":
        return this.step(ev);
      case "sql":
        return this.add(codeBlock(ev.sql, "sql", "SQL"));
      case "table":
        this.lastTable = ev;
        return this.add(this.table(ev));
      case "chart":
        if (ev.vega_lite?.kind === "table") return undefined;
        return this.add(chart(ev.vega_lite));
      case "text":
        return this.appendText(ev.delta ?? ev.text ?? "");
      case "delta":
        return this.appendText(ev.text ?? ev.delta ?? "");
      case "citations":
        return this.citations(ev.citations || []);
      case "columns":
        return this.columns(ev);
      case "analysis":
        return this.analysis(ev);
      case "schema":
        return this.schema(ev);
      case "error":
        return this.error(ev.error ?? ev);
      case "done":
        return this.done(ev);
      default:
        return this.generic(ev);
    }
  }

  citations(list) {
    if (!list.length) return;
    this.citationBox?.remove();
    this.citationBox = this.add(
      h(
        "details",
        { class: "citations" },
        h("summary", {}, `Sources (${list.length})`),
        h("ol", {}, list.map((c) => h("li", {}, h("strong", {}, c.source), c.page ? ` p.${c.page}` : "", c.section ? ` \u00B7 ${c.section}` : "", h("div", {}, (c.text || "").slice(0, 220))))),
      ),
    );
  }

  columns(ev) {
    for (const [table, cols] of Object.entries(ev.tables || {})) {
      this.add(
        h(
          "details",
          { class: "steps" },
          h("summary", {}, `Columns of ${table} (${cols.length})`),
          resultTable(["name", "original", "type", "nulls", "distinct", "min", "max"], cols, { pageSize: 8 }),
        ),
      );
    }
  }

  analysis(ev) {
    const box = h("section", { class: "analysis", "data-testid": "analysis" }, h("h3", {}, ev.title || "Analysis"));
    if (ev.sql) box.append(codeBlock(ev.sql, "sql", "SQL"));
    if (ev.error) box.append(h("div", { class: "notice error" }, readable(ev.error)));
    if (ev.table) box.append(this.table(ev.table));
    if (ev.chart?.vega_lite && ev.chart.vega_lite.kind !== "table") box.append(chart(ev.chart.vega_lite));
    this.add(box);
  }

  schema(ev) {
    const tables = ev.tables || [];
    this.add(
      h(
        "details",
        { class: "steps" },
        h("summary", {}, `Schema of ${ev.datasource}: ${tables.length} tables`),
        h("ul", {}, tables.map((t) => h("li", {}, h("strong", {}, t.name), ` (${(t.columns || []).map((c) => c.name).join(", ")})`))),
      ),
    );
  }

  done(ev) {
    const answer = ev.answer;
    if (typeof answer === "string") {
      if (!this.text) this.appendText(answer);
    } else if (answer && typeof answer === "object") {
      if (answer.error && !this.bubble.querySelector("[data-testid=chat-error]")) this.error(answer.error);
      if (!this.text && answer.text && !answer.table) this.appendText(answer.text);
      if (answer.summary && this.lastTable && !this.text) this.appendText(answer.summary);
    }
    if (ev.citations) this.citations(ev.citations);
    if (answer && typeof answer === "object" && answer.sql && answer.question && answer.datasource) this.feedback(answer);
  }

  /** Thumbs up / down on an answer's SQL: up keeps the pair as a verified example for the model, down as wrong. */
  feedback(answer) {
    if (this.feedbackBox) return;
    const said = (rating, saved) => saved?.message || (rating === "up" ? "saved as a verified example" : "recorded as wrong");
    const box = thumbs({
      prefix: "feedback",
      labels: { up: "Right: save as a verified example", down: "Wrong: record this SQL as wrong" },
      said,
      rated: this.msg.rating,
      submit: async (rating) => {
        const saved = await api(`/api/datasources/${encodeURIComponent(answer.datasource)}/feedback`, {
          method: "POST",
          json: { question: answer.question, sql: answer.sql, rating },
        });
        this.msg.rating = rating;
        this.el.dispatchEvent(new CustomEvent("datapilot:rated", { bubbles: true }));
        return saved;
      },
    });
    this.feedbackBox = h("div", { class: "feedback", "data-testid": "feedback" }, confidenceNote(answer), h("span", { class: "small muted" }, "Was this SQL right?"), box);
    // After the answer's text, not before it as other events go.
    this.placeholder?.remove();
    this.placeholder = null;
    this.bubble.append(this.feedbackBox);
  }

  /** Thumbs on an answer served from the cache: the mark goes to the cache entry that answered. */
  cacheFeedback() {
    if (this.cacheBox) return;
    const msg = this.msg;
    const box = thumbs({
      prefix: "cache-feedback",
      labels: { up: "Right: the cached answer fits this question", down: "Wrong: the cached answer does not fit this question" },
      said: (rating) => (rating === "up" ? "marked right" : "marked wrong: the cache will not give this answer to this question again"),
      rated: msg.cacheRating,
      submit: async (rating) => {
        await api("/api/cache/feedback", {
          method: "POST",
          json: {
            model: msg.model || msg.cacheModel,
            id: Number(msg.cacheId),
            messages: msg.cacheProbe,
            right: rating === "up",
            similarity: msg.cacheSimilarity ?? undefined,
          },
        });
        msg.cacheRating = rating;
        this.el.dispatchEvent(new CustomEvent("datapilot:rated", { bubbles: true }));
      },
    });
    this.cacheBox = h("div", { class: "feedback", "data-testid": "cache-feedback" }, h("span", { class: "small muted" }, "Answered from the cache. Right for this question?"), box);
    this.bubble.append(this.cacheBox);
  }

  stopped() {
    this.meta.append(badge("stopped", "warn"));
  }

  finish(elapsedMs) {
    this.streaming = false;
    if (this.frame) cancelAnimationFrame(this.frame);
    this.drawText();
    this.placeholder?.remove();
    this.placeholder = null;
    if (!this.bubble.children.length) this.bubble.append(h("span", { class: "muted" }, "(no answer)"));
    if (this.msg.cache === "hit" && this.msg.cacheId && this.msg.cacheProbe && !this.msg.stopped) this.cacheFeedback();
    if (elapsedMs) this.meta.append(h("span", { class: "muted", title: "time to the whole answer" }, `\u00B7 ${(elapsedMs / 1000).toFixed(1)} s`));
    this.el.setAttribute("aria-busy", "false");
  }

  static replay(msg) {
    const view = new AnswerView(msg);
    if (msg.mode === "normal" && msg.content) view.appendText(msg.content);
    for (const ev of msg.events || []) view.event(ev);
    if (msg.stopped) view.stopped();
    view.finish(msg.elapsed_ms);
    return view;
  }
}

function userView(msg) {
  return h(
    "article",
    { class: "message user", "data-testid": "user-message" },
    h("div", { class: "avatar", "aria-hidden": "true" }, "You"),
    h("div", { class: "body" }, h("div", { class: "bubble" }, msg.content)),
  );
}

// ---- the page -------------------------------------------------------------------------------------------

export async function render(root) {
  const state = load();
  const options = { models: [], scenes: ["normal"], sources: [], spaces: [], problems: [] };
  let controller = null;
  let stick = true;

  const current = () => state.conversations.find((c) => c.id === state.current) || null;

  // Elements
  const list = h("ul", { class: "list", "aria-label": "Conversations" });
  const newButton = h("button", { class: "button small primary", type: "button", "data-testid": "new-chat" }, "+ New chat");
  const conversations = h(
    "aside",
    { class: "conversations", "aria-label": "Conversation list" },
    h("div", { class: "conversations-head" }, h("h2", { class: "small muted", style: "margin:0" }, "CONVERSATIONS"), newButton),
    list,
  );
  const modeSelect = h("select", { "data-testid": "mode" });
  const modelSelect = h("select", { "data-testid": "model" });
  const sourceSelect = h("select", { "data-testid": "datasource" });
  const spaceSelect = h("select", { "data-testid": "space" });
  const fileInput = h("input", { type: "file", accept: ".csv,.tsv,.xlsx,.xls,.parquet", class: "hidden", "aria-label": "Upload a CSV or Excel file" });
  const uploadButton = h("button", { class: "button small", type: "button", title: "Upload a CSV, Excel or Parquet file as a data source" }, "Upload file");
  const toggleList = h("button", { class: "button small conversations-toggle", type: "button", "aria-expanded": "false" }, "Conversations");
  const sourceField = field("Data source", sourceSelect, { cls: "narrow" });
  const spaceField = field("Knowledge space", spaceSelect, { cls: "narrow" });
  const uploadWrap = h("div", { class: "field" }, fileInput, uploadButton);
  const toolbar = h(
    "div",
    { class: "chat-toolbar" },
    toggleList,
    field("Mode", modeSelect, { cls: "narrow" }),
    field("Model", modelSelect),
    sourceField,
    spaceField,
    uploadWrap,
  );
  const messages = h("div", { class: "messages", "data-testid": "messages", "aria-label": "Messages", role: "log", "aria-live": "off" });
  const input = h("textarea", { id: newId("message"), rows: 1, placeholder: "Ask a question\u2026", "data-testid": "chat-input", autocomplete: "off" });
  const sendButton = h("button", { class: "button primary", type: "submit", "data-testid": "send" }, "Send");
  const stopButton = h("button", { class: "button danger hidden", type: "button", "data-testid": "stop" }, "Stop");
  const form = h("form", {}, h("label", { for: input.id, class: "sr-only" }, "Message"), input, sendButton, stopButton);
  const composer = h("div", { class: "composer" }, form, h("div", { class: "hint" }, "Enter to send \u00B7 Shift+Enter for a new line"));
  const pane = h("section", { class: "chat-pane", "aria-label": "Chat" }, toolbar, messages, composer);
  const chat = h("div", { class: "chat" }, conversations, pane);
  root.replaceChildren(chat);

  // ---- drawing

  function drawList() {
    list.replaceChildren(
      ...(state.conversations.length
        ? state.conversations.map((c) => {
            const open = h(
              "button",
              { class: "list-item", type: "button", "aria-current": c.id === state.current ? "true" : "false", title: c.title },
              h("span", { class: "title" }, c.title || "New chat"),
            );
            open.addEventListener("click", () => {
              if (controller) return;
              state.current = c.id;
              save(state);
              chat.classList.remove("show-conversations");
              drawAll();
            });
            const del = h("button", { class: "icon-button delete", type: "button", "aria-label": `Delete conversation ${c.title || ""}`.trim(), style: "width:28px;height:28px;border:0" }, "\u00D7");
            del.addEventListener("click", () => {
              if (controller) return;
              state.conversations = state.conversations.filter((x) => x.id !== c.id);
              if (state.current === c.id) state.current = state.conversations[0]?.id || null;
              save(state);
              drawAll();
            });
            return h("li", { class: "conversation" }, open, del);
          })
        : [h("li", { class: "empty small" }, "No conversations yet")]),
    );
  }

  function welcome(mode) {
    const ideas = SUGGESTIONS[mode] || [];
    return h(
      "div",
      { class: "welcome", "data-testid": "welcome" },
      h("h2", {}, "What would you like to know?"),
      h("p", {}, mode === "normal" ? "Chat with a model served by DataPilot." : `${MODE_LABELS[mode] || mode}: answers come with the steps, SQL, tables and charts behind them.`),
      h(
        "div",
        { class: "suggestions" },
        ideas.map((q) => {
          const b = h("button", { class: "button small", type: "button" }, q);
          b.addEventListener("click", () => {
            if (mode === "excel" && !sourceSelect.value) return fileInput.click();
            input.value = q;
            send();
          });
          return b;
        }),
      ),
    );
  }

  function drawMessages() {
    const conv = current();
    const items = [];
    for (const problem of options.problems) items.push(problem);
    if (!conv || !conv.messages.length) items.push(welcome(modeSelect.value || state.mode));
    else for (const m of conv.messages) items.push(m.role === "user" ? userView(m) : AnswerView.replay(m).el);
    messages.replaceChildren(...items);
    messages.scrollTop = messages.scrollHeight;
  }

  function fillSelect(select, values, selected, label = (v) => v) {
    select.replaceChildren(...values.map((v) => h("option", { value: v }, label(v))));
    if (selected && values.includes(selected)) select.value = selected;
  }

  function drawPickers() {
    const conv = current();
    const mode = conv?.mode || state.mode || "normal";
    fillSelect(modeSelect, options.scenes, mode, (m) => MODE_LABELS[m] || m);
    const models = options.models.map((m) => m.id);
    const preferred = conv?.model || state.model;
    fillSelect(modelSelect, models, preferred, (id) => {
      const m = options.models.find((x) => x.id === id);
      return m && m.status && m.status !== "ready" ? `${id} (${m.status})` : id;
    });
    if (!preferred || !models.includes(preferred)) {
      const ready = options.models.find((m) => m.status === "ready");
      if (ready) modelSelect.value = ready.id;
    }
    drawSourcePickers(conv);
  }

  function drawSourcePickers(conv) {
    const mode = modeSelect.value;
    const sources = options.sources.filter((s) => mode !== "excel" || FILE_KINDS.has(s.kind)).map((s) => s.name);
    fillSelect(sourceSelect, sources, conv?.datasource || state.datasource, (n) => n);
    if (mode === "excel" && !sources.length) sourceSelect.replaceChildren(h("option", { value: "" }, "upload a file first"));
    fillSelect(spaceSelect, options.spaces.map((s) => s.name), conv?.space || state.space);
    if (!options.spaces.length) spaceSelect.replaceChildren(h("option", { value: "" }, "no spaces yet"));
    sourceField.classList.toggle("hidden", !SOURCE_MODES.has(mode));
    spaceField.classList.toggle("hidden", mode !== "knowledge");
    uploadWrap.classList.toggle("hidden", mode !== "excel");
  }

  function drawAll() {
    drawList();
    drawPickers();
    drawMessages();
  }

  function remember() {
    const conv = current();
    const picked = { mode: modeSelect.value, model: modelSelect.value, datasource: sourceSelect.value, space: spaceSelect.value };
    Object.assign(state, picked);
    if (conv) Object.assign(conv, picked);
    save(state);
  }

  // ---- sending

  function setStreaming(on) {
    sendButton.classList.toggle("hidden", on);
    stopButton.classList.toggle("hidden", !on);
    for (const el of [modeSelect, modelSelect, sourceSelect, spaceSelect, newButton]) el.disabled = on;
    messages.setAttribute("aria-busy", String(on));
  }

  function history(conv) {
    return conv.messages
      .filter((m) => m.content && !m.error)
      .slice(-20)
      .map((m) => ({ role: m.role, content: m.content }));
  }

  async function send() {
    const text = input.value.trim();
    if (!text || controller) return;
    let conv = current();
    if (!conv) {
      conv = { id: `c${Date.now().toString(36)}${Math.random().toString(36).slice(2, 6)}`, title: "", messages: [], created: Date.now() };
      state.conversations.unshift(conv);
      state.current = conv.id;
    }
    remember();
    const mode = modeSelect.value || "normal";
    const model = modelSelect.value || undefined;
    if (!conv.title) conv.title = text.length > 60 ? `${text.slice(0, 57)}\u2026` : text;
    if (!conv.messages.length) messages.replaceChildren(...options.problems);
    const user = { role: "user", content: text, at: Date.now() };
    conv.messages.push(user);
    const msg = { role: "assistant", mode, model, content: "", events: [], at: Date.now() };
    const view = new AnswerView(msg);
    messages.append(userView(user), view.el);
    messages.scrollTop = messages.scrollHeight;
    input.value = "";
    autosize();
    // Move the conversation to the top of the list.
    state.conversations = [conv, ...state.conversations.filter((c) => c !== conv)];
    drawList();
    save(state);

    controller = new AbortController();
    setStreaming(true);
    const started = performance.now();
    stick = true;
    const follow = () => {
      if (stick) messages.scrollTop = messages.scrollHeight;
    };
    try {
      if (mode === "normal") {
        const body = { model, messages: history(conv), stream: true };
        await streamEvents("/v1/chat/completions", body, {
          signal: controller.signal,
          onOpen: (resp) => {
            msg.cache = resp.headers.get("x-datapilot-cache") || undefined;
            if (msg.cache === "hit" && resp.headers.get("x-datapilot-cache-id")) {
              // What a mark on the cached answer needs: the entry that answered and the question it answered.
              msg.cacheId = resp.headers.get("x-datapilot-cache-id");
              const sim = Number.parseFloat(resp.headers.get("x-datapilot-cache-similarity") || "");
              if (Number.isFinite(sim)) msg.cacheSimilarity = sim;
              msg.cacheProbe = body.messages;
            }
            view.setCache(msg.cache);
          },
          onEvent: (obj) => {
            if (obj.error) {
              msg.events.push({ type: "error", error: obj.error });
              view.event({ type: "error", error: obj.error });
              return;
            }
            if (msg.cacheId && !msg.cacheModel && obj.model) msg.cacheModel = obj.model;
            const delta = obj.choices?.[0]?.delta?.content ?? obj.choices?.[0]?.text ?? "";
            if (delta) {
              msg.content += delta;
              view.appendText(delta);
              follow();
            }
          },
        });
      } else {
        const body = { scene: mode, question: text, stream: true };
        if (model) body.model = model;
        if (SOURCE_MODES.has(mode) && sourceSelect.value) body.datasource = sourceSelect.value;
        if (mode === "knowledge") body.space = spaceSelect.value || undefined;
        await streamEvents("/api/chat", body, {
          signal: controller.signal,
          onEvent: (ev) => {
            const delta = ev.type === "text" ? ev.delta : ev.type === "delta" ? ev.text : "";
            if (delta) msg.content += delta;
            msg.events.push(compact(ev));
            view.event(ev);
            follow();
          },
        });
      }
    } catch (err) {
      if (err.name === "AbortError") {
        msg.stopped = true;
        view.stopped();
      } else {
        const error = { message: err.message || String(err) };
        msg.events.push({ type: "error", error });
        msg.error = error.message;
        view.event({ type: "error", error });
      }
    } finally {
      msg.elapsed_ms = Math.round(performance.now() - started);
      view.finish(msg.elapsed_ms);
      conv.messages.push(msg);
      conv.updated = Date.now();
      save(state);
      controller = null;
      setStreaming(false);
      follow();
      setTimeout(follow, 400); // charts draw a moment later
      input.focus();
    }
  }

  function autosize() {
    input.style.height = "auto";
    input.style.height = `${Math.min(input.scrollHeight + 2, 200)}px`;
  }

  // ---- wiring

  // Follow a streaming answer to the bottom, unless the reader scrolls up to look at something.
  const unstick = () =>
    requestAnimationFrame(() => {
      stick = messages.scrollHeight - messages.scrollTop - messages.clientHeight < 40;
    });
  for (const type of ["wheel", "touchmove", "keydown"]) messages.addEventListener(type, unstick, { passive: true });
  messages.addEventListener("datapilot:rated", () => save(state)); // a rating is kept with its answer

  form.addEventListener("submit", (e) => {
    e.preventDefault();
    send();
  });
  input.addEventListener("keydown", (e) => {
    if (e.key === "Enter" && !e.shiftKey && !e.isComposing) {
      e.preventDefault();
      send();
    } else if (e.key === "Escape" && controller) {
      controller.abort();
    }
  });
  input.addEventListener("input", autosize);
  stopButton.addEventListener("click", () => controller?.abort());
  newButton.addEventListener("click", () => {
    state.current = null;
    save(state);
    chat.classList.remove("show-conversations");
    drawAll();
    input.focus();
  });
  toggleList.addEventListener("click", () => {
    const open = chat.classList.toggle("show-conversations");
    toggleList.setAttribute("aria-expanded", String(open));
  });
  modeSelect.addEventListener("change", () => {
    drawSourcePickers(current());
    remember();
    if (!current()?.messages.length) drawMessages();
  });
  for (const s of [modelSelect, sourceSelect, spaceSelect]) s.addEventListener("change", remember);
  uploadButton.addEventListener("click", () => fileInput.click());
  fileInput.addEventListener("change", async () => {
    const file = fileInput.files?.[0];
    if (!file) return;
    uploadButton.disabled = true;
    uploadButton.textContent = "Uploading\u2026";
    try {
      const added = await upload("/api/datasources/upload", file, { query: { filename: file.name } });
      options.sources = (await api("/api/datasources")).data;
      state.datasource = added.name;
      if (current()) current().datasource = added.name;
      drawSourcePickers(current());
      sourceSelect.value = added.name;
      remember();
      toast(`Loaded ${file.name} as data source \u201c${added.name}\u201d`);
    } catch (err) {
      toast(err.message, "error");
    } finally {
      uploadButton.disabled = false;
      uploadButton.textContent = "Upload file";
      fileInput.value = "";
    }
  });

  // ---- first draw, then the server's options

  drawList();
  messages.replaceChildren(h("div", { class: "welcome" }, spinner("Loading models\u2026")));
  const [models, scenes, sources, spaces] = await Promise.allSettled([
    api("/v1/models"),
    api("/api/chat/scenes"),
    api("/api/datasources"),
    api("/api/knowledge/spaces"),
  ]);
  if (models.status === "fulfilled") {
    options.models = models.value.data.filter((m) => !m.capabilities || m.capabilities.includes("chat"));
    if (!options.models.length) options.problems.push(h("div", { class: "notice" }, "No chat model is configured on this server."));
  } else {
    options.problems.push(errorNotice(models.reason, "Could not list the models"));
  }
  if (scenes.status === "fulfilled") {
    const served = new Set(scenes.value.data);
    // A user's own scene that reads a data source gets the source picker too; "chat" is "normal" here.
    for (const s of scenes.value.scenes || []) if (s.inputs?.includes("datasource")) SOURCE_MODES.add(s.name);
    options.scenes = ["normal", ...MODE_ORDER.filter((m) => m !== "normal" && served.has(m)), ...[...served].filter((m) => !MODE_ORDER.includes(m) && m !== "chat")];
  }
  if (sources.status === "fulfilled") options.sources = sources.value.data;
  if (spaces.status === "fulfilled") options.spaces = spaces.value.data;
  drawAll();
  input.focus();

  return () => controller?.abort();
}
