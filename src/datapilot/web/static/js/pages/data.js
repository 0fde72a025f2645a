// Data sources: list, add (with a connection test), upload a CSV / Excel file, browse a schema, query.

import { api, upload } from "../api.js";
import { resultTable } from "../render.js";
import { badge, busy, button, errorNotice, field, h, loadFailure, pageHead, panel, spinner, toast } from "../ui.js";

const KINDS = ["sqlite", "duckdb", "postgresql", "mysql", "mariadb", "csv", "excel", "parquet"];

function location(s) {
  if (s.files?.length) return s.files.join(", ");
  return s.url || s.path || "";
}

export async function render(root, { args }) {
  const listBox = h("div", {}, spinner());
  const detail = h("div", { class: "stack", "data-testid": "schema-panel" });
  let selected = args[0] || null;

  // ---- add form
  const name = h("input", { type: "text", required: true, placeholder: "sales", "data-testid": "ds-name", autocomplete: "off" });
  const kind = h("select", { "data-testid": "ds-kind" }, KINDS.map((k) => h("option", { value: k }, k)));
  const url = h("input", { type: "text", placeholder: "postgresql://user@host:5432/db", "data-testid": "ds-url", autocomplete: "off" });
  const path = h("input", { type: "text", placeholder: "/data/shop.sqlite", "data-testid": "ds-path", autocomplete: "off" });
  const password = h("input", { type: "password", autocomplete: "new-password" });
  const description = h("input", { type: "text", placeholder: "what it holds (helps text-to-SQL)" });
  const addResult = h("div", { "data-testid": "ds-add-result", "aria-live": "polite" });
  const addButton = button("Test connection and add", null, { kind: "primary", type: "submit", testid: "ds-add" });
  const addForm = h(
    "form",
    { class: "stack" },
    h(
      "div",
      { class: "form-grid" },
      field("Name", name),
      field("Kind", kind),
      field("URL (SQLAlchemy)", url, { cls: "wide", hint: "For PostgreSQL, MySQL and MariaDB; a password in it is stored apart." }),
      field("Path", path, { hint: "SQLite or DuckDB file on the server" }),
      field("Password", password),
      field("Description", description, { cls: "wide" }),
    ),
    h("div", { class: "row" }, addButton),
    addResult,
  );
  addForm.addEventListener("submit", async (e) => {
    e.preventDefault();
    addResult.replaceChildren(spinner("Connecting\u2026"));
    addButton.disabled = true;
    const body = { name: name.value.trim(), kind: kind.value, description: description.value.trim(), test: true };
    if (url.value.trim()) body.url = url.value.trim();
    if (path.value.trim()) body.path = path.value.trim();
    if (password.value) body.password = password.value;
    try {
      const added = await api("/api/datasources", { method: "POST", json: body });
      addResult.replaceChildren(h("div", { class: "notice" }, `Connected and added \u201c${added.name}\u201d.`));
      addForm.reset();
      selected = added.name;
      await refresh();
    } catch (err) {
      addResult.replaceChildren(errorNotice(err, "Could not add the data source"));
    } finally {
      addButton.disabled = false;
    }
  });

  // ---- upload
  const file = h("input", { type: "file", accept: ".csv,.tsv,.xlsx,.xls,.parquet", "data-testid": "ds-file" });
  const uploadName = h("input", { type: "text", placeholder: "default: from the file name", autocomplete: "off" });
  const uploadResult = h("div", { "aria-live": "polite" });
  const uploadButton = button("Upload", null, { kind: "primary", type: "submit", testid: "ds-upload" });
  const uploadForm = h(
    "form",
    { class: "stack" },
    h("div", { class: "form-grid" }, field("CSV, TSV, Excel or Parquet file", file), field("Data source name", uploadName)),
    h("div", { class: "row" }, uploadButton),
    uploadResult,
  );
  uploadForm.addEventListener("submit", async (e) => {
    e.preventDefault();
    const f = file.files?.[0];
    if (!f) {
      uploadResult.replaceChildren(errorNotice("choose a file first", "Nothing to upload"));
      return;
    }
    uploadButton.disabled = true;
    const bar = h("span", { style: "width:0%" });
    uploadResult.replaceChildren(h("div", { class: "row" }, h("div", { class: "progress grow" }, bar), h("span", { class: "small muted" }, f.name)));
    try {
      const added = await upload("/api/datasources/upload", f, {
        query: { filename: f.name, name: uploadName.value.trim() },
        onProgress: (x) => (bar.style.width = `${Math.round(x * 100)}%`),
      });
      const tables = Object.keys(added.tables || {});
      uploadResult.replaceChildren(h("div", { class: "notice" }, `Added \u201c${added.name}\u201d with table${tables.length === 1 ? "" : "s"} ${tables.join(", ")}.`));
      uploadForm.reset();
      selected = added.name;
      await refresh();
    } catch (err) {
      uploadResult.replaceChildren(errorNotice(err, "Upload failed"));
    } finally {
      uploadButton.disabled = false;
    }
  });

  root.replaceChildren(
    pageHead("Data sources", "Databases and files DataPilot can query. The sample business database is registered as \u201csample\u201d."),
    h(
      "div",
      { class: "grid-2" },
      h("div", { class: "stack" }, panel("Sources", listBox), panel("Add a database", addForm), panel("Upload a file", uploadForm)),
      detail,
    ),
  );

  async function showSchema(nameValue) {
    selected = nameValue;
    history.replaceState(null, "", `#/data/${encodeURIComponent(nameValue)}`);
    for (const b of listBox.querySelectorAll("[data-source]")) b.setAttribute("aria-current", String(b.dataset.source === nameValue));
    detail.replaceChildren(panel(`Schema of ${nameValue}`, spinner()));
    try {
      const schema = await api(`/api/datasources/${encodeURIComponent(nameValue)}/schema`);
      const tables = schema.tables.map((t) =>
        h(
          "details",
          { class: "schema-table", open: schema.tables.length <= 3 || t === schema.tables[0] },
          h("summary", {}, t.name, " ", h("span", { class: "muted small" }, t.row_count !== null && t.row_count !== undefined ? `${t.row_count} rows` : ""), t.comment ? h("span", { class: "muted small" }, ` \u00B7 ${t.comment}`) : null),
          resultTable(
            ["column", "type", "key", "comment", "examples"],
            t.columns.map((c) => [c.name, c.type, c.primary_key ? "PK" : "", c.comment || "", (c.samples || []).slice(0, 3).join(", ")]),
            { pageSize: 50, testid: "schema-columns" },
          ),
          t.foreign_keys?.length ? h("p", { class: "small muted" }, t.foreign_keys.map((fk) => `${fk.columns.join(", ")} \u2192 ${fk.ref_table}(${fk.ref_columns.join(", ")})`).join("; ")) : null,
        ),
      );
      const sql = h("textarea", { rows: 3, class: "mono", "data-testid": "ds-sql" });
      sql.value = schema.tables[0] ? `SELECT * FROM ${schema.tables[0].name} LIMIT 20` : "SELECT 1";
      const out = h("div");
      const run = button("Run query", null, { kind: "primary", type: "submit" });
      const qform = h("form", { class: "stack" }, field("Read-only SQL", sql), h("div", { class: "row" }, run), out);
      qform.addEventListener("submit", async (e) => {
        e.preventDefault();
        out.replaceChildren(spinner("Running\u2026"));
        run.disabled = true;
        try {
          const r = await api(`/api/datasources/${encodeURIComponent(nameValue)}/query`, { method: "POST", json: { sql: sql.value } });
          out.replaceChildren(resultTable(r.columns, r.rows, { caption: `${r.row_count} rows \u00B7 ${r.elapsed_ms} ms${r.truncated ? " \u00B7 cut at the row limit" : ""}` }));
        } catch (err) {
          out.replaceChildren(errorNotice(err, "Query failed"));
        } finally {
          run.disabled = false;
        }
      });
      detail.replaceChildren(
        panel(h("div", { class: "row" }, h("h2", {}, `Schema of ${nameValue}`), badge(schema.dialect, "accent"), h("span", { class: "muted small" }, `${schema.tables.length} tables`)), ...tables),
        panel("Query", qform),
      );
    } catch (err) {
      detail.replaceChildren(panel(`Schema of ${nameValue}`, errorNotice(err, "Could not read the schema")));
    }
  }

  async function refresh() {
    let sources;
    try {
      sources = (await api("/api/datasources")).data;
    } catch (err) {
      root.replaceChildren(pageHead("Data sources"), loadFailure(err, "Data sources"));
      return;
    }
    if (!sources.length) {
      listBox.replaceChildren(h("p", { class: "empty" }, "No data sources yet: add one below."));
      detail.replaceChildren();
      return;
    }
    const rows = sources.map((s) => {
      const open = h(
        "button",
        { class: "list-item", type: "button", "data-source": s.name, "aria-current": String(s.name === selected), title: s.description || location(s) },
        h("span", { class: "item-title" }, h("strong", {}, s.name), badge(s.kind)),
        h("span", { class: "item-sub" }, s.description || location(s) || "\u00A0"),
      );
      open.addEventListener("click", () => showSchema(s.name));
      const test = button("Test", null, { small: true });
      test.setAttribute("aria-label", `Test data source ${s.name}`);
      test.addEventListener("click", () =>
        busy(test, async () => {
          const r = await api(`/api/datasources/${encodeURIComponent(s.name)}/test`, { method: "POST" });
          toast(`${s.name}: connected, ${r.tables} tables, ${r.elapsed_ms} ms`);
        }),
      );
      const del = button("Delete", null, { small: true, kind: "danger ghost" });
      del.setAttribute("aria-label", `Delete data source ${s.name}`);
      del.addEventListener("click", () =>
        busy(del, async () => {
          if (!window.confirm(`Remove the data source \u201c${s.name}\u201d? Its data is not touched.`)) return;
          await api(`/api/datasources/${encodeURIComponent(s.name)}`, { method: "DELETE" });
          toast(`Removed ${s.name}`);
          if (selected === s.name) selected = null;
          await refresh();
        }),
      );
      return h("li", { class: "item-row" }, open, h("div", { class: "actions" }, test, del));
    });
    listBox.replaceChildren(h("ul", { class: "list stack", style: "gap:2px", "data-testid": "ds-list" }, rows));
    const pick = sources.find((s) => s.name === selected) ? selected : sources[0].name;
    await showSchema(pick);
  }

  await refresh();
}
