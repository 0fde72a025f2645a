// Flows: the chat scenes (each an AWEL flow: draw it, edit its DSL, save the copy as a new scene) and
// the AWEL flows the server loaded, each drawn as a graph, with a form to run one.

import { api, streamEvents } from "../api.js";
import { badge, errorNotice, field, h, loadFailure, pageHead, panel, spinner, svg, toast } from "../ui.js";

const NODE_W = 184;
const NODE_H = 54;
const GAP_X = 64;
const GAP_Y = 22;
const PAD = 20;

function clip(text, n) {
  return text.length > n ? `${text.slice(0, n - 1)}\u2026` : text;
}

/**
 * Layered layout: a node's layer is its longest path from a source. Few layers run left to right;
 * long chains run top to bottom, so a ten-step pipeline stays readable without scrolling sideways.
 */
export function layout(graph) {
  const nodes = graph.nodes.map((n) => n.id);
  const incoming = new Map(nodes.map((id) => [id, []]));
  for (const e of graph.edges) incoming.get(e.target)?.push(e.source);
  const layer = new Map();
  const visiting = new Set();
  const depth = (id) => {
    if (layer.has(id)) return layer.get(id);
    if (visiting.has(id)) return 0; // a cycle cannot happen in a DAG; stay safe anyway
    visiting.add(id);
    const d = Math.max(-1, ...(incoming.get(id) || []).map(depth)) + 1;
    visiting.delete(id);
    layer.set(id, d);
    return d;
  };
  nodes.forEach(depth);
  const layers = [];
  for (const id of nodes) (layers[layer.get(id)] ||= []).push(id);
  const widest = Math.max(...layers.map((c) => c.length));
  const vertical = layers.length > 4;
  // Along the flow: step per layer; across it: step per node in a layer.
  const along = vertical ? NODE_H + GAP_X * 0.6 : NODE_W + GAP_X;
  const across = vertical ? NODE_W + GAP_Y * 2 : NODE_H + GAP_Y;
  const pos = new Map();
  layers.forEach((ids, i) => {
    const offset = ((widest - ids.length) * across) / 2;
    ids.forEach((id, j) => {
      const a = PAD + i * along;
      const b = PAD + offset + j * across;
      pos.set(id, vertical ? { x: b, y: a } : { x: a, y: b });
    });
  });
  const lengthAlong = PAD * 2 + (layers.length - 1) * along + (vertical ? NODE_H : NODE_W);
  const lengthAcross = PAD * 2 + (widest - 1) * across + (vertical ? NODE_W : NODE_H);
  return {
    pos,
    vertical,
    width: vertical ? lengthAcross : lengthAlong,
    height: vertical ? lengthAlong : lengthAcross,
    sources: new Set(nodes.filter((id) => !incoming.get(id).length)),
  };
}

function drawGraph(graph) {
  if (!graph.nodes.length) return h("p", { class: "empty" }, "This flow has no nodes.");
  const { pos, width, height, sources, vertical } = layout(graph);
  const root = svg("svg", { width, height, viewBox: `0 0 ${width} ${height}`, role: "img", "aria-label": `Graph of flow ${graph.name}: ${graph.nodes.length} nodes` });
  root.append(
    svg("defs", {}, svg("marker", { id: "arrow", viewBox: "0 0 10 10", refX: "9", refY: "5", markerWidth: "7", markerHeight: "7", orient: "auto-start-reverse" }, svg("path", { d: "M 0 0 L 10 5 L 0 10 z" }))),
  );
  for (const e of graph.edges) {
    const a = pos.get(e.source);
    const b = pos.get(e.target);
    if (!a || !b) continue;
    let d;
    if (vertical) {
      const [x1, y1, x2, y2] = [a.x + NODE_W / 2, a.y + NODE_H, b.x + NODE_W / 2, b.y - 2];
      const mid = (y1 + y2) / 2;
      d = `M ${x1} ${y1} C ${x1} ${mid}, ${x2} ${mid}, ${x2} ${y2}`;
    } else {
      const [x1, y1, x2, y2] = [a.x + NODE_W, a.y + NODE_H / 2, b.x - 2, b.y + NODE_H / 2];
      const mid = (x1 + x2) / 2;
      d = `M ${x1} ${y1} C ${mid} ${y1}, ${mid} ${y2}, ${x2} ${y2}`;
    }
    root.append(svg("path", { class: "edge", d, "marker-end": "url(#arrow)" }));
  }
  for (const n of graph.nodes) {
    const p = pos.get(n.id);
    const g = svg("g", { class: `node${sources.has(n.id) ? " source" : ""}`, transform: `translate(${p.x} ${p.y})`, "data-node": n.id });
    g.append(
      svg("title", {}, `${n.id} (${n.type})\n${JSON.stringify(n.params || {}).slice(0, 400)}`),
      svg("rect", { width: NODE_W, height: NODE_H, rx: 8 }),
      svg("text", { x: 12, y: 22 }, clip(n.id, 24)),
      svg("text", { x: 12, y: 40, class: "type" }, clip(n.type, 26)),
    );
    root.append(g);
  }
  return h("div", { class: "flow-graph", "data-testid": "flow-graph" }, root);
}

/** The chat scenes: each one's flow drawn, its DSL to copy and change, and "save as a new scene". */
async function scenesPanel(detail, onShow) {
  let scenes;
  try {
    scenes = await api("/api/chat/scenes");
  } catch (err) {
    return panel("Chat scenes", errorNotice(err, "Could not list the chat scenes"));
  }
  const list = h("ul", { class: "list", "data-testid": "scene-list" });

  async function showScene(name, note = null) {
    onShow(`scene:${name}`);
    for (const b of list.querySelectorAll("[data-scene]")) b.setAttribute("aria-current", String(b.dataset.scene === name));
    detail.replaceChildren(panel(`scene:${name}`, spinner()));
    let graph, dsl, info;
    try {
      info = await api(`/api/chat/scenes/${encodeURIComponent(name)}`, { query: { format: "json" } });
      graph = JSON.parse(info.flow);
      dsl = (await api(`/api/chat/scenes/${encodeURIComponent(name)}`, { query: { format: "dsl" } })).flow;
    } catch (err) {
      detail.replaceChildren(panel(`scene:${name}`, errorNotice(err, "Could not load the scene")));
      return;
    }
    const text = h("textarea", { rows: Math.min(18, dsl.split("\n").length + 1), class: "mono", spellcheck: "false", "data-testid": "scene-dsl" });
    text.value = dsl;
    const newName = h("input", { type: "text", required: true, pattern: "[A-Za-z_][A-Za-z0-9_]*", placeholder: `my_${name}`, "data-testid": "scene-name" });
    const save = h("button", { class: "button primary", type: "submit", "data-testid": "scene-save" }, "Save as a new scene");
    const out = h("div", { "aria-live": "polite", "data-testid": "scene-saved" }, note || "");
    const form = h(
      "form",
      { class: "stack" },
      field("Flow (DSL)", text, { hint: "Change operators' parameters or the chain; names resolve only through the operator registry." }),
      field("New scene name", newName),
      h("div", { class: "row" }, save),
      out,
    );
    form.addEventListener("submit", async (e) => {
      e.preventDefault();
      save.disabled = true;
      try {
        const made = await api("/api/chat/scenes", { method: "POST", json: { name: newName.value.trim(), flow: text.value, format: "dsl" } });
        toast(`Scene ${made.name} saved`, "ok");
        // The new scene is shown, with what was saved.
        await refresh(made.name, h("p", { class: "small" }, "Served as ", h("code", {}, `"scene": "${made.name}"`), ` (${made.nodes.join(" \u2192 ")})`));
      } catch (err) {
        out.replaceChildren(errorNotice(err, "The flow was not saved"));
      } finally {
        save.disabled = false;
      }
    });
    detail.replaceChildren(
      panel(
        h("div", { class: "row" }, h("h2", {}, `scene:${name}`), badge(`${info.nodes.length} nodes`), badge(info.origin === "builtin" ? "built-in" : "yours")),
        info.description ? h("p", { class: "muted" }, info.description) : null,
        drawGraph(graph),
        h("p", { class: "muted small", style: "margin:.75rem 0 0" }, "Answers ", h("code", {}, `POST /api/chat {"scene": "${name}"}`), " and the chat page."),
      ),
      panel("Copy and change", form),
    );
  }

  async function refresh(show, note = null) {
    const got = await api("/api/chat/scenes");
    list.replaceChildren(
      ...got.scenes.map((s) => {
        const b = h("button", { class: "list-item", type: "button", "data-scene": s.name, "aria-current": "false" }, h("span", { class: "grow" }, h("strong", {}, s.name), s.description ? h("div", { class: "muted small" }, clip(s.description, 80)) : null), badge(`${s.nodes.length}`));
        b.addEventListener("click", () => showScene(s.name));
        return h("li", {}, b);
      }),
    );
    if (show) await showScene(show, note);
  }
  await refresh(null);
  return { box: panel(`Chat scenes (${scenes.data.length})`, list), showScene };
}

export async function render(root, { args }) {
  let selected = args[0] || null;
  const listBox = h("div", {}, spinner());
  const detail = h("div", { class: "stack" });
  root.replaceChildren(pageHead("Flows", "The chat scenes and the AWEL workflows this server runs: see how they are wired, change a scene, run a flow."), h("div", { class: "grid-2" }, h("div", { class: "stack" }, listBox), detail));

  let flows;
  try {
    flows = await api("/api/v1/awel/flows");
  } catch (err) {
    root.replaceChildren(pageHead("Flows"), loadFailure(err, "Flows", "Workflows are not enabled on this server."));
    return;
  }

  const errorsPanel = flows.errors?.length
    ? panel(
        "Files that did not load",
        h("ul", { class: "list stack", style: "gap:.5rem" }, flows.errors.map((e) => h("li", {}, h("div", { class: "mono small break" }, e.source), h("div", { class: "small break", style: "color:var(--danger)" }, e.message)))),
      )
    : null;

  async function show(name) {
    selected = name;
    history.replaceState(null, "", `#/flows/${encodeURIComponent(name)}`);
    for (const b of listBox.querySelectorAll("[data-flow]")) b.setAttribute("aria-current", String(b.dataset.flow === name));
    detail.replaceChildren(panel(name, spinner()));
    let info;
    try {
      info = await api(`/api/v1/awel/flows/${encodeURIComponent(name)}`);
    } catch (err) {
      detail.replaceChildren(panel(name, errorNotice(err, "Could not load the flow")));
      return;
    }
    const input = h("textarea", { rows: 4, class: "mono", "data-testid": "flow-input" });
    input.value = '{\n  "question": "What is DataPilot?"\n}';
    const out = h("div", { "aria-live": "polite", "data-testid": "flow-output" });
    const run = h("button", { class: "button primary", type: "submit", "data-testid": "flow-run" }, "Run");
    const form = h("form", { class: "stack" }, field("Input (JSON)", input, { hint: "Sent as {\"input\": ...} to the flow's first node." }), h("div", { class: "row" }, run), out);
    form.addEventListener("submit", async (e) => {
      e.preventDefault();
      let value;
      try {
        value = input.value.trim() ? JSON.parse(input.value) : null;
      } catch (err) {
        out.replaceChildren(errorNotice(err.message, "The input is not valid JSON"));
        return;
      }
      run.disabled = true;
      out.replaceChildren(spinner("Running\u2026"));
      const started = performance.now();
      try {
        const pre = h("pre", { class: "json" });
        let streamed = "";
        let result = null;
        await streamEvents(`/api/v1/awel/flows/${encodeURIComponent(name)}/run`, { input: value }, {
          onEvent: (obj) => {
            if (obj && typeof obj === "object" && "result" in obj && "flow" in obj) {
              result = obj.result;
              return;
            }
            if (obj?.error) throw new Error(obj.error.message || JSON.stringify(obj.error));
            const piece = typeof obj === "string" ? obj : obj?.choices?.[0]?.delta?.content ?? obj?.delta ?? obj?.text ?? JSON.stringify(obj);
            streamed += piece;
            pre.textContent = streamed;
            if (!pre.parentNode) out.replaceChildren(pre);
          },
        });
        const took = `${((performance.now() - started) / 1000).toFixed(2)} s`;
        if (!streamed) pre.textContent = typeof result === "string" ? result : JSON.stringify(result, null, 2);
        out.replaceChildren(h("div", { class: "row muted small", style: "margin-bottom:.4rem" }, "Result", badge(took)), pre);
      } catch (err) {
        out.replaceChildren(errorNotice(err, "The flow failed"));
      } finally {
        run.disabled = false;
      }
    });
    const triggers = (info.triggers || []).map((t) => h("div", { class: "small" }, badge(t.type), " ", h("code", {}, t.path || t.node || ""), t.methods ? h("span", { class: "muted" }, ` ${t.methods.join(", ")}`) : null, t.streaming ? h("span", { class: "muted" }, " \u00B7 streaming") : null));
    detail.replaceChildren(
      panel(
        h("div", { class: "row" }, h("h2", {}, info.name), badge(`${info.nodes} nodes`)),
        info.description ? h("p", { class: "muted" }, info.description) : null,
        drawGraph(info.graph),
        triggers.length ? h("div", { class: "stack", style: "gap:.3rem;margin-top:.75rem" }, h("div", { class: "label" }, "Triggers"), triggers) : null,
        info.source ? h("p", { class: "muted small", style: "margin:.75rem 0 0" }, `Loaded from ${info.source}`) : null,
      ),
      panel("Run", form),
    );
  }

  const onScene = (name) => {
    selected = name;
    history.replaceState(null, "", `#/flows/${encodeURIComponent(name)}`);
    for (const b of listBox.querySelectorAll("[data-flow]")) b.setAttribute("aria-current", "false");
  };
  const scenes = await scenesPanel(detail, onScene);
  const scenesBox = scenes.box || scenes;
  if (!flows.data.length) {
    listBox.replaceChildren(
      scenesBox,
      panel("Flows", h("p", { class: "empty", "data-testid": "no-flows" }, "No flows loaded. Put .py, .dsl or .json flows in the folder named by [awel] flows_dir.")),
      errorsPanel || "",
    );
    if (scenes.showScene) await scenes.showScene(selected?.startsWith("scene:") ? selected.slice(6) : "data");
    return;
  }
  if (selected?.startsWith("scene:") && scenes.showScene) {
    listBox.replaceChildren(scenesBox);
    await scenes.showScene(selected.slice(6));
  }
  listBox.replaceChildren(
    scenesBox,
    panel(
      `Flows (${flows.data.length})`,
      h(
        "ul",
        { class: "list", "data-testid": "flow-list" },
        flows.data.map((f) => {
          const b = h("button", { class: "list-item", type: "button", "data-flow": f.name, "aria-current": "false" }, h("span", { class: "grow" }, h("strong", {}, f.name), f.description ? h("div", { class: "muted small" }, clip(f.description, 80)) : null), badge(`${f.nodes}`));
          b.addEventListener("click", () => show(f.name));
          return h("li", {}, b);
        }),
      ),
    ),
    errorsPanel || "",
  );
  if (selected?.startsWith("scene:")) return;
  await show(flows.data.some((f) => f.name === selected) ? selected : flows.data[0].name);
}
