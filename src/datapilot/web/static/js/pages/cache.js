// Cache: hit rate, entries per scope, the recent query log, truncating a scope, and the feedback on
// hits of one scope (marked right or wrong in chat or through the API), exportable as labelled pairs.

import { api } from "../api.js";
import { badge, busy, button, errorNotice, formatMs, formatTime, h, loadFailure, pageHead, panel, percent, spinner, toast } from "../ui.js";

function scopeLabel(scope) {
  return scope.tenant ? `${scope.model} \u00B7 ${scope.tenant}` : scope.model;
}

function scopeQuery(scope) {
  return scope.tenant ? { model: scope.model, tenant: scope.tenant } : { model: scope.model };
}

function similarity(x) {
  return x === null || x === undefined ? "\u2013" : x.toFixed(3);
}

let feedbackScope = ""; // the scope picked for the feedback panel, kept across refreshes

/** The marks on one scope's hits: probe, the stored question that answered it, similarity, right or wrong. */
function feedbackPanel(scopes) {
  const keyOf = (s) => JSON.stringify([s.model, s.tenant || ""]);
  if (!scopes.some((s) => keyOf(s) === feedbackScope)) feedbackScope = keyOf(scopes[0]);
  const select = h(
    "select",
    { "data-testid": "feedback-scope", "aria-label": "Scope of the feedback" },
    scopes.map((s) => h("option", { value: keyOf(s), selected: keyOf(s) === feedbackScope }, scopeLabel(s))),
  );
  const exportLink = h("a", { class: "button small", "data-testid": "feedback-export", download: "", title: "Every mark of this scope as JSONL pairs {a, b, label}" }, "Export (JSONL)");
  const box = h("div", {}, spinner());
  async function show() {
    feedbackScope = select.value;
    const scope = scopes.find((s) => keyOf(s) === feedbackScope);
    exportLink.href = `/api/cache/feedback/export?${new URLSearchParams(scopeQuery(scope))}`;
    exportLink.setAttribute("download", `cache-feedback-${scopeLabel(scope).replace(/[^A-Za-z0-9._-]+/g, "_")}.jsonl`);
    let marks, learned;
    try {
      ({ data: marks, learned_rules: learned = [] } = await api("/api/cache/feedback", { query: { ...scopeQuery(scope), limit: 100 } }));
    } catch (err) {
      box.replaceChildren(errorNotice(err, "Could not load the feedback"));
      return;
    }
    if (!marks.length) {
      box.replaceChildren(h("p", { class: "empty" }, "No feedback on this scope yet: mark an answer served from the cache right or wrong in chat (or POST /api/cache/feedback)."));
      return;
    }
    const rows = marks.map((m) =>
      h(
        "tr",
        { "data-testid": "feedback-row", "data-right": String(m.right) },
        h("td", { class: "nowrap muted small" }, formatTime(m.created_at)),
        h("td", { class: "clip", title: m.probe }, m.probe),
        h("td", { class: "clip", title: m.question }, m.question),
        h("td", { class: "num" }, similarity(m.similarity)),
        h("td", {}, m.right ? badge("right", "ok") : badge("wrong", "warn")),
      ),
    );
    // The verifier rules the scope learned from its marks (they refuse hits for every entry, marked or not).
    const rules = h(
      "p",
      { class: "muted small", "data-testid": "learned-rules" },
      learned.length
        ? `Learned from these marks, for every entry: ${learned.join(", ")}.`
        : "No rule learned from these marks yet: three wrong marks on hits that differ the same way (a number, a name, one replaced word) teach the scope that difference.",
    );
    box.replaceChildren(
      rules,
      h(
        "div",
        { class: "table-wrap" },
        h(
          "table",
          { class: "data", "data-testid": "feedback-table" },
          h("thead", {}, h("tr", {}, ["Time", "Probe", "Stored question", "Similarity", "Mark"].map((c) => h("th", { scope: "col" }, c)))),
          h("tbody", {}, rows),
        ),
      ),
    );
  }
  select.addEventListener("change", show);
  show();
  return panel([h("h2", {}, "Feedback"), h("div", { class: "row" }, select, exportLink)], box);
}

export async function render(root) {
  const body = h("div", { class: "stack" }, spinner());
  const refreshButton = button("Refresh", () => load(), { small: true, testid: "cache-refresh" });
  root.replaceChildren(pageHead("Cache", "The semantic cache in front of the models: what it holds and how often it answers.", refreshButton), body);

  async function load() {
    let scopes;
    let log;
    try {
      [scopes, log] = await Promise.all([api("/api/cache/scopes"), api("/api/cache/log", { query: { limit: 50 } })]);
    } catch (err) {
      body.replaceChildren(loadFailure(err, "The cache"));
      return;
    }
    const stats = await Promise.all(
      scopes.data.map((s) => api("/api/cache/stats", { query: scopeQuery(s) }).catch((err) => ({ scope: s, error: err.message }))),
    );
    const ok = stats.filter((s) => !s.error);
    const queries = ok.reduce((n, s) => n + s.queries, 0);
    const hits = ok.reduce((n, s) => n + s.hits, 0);
    const entries = ok.reduce((n, s) => n + s.entries, 0);
    const cards = h(
      "div",
      { class: "cards", "data-testid": "cache-summary" },
      h("div", { class: "stat" }, h("div", { class: "label" }, "Hit rate"), h("div", { class: "value", "data-testid": "hit-rate" }, queries ? percent(hits / queries) : "\u2013")),
      h("div", { class: "stat" }, h("div", { class: "label" }, "Hits / lookups"), h("div", { class: "value" }, `${hits} / ${queries}`)),
      h("div", { class: "stat" }, h("div", { class: "label" }, "Entries"), h("div", { class: "value" }, String(entries))),
      h("div", { class: "stat" }, h("div", { class: "label" }, "Scopes"), h("div", { class: "value" }, String(scopes.data.length))),
    );
    const scopeRows = stats.map((s) => {
      const scope = s.scope;
      const truncate = button("Truncate", null, { small: true, kind: "danger ghost" });
      truncate.setAttribute("aria-label", `Truncate the cache of ${scopeLabel(scope)}`);
      truncate.addEventListener("click", () =>
        busy(truncate, async () => {
          if (!window.confirm(`Remove every cached answer of \u201c${scopeLabel(scope)}\u201d?`)) return;
          const r = await api("/api/cache/truncate", { method: "POST", json: { scope } });
          toast(`Removed ${r.removed} entries from ${scopeLabel(scope)}`);
          await load();
        }),
      );
      if (s.error) return h("tr", {}, h("td", {}, scopeLabel(scope)), h("td", { colspan: 5, class: "muted" }, s.error), h("td", {}, truncate));
      return h(
        "tr",
        { "data-testid": "scope-row" },
        h("td", {}, h("strong", {}, scopeLabel(scope))),
        h("td", { class: "num" }, String(s.entries)),
        h("td", { class: "num" }, String(s.queries)),
        h("td", { class: "num" }, String(s.hits)),
        h("td", { class: "num" }, percent(s.queries ? s.hit_rate : null)),
        h("td", { class: "num" }, formatMs(s.lookup_p50_ms)),
        h("td", {}, truncate),
      );
    });
    const scopeTable = scopeRows.length
      ? h(
          "div",
          { class: "table-wrap" },
          h(
            "table",
            { class: "data", "data-testid": "scopes-table" },
            h("thead", {}, h("tr", {}, ["Scope (model)", "Entries", "Lookups", "Hits", "Hit rate", "Lookup p50", ""].map((c) => h("th", { scope: "col" }, c)))),
            h("tbody", {}, scopeRows),
          ),
        )
      : h("p", { class: "empty" }, "Nothing cached yet. Answers are cached for the models the server's [cache] settings name.");
    const logRows = log.data.map((r) =>
      h(
        "tr",
        { "data-testid": "log-row", "data-hit": String(r.hit) },
        h("td", { class: "nowrap muted small" }, formatTime(r.created_at)),
        h("td", {}, scopeLabel(r.scope)),
        h("td", { class: "clip", title: r.query }, r.query),
        h("td", {}, r.hit ? badge("hit", "ok") : badge("miss")),
        h("td", { class: "num" }, similarity(r.similarity)),
        h("td", { class: "num" }, formatMs(r.latency_ms)),
      ),
    );
    const logTable = logRows.length
      ? h(
          "div",
          { class: "table-wrap" },
          h(
            "table",
            { class: "data", "data-testid": "log-table" },
            h("thead", {}, h("tr", {}, ["Time", "Scope", "Query", "Result", "Similarity", "Latency"].map((c) => h("th", { scope: "col" }, c)))),
            h("tbody", {}, logRows),
          ),
        )
      : h("p", { class: "empty" }, "No lookups logged yet.");
    const panels = [cards, panel("Scopes", scopeTable), panel("Recent lookups", logTable)];
    if (scopes.data.length) panels.push(feedbackPanel(scopes.data));
    body.replaceChildren(...panels);
  }

  await load();
}
