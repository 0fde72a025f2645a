// Rich content: markdown (marked + DOMPurify), code highlighting (highlight.js), result tables
// (sortable, paged) and charts (Vega-Lite through vega-embed). Each degrades when its vendored
// library is missing: plain text, unhighlighted code, a table instead of a chart.

import { h } from "./ui.js";

export const has = {
  get markdown() {
    return Boolean(window.marked?.parse && window.DOMPurify?.sanitize);
  },
  get highlight() {
    return Boolean(window.hljs?.highlightElement);
  },
  get charts() {
    return typeof window.vegaEmbed === "function";
  },
};

function highlight(codeEl) {
  if (!has.highlight) return;
  const lang = [...codeEl.classList].find((c) => c.startsWith("language-"))?.slice(9);
  if (lang && !window.hljs.getLanguage(lang)) return;
  try {
    window.hljs.highlightElement(codeEl);
  } catch {
    /* leave it plain */
  }
}

/** Markdown into a sanitised element; plain text (line breaks kept) without the libraries. */
export function markdown(text, target) {
  const el = target || h("div");
  el.classList.add("markdown");
  if (!has.markdown) {
    el.classList.add("plain");
    el.textContent = text;
    return el;
  }
  const html = window.marked.parse(text || "", { gfm: true, breaks: true, async: false });
  el.innerHTML = window.DOMPurify.sanitize(html);
  for (const code of el.querySelectorAll("pre code")) highlight(code);
  for (const a of el.querySelectorAll("a[href]")) {
    a.target = "_blank";
    a.rel = "noopener noreferrer";
  }
  return el;
}

export function codeBlock(code, lang = "", title = "") {
  const codeEl = h("code", { class: lang ? `language-${lang}` : "" }, code);
  const copy = h("button", { class: "link-button", type: "button", "aria-label": `Copy ${title || "code"}` }, "Copy");
  copy.addEventListener("click", async () => {
    try {
      await navigator.clipboard.writeText(code);
      copy.textContent = "Copied";
    } catch {
      copy.textContent = "Copy failed";
    }
    setTimeout(() => (copy.textContent = "Copy"), 1500);
  });
  const block = h(
    "div",
    { class: "code-block", "data-lang": lang },
    h("div", { class: "code-head" }, h("span", {}, title || lang || "code"), copy),
    h("pre", {}, codeEl),
  );
  highlight(codeEl);
  return block;
}

function isNumeric(v) {
  return typeof v === "number" || (typeof v === "string" && v.trim() !== "" && !Number.isNaN(Number(v)));
}

function cellText(v) {
  if (v === null || v === undefined) return "";
  if (typeof v === "object") return JSON.stringify(v);
  if (typeof v === "number" && !Number.isInteger(v)) return v.toLocaleString(undefined, { maximumFractionDigits: 4 });
  return String(v);
}

/**
 * A result table: click a header to sort (again to reverse), pages of `pageSize` rows.
 * rows: arrays (aligned with columns) or objects keyed by column.
 */
export function resultTable(columns, rows, { pageSize = 10, caption = "", testid = "result-table" } = {}) {
  const data = rows.map((r) => (Array.isArray(r) ? r : columns.map((c) => r[c])));
  const numeric = columns.map((_, i) => data.length > 0 && data.every((r) => r[i] === null || isNumeric(r[i])));
  const state = { sortBy: -1, desc: false, page: 0 };
  const wrap = h("div", { class: "result", "data-testid": testid });
  const tableWrap = h("div", { class: "table-wrap" });
  const pager = h("div", { class: "pager" });
  wrap.append(tableWrap, pager);

  function sorted() {
    if (state.sortBy < 0) return data;
    const i = state.sortBy;
    const dir = state.desc ? -1 : 1;
    return [...data].sort((a, b) => {
      const x = a[i];
      const y = b[i];
      if (x === y) return 0;
      if (x === null || x === undefined) return 1;
      if (y === null || y === undefined) return -1;
      if (numeric[i]) return (Number(x) - Number(y)) * dir;
      return String(x).localeCompare(String(y)) * dir;
    });
  }

  function draw() {
    const all = sorted();
    const pages = Math.max(1, Math.ceil(all.length / pageSize));
    state.page = Math.min(state.page, pages - 1);
    const shown = all.slice(state.page * pageSize, (state.page + 1) * pageSize);
    const head = h(
      "tr",
      {},
      columns.map((c, i) => {
        const active = state.sortBy === i;
        const sortLabel = active ? (state.desc ? "descending" : "ascending") : "none";
        const btn = h(
          "button",
          { class: "sort", type: "button", title: `Sort by ${c}` },
          c,
          h("span", { class: "arrow", "aria-hidden": "true" }, active ? (state.desc ? "\u25BC" : "\u25B2") : "\u2195"),
        );
        btn.addEventListener("click", () => {
          if (state.sortBy === i) state.desc = !state.desc;
          else Object.assign(state, { sortBy: i, desc: false });
          draw();
        });
        return h("th", { scope: "col", "aria-sort": sortLabel }, btn);
      }),
    );
    const body = shown.length
      ? shown.map((r) => h("tr", {}, r.map((v, i) => h("td", { class: numeric[i] ? "num" : "" }, cellText(v)))))
      : [h("tr", {}, h("td", { colspan: columns.length || 1, class: "muted" }, "No rows"))];
    tableWrap.replaceChildren(
      h("table", { class: "data" }, caption ? h("caption", { class: "sr-only" }, caption) : null, h("thead", {}, head), h("tbody", {}, body)),
    );
    const first = all.length ? state.page * pageSize + 1 : 0;
    const last = state.page * pageSize + shown.length;
    const prev = h("button", { class: "button small", type: "button", disabled: state.page === 0 }, "Previous");
    const next = h("button", { class: "button small", type: "button", disabled: state.page >= pages - 1 }, "Next");
    prev.addEventListener("click", () => {
      state.page -= 1;
      draw();
    });
    next.addEventListener("click", () => {
      state.page += 1;
      draw();
    });
    pager.replaceChildren(
      h("span", {}, caption ? `${caption} \u00B7 ` : "", `rows ${first}\u2013${last} of ${all.length}`),
      h("span", { class: "row" }, pages > 1 ? [prev, h("span", {}, `page ${state.page + 1} / ${pages}`), next] : null),
    );
  }
  draw();
  return wrap;
}

function chartColors() {
  const css = getComputedStyle(document.documentElement);
  return { text: css.getPropertyValue("--text").trim(), muted: css.getPropertyValue("--muted").trim(), grid: css.getPropertyValue("--border").trim(), accent: css.getPropertyValue("--accent").trim() };
}

/**
 * A chart from the server's Vega-Lite payload. Kinds "number" and "table" are drawn directly;
 * without the chart libraries, a note (the result table is shown beside it anyway).
 */
export function chart(spec, { fallbackRows } = {}) {
  const box = h("div", { class: "chart", "data-testid": "chart" });
  if (!spec) return box;
  if (spec.kind === "number") {
    box.append(h("div", { class: "number-card" }, h("div", { class: "muted small" }, spec.label), h("div", { class: "value" }, cellText(spec.value))));
    return box;
  }
  if (spec.kind === "table") {
    box.dataset.kind = "table";
    if (fallbackRows) box.append(resultTable(spec.columns, spec.values));
    return box;
  }
  if (!has.charts) {
    box.dataset.kind = "unavailable";
    box.append(h("p", { class: "muted small" }, "Charts need the vendored chart libraries (run scripts/install.sh); the table shows the data."));
    return box;
  }
  const c = chartColors();
  const xField = spec.encoding?.x?.field;
  const labels = xField ? (spec.data?.values || []).map((r) => String(r[xField] ?? "")) : [];
  const flat = labels.length <= 8 && labels.every((l) => l.length <= 14);
  const vl = { ...spec, width: "container", height: 260, autosize: { type: "fit", contains: "padding" } };
  delete vl.$schema; // the server writes a v5 URL; the bundled Vega-Lite reads v5 specs as they are
  vl.config = {
    background: null,
    font: getComputedStyle(document.body).fontFamily,
    axis: { labelColor: c.muted, titleColor: c.muted, gridColor: c.grid, domainColor: c.grid, tickColor: c.grid, labelLimit: 140 },
    axisX: { labelAngle: flat ? 0 : -40 },
    legend: { labelColor: c.muted, titleColor: c.muted },
    title: { color: c.text, fontSize: 13, fontWeight: 600, anchor: "start" },
    view: { stroke: null },
    range: { category: [c.accent, "#0ea5e9", "#f59e0b", "#10b981", "#ef4444", "#8b5cf6", "#ec4899", "#64748b"] },
    mark: { color: c.accent },
  };
  const target = h("div", { class: "chart-target" });
  box.append(target);
  // vega-embed measures the container: wait until it is in the document.
  requestAnimationFrame(() => {
    window.vegaEmbed(target, vl, { actions: false, renderer: "svg", tooltip: true }).then(
      () => (box.dataset.rendered = "true"),
      (err) => {
        box.replaceChildren(h("p", { class: "muted small" }, `The chart could not be drawn: ${err.message}`));
      },
    );
  });
  return box;
}
