// Knowledge: spaces, document uploads with progress (bytes sent, then ingestion), documents, chunks.

import { api, upload } from "../api.js";
import { badge, busy, button, errorNotice, field, formatBytes, formatTime, h, loadFailure, pageHead, panel, spinner, statusBadge, toast } from "../ui.js";

const POLL_MS = 800;

export async function render(root, { args }) {
  let selected = args[0] || null;
  let timer = 0;
  let alive = true;
  const spacesBox = h("div", {}, spinner());
  const spaceBox = h("div", { class: "stack" });

  // ---- create a space
  const spaceName = h("input", { type: "text", required: true, placeholder: "handbook", "data-testid": "space-name", autocomplete: "off" });
  const spaceDesc = h("input", { type: "text", placeholder: "optional" });
  const createResult = h("div", { "aria-live": "polite" });
  const createForm = h(
    "form",
    { class: "stack" },
    field("Name", spaceName),
    field("Description", spaceDesc),
    h("div", { class: "row" }, button("Create space", null, { kind: "primary", type: "submit", testid: "space-create" })),
    createResult,
  );
  createForm.addEventListener("submit", async (e) => {
    e.preventDefault();
    createResult.replaceChildren();
    try {
      const info = await api("/api/knowledge/spaces", { method: "POST", json: { name: spaceName.value.trim(), description: spaceDesc.value.trim() } });
      createForm.reset();
      selected = info.name;
      await refresh();
    } catch (err) {
      createResult.replaceChildren(errorNotice(err, "Could not create the space"));
    }
  });

  root.replaceChildren(
    pageHead("Knowledge", "Document spaces for retrieval-augmented answers: upload files, watch them being chunked and embedded."),
    h("div", { class: "grid-2" }, h("div", { class: "stack" }, panel("Spaces", spacesBox), panel("New space", createForm)), spaceBox),
  );

  function stopPolling() {
    clearTimeout(timer);
    timer = 0;
  }

  async function refresh() {
    let spaces;
    try {
      spaces = (await api("/api/knowledge/spaces")).data;
    } catch (err) {
      root.replaceChildren(pageHead("Knowledge"), loadFailure(err, "Knowledge"));
      return;
    }
    if (!spaces.length) {
      spacesBox.replaceChildren(h("p", { class: "empty" }, "No spaces yet: create one."));
      spaceBox.replaceChildren(panel(null, h("p", { class: "empty" }, "Create a space, then upload documents into it.")));
      return;
    }
    if (!spaces.some((s) => s.name === selected)) selected = spaces[0].name;
    spacesBox.replaceChildren(
      h(
        "ul",
        { class: "list", "data-testid": "space-list" },
        spaces.map((s) => {
          const b = h("button", { class: "list-item", type: "button", "data-space": s.name, "aria-current": String(s.name === selected) }, h("strong", { class: "grow" }, s.name), h("span", { class: "muted small counts" }, `${s.documents} docs \u00B7 ${s.chunks} chunks`));
          b.addEventListener("click", () => {
            selected = s.name;
            refresh();
          });
          return h("li", {}, b);
        }),
      ),
    );
    await showSpace(spaces.find((s) => s.name === selected));
  }

  async function showSpace(space) {
    stopPolling();
    history.replaceState(null, "", `#/knowledge/${encodeURIComponent(space.name)}`);
    const base = `/api/knowledge/spaces/${encodeURIComponent(space.name)}`;
    const docsBox = h("div", { "data-testid": "documents" }, spinner());
    const chunksBox = h("div");
    const files = h("input", { type: "file", multiple: true, "data-testid": "doc-files", accept: ".txt,.md,.markdown,.pdf,.docx,.html,.htm,.csv,.json" });
    const bar = h("span", { style: "width:0%" });
    const progress = h("div", { class: "progress grow", role: "progressbar", "aria-label": "Upload progress", "aria-valuemin": "0", "aria-valuemax": "100", "aria-valuenow": "0", "data-testid": "upload-progress" }, bar);
    const progressLabel = h("span", { class: "small muted" });
    const progressRow = h("div", { class: "row hidden" }, progress, progressLabel);
    const uploadResult = h("div", { "aria-live": "polite" });
    const uploadButton = button("Upload", null, { kind: "primary", type: "submit", testid: "doc-upload" });
    const uploadForm = h("form", { class: "stack" }, h("div", { class: "upload-row" }, field("Documents (PDF, Word, HTML, Markdown, text)", files, { cls: "grow" }), uploadButton), progressRow, uploadResult);

    const setProgress = (fraction, label) => {
      progressRow.classList.remove("hidden");
      const pct = Math.round(fraction * 100);
      bar.style.width = `${pct}%`;
      progress.setAttribute("aria-valuenow", String(pct));
      progressLabel.textContent = label;
    };

    uploadForm.addEventListener("submit", async (e) => {
      e.preventDefault();
      const chosen = [...(files.files || [])];
      if (!chosen.length) {
        uploadResult.replaceChildren(errorNotice("choose one or more files first", "Nothing to upload"));
        return;
      }
      uploadResult.replaceChildren();
      const form = new FormData();
      for (const f of chosen) form.append("files", f, f.name);
      uploadButton.disabled = true;
      setProgress(0, "Uploading\u2026");
      try {
        const out = await upload(`${base}/documents`, form, { onProgress: (x) => setProgress(x * 0.3, `Uploading ${Math.round(x * 100)}%`) });
        const errors = out.errors || [];
        if (errors.length) uploadResult.replaceChildren(...errors.map((er) => errorNotice(er.error?.message || "failed", er.file)));
        uploadForm.reset();
        track(out.data.map((d) => d.id));
      } catch (err) {
        progressRow.classList.add("hidden");
        uploadResult.replaceChildren(errorNotice(err, "Upload failed"));
      } finally {
        uploadButton.disabled = false;
      }
    });

    let tracked = [];
    function track(ids) {
      tracked = ids;
      loadDocs();
    }

    async function loadDocs() {
      stopPolling();
      let docs;
      try {
        docs = (await api(`${base}/documents`)).data;
      } catch (err) {
        docsBox.replaceChildren(errorNotice(err, "Could not list the documents"));
        return;
      }
      if (!alive) return;
      drawDocs(docs);
      const mine = docs.filter((d) => tracked.includes(d.id));
      if (mine.length) {
        const total = mine.reduce((n, d) => n + Math.max(d.chunks, 1), 0);
        const done = mine.reduce((n, d) => n + (d.status === "done" || d.status === "failed" ? Math.max(d.chunks, 1) : d.chunks_done), 0);
        const finished = mine.every((d) => d.status === "done" || d.status === "failed");
        setProgress(0.3 + 0.7 * (finished ? 1 : done / total), finished ? `Ingested ${mine.length} document${mine.length === 1 ? "" : "s"}` : `Ingesting: ${mine.map((d) => d.status).join(", ")}`);
        if (finished) {
          tracked = [];
          await updateCounts();
        }
      }
      if (docs.some((d) => !["done", "failed"].includes(d.status))) timer = setTimeout(loadDocs, POLL_MS);
    }

    function drawDocs(docs) {
      if (!docs.length) {
        docsBox.replaceChildren(h("p", { class: "empty" }, "No documents yet."));
        return;
      }
      const rows = docs.map((d) => {
        const chunks = button("Chunks", null, { small: true });
        chunks.setAttribute("aria-label", `Show chunks of ${d.source}`);
        chunks.addEventListener("click", () => showChunks(d));
        const del = button("Delete", null, { small: true, kind: "danger ghost" });
        del.setAttribute("aria-label", `Delete ${d.source}`);
        del.addEventListener("click", () =>
          busy(del, async () => {
            if (!window.confirm(`Delete \u201c${d.source}\u201d and its chunks?`)) return;
            await api(`${base}/documents/${encodeURIComponent(d.id)}`, { method: "DELETE" });
            toast(`Deleted ${d.source}`);
            chunksBox.replaceChildren();
            await loadDocs();
          }),
        );
        const running = !["done", "failed"].includes(d.status);
        const status = h("div", { class: "stack", style: "gap:.3rem" }, statusBadge(d.status), running && d.chunks ? h("div", { class: "progress" }, h("span", { style: `width:${Math.round((100 * d.chunks_done) / d.chunks)}%` })) : null, d.error ? h("span", { class: "small", style: "color:var(--danger)" }, d.error) : null);
        return h(
          "tr",
          { "data-testid": "document-row" },
          h("td", {}, h("strong", {}, d.source), h("div", { class: "muted small" }, d.kind)),
          h("td", {}, status),
          h("td", { class: "num" }, d.status === "done" ? String(d.chunks) : `${d.chunks_done}/${d.chunks || "?"}`),
          h("td", { class: "num nowrap" }, formatBytes(d.bytes)),
          h("td", { class: "nowrap muted small" }, formatTime(d.created)),
          h("td", {}, h("div", { class: "row", style: "flex-wrap:nowrap" }, chunks, del)),
        );
      });
      docsBox.replaceChildren(
        h(
          "div",
          { class: "table-wrap" },
          h(
            "table",
            { class: "data" },
            h("thead", {}, h("tr", {}, ["Document", "Status", "Chunks", "Size", "Added", ""].map((c) => h("th", { scope: "col" }, c)))),
            h("tbody", {}, rows),
          ),
        ),
      );
    }

    async function showChunks(doc) {
      chunksBox.replaceChildren(panel(`Chunks of ${doc.source}`, spinner()));
      try {
        const chunks = (await api(`${base}/documents/${encodeURIComponent(doc.id)}/chunks`, { query: { limit: 200 } })).data;
        chunksBox.replaceChildren(
          panel(
            h("div", { class: "row between", style: "width:100%" }, h("h2", {}, `Chunks of ${doc.source}`), h("span", { class: "muted small" }, `${chunks.length} shown`)),
            h(
              "div",
              { class: "stack", "data-testid": "chunks" },
              chunks.length
                ? chunks.map((c) => h("div", { class: "chunk" }, h("div", { class: "chunk-head" }, h("span", {}, `#${c.seq + 1}`), c.page ? h("span", {}, `page ${c.page}`) : null, c.section ? h("span", {}, c.section) : null, h("span", {}, `chars ${c.start}\u2013${c.end}`)), h("p", {}, c.text)))
                : h("p", { class: "empty" }, "No chunks (yet)."),
            ),
          ),
        );
        chunksBox.scrollIntoView({ behavior: "smooth", block: "start" });
      } catch (err) {
        chunksBox.replaceChildren(panel(`Chunks of ${doc.source}`, errorNotice(err, "Could not list the chunks")));
      }
    }

    const docCount = badge(`${space.documents} documents`);
    const chunkCount = badge(`${space.chunks} chunks`);
    async function updateCounts() {
      try {
        const info = await api(base);
        docCount.textContent = `${info.documents} documents`;
        chunkCount.textContent = `${info.chunks} chunks`;
        const item = spacesBox.querySelector(`[data-space="${CSS.escape(space.name)}"] .counts`);
        if (item) item.textContent = `${info.documents} docs \u00B7 ${info.chunks} chunks`;
      } catch {
        /* the counts are a nicety: the documents table is the truth */
      }
    }

    const delSpace = button("Delete space", null, { small: true, kind: "danger" });
    delSpace.addEventListener("click", () =>
      busy(delSpace, async () => {
        if (!window.confirm(`Delete the space \u201c${space.name}\u201d with all its documents?`)) return;
        await api(base, { method: "DELETE" });
        toast(`Deleted space ${space.name}`);
        selected = null;
        await refresh();
      }),
    );
    spaceBox.replaceChildren(
      panel(
        h("div", { class: "row between", style: "width:100%" }, h("div", { class: "row" }, h("h2", {}, space.name), docCount, chunkCount), delSpace),
        space.description ? h("p", { class: "muted" }, space.description) : null,
        uploadForm,
      ),
      panel("Documents", docsBox),
      chunksBox,
    );
    await loadDocs();
  }

  await refresh();
  return () => {
    alive = false;
    stopPolling();
  };
}
