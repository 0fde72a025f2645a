// Models: each model's status and instances, start / stop / restart, and live serving figures.

import { api, isUnavailable } from "../api.js";
import { busy, button, formatMs, h, loadFailure, pageHead, panel, spinner, statusBadge, toast } from "../ui.js";

const REFRESH_MS = 3000;

export async function render(root) {
  let timer = 0;
  let alive = true;
  const body = h("div", { class: "stack" }, spinner());
  const note = h("div");
  const refreshButton = button("Refresh", () => load(), { small: true });
  root.replaceChildren(pageHead("Models", "Models served by this DataPilot, their instances and recent figures (refreshed every 3 s).", refreshButton), note, body);

  async function action(btn, name, verb) {
    await busy(btn, async () => {
      const r = await api(`/api/models/${encodeURIComponent(name)}/${verb}`, { method: "POST" });
      toast(r.error ? `${name}: ${r.error}` : `${name}: ${verb} done${r.state ? ` (${r.state})` : ""}`, r.error ? "error" : "");
      await load();
    });
  }

  async function load() {
    clearTimeout(timer);
    const [served, hosted, figures] = await Promise.allSettled([api("/v1/models"), api("/api/models"), api("/api/metrics/models")]);
    if (!alive) return;
    if (served.status === "rejected") {
      body.replaceChildren(loadFailure(served.reason, "Models"));
      return;
    }
    const lifecycle = hosted.status === "fulfilled";
    const instances = new Map((lifecycle ? hosted.value.models : []).map((m) => [m.name, m]));
    const live = figures.status === "fulfilled" ? figures.value.data : {};
    note.replaceChildren(
      ...(lifecycle
        ? []
        : [
            h(
            "div",
            { class: "notice", "data-testid": "lifecycle-unavailable", style: "margin-bottom:1rem" },
            h("strong", {}, "Start and stop are not available here. "),
              isUnavailable(hosted.reason) ? "This server does not host models itself (API server role): manage them on their workers." : hosted.reason.message,
            ),
          ]),
    );
    const models = served.value.data;
    const ready = models.filter((m) => m.status === "ready").length;
    const totalRequests = Object.values(live).reduce((n, f) => n + (f.requests || 0), 0);
    const cards = h(
      "div",
      { class: "cards" },
      h("div", { class: "stat" }, h("div", { class: "label" }, "Models"), h("div", { class: "value" }, String(models.length))),
      h("div", { class: "stat" }, h("div", { class: "label" }, "Ready"), h("div", { class: "value" }, `${ready}/${models.length}`)),
      h("div", { class: "stat" }, h("div", { class: "label" }, "Requests served"), h("div", { class: "value" }, String(totalRequests))),
    );
    const rows = models.map((m) => {
      const f = live[m.id] || {};
      const inst = instances.get(m.id);
      const running = inst ? inst.instances.some((i) => i.state === "ready" || i.state === "loading") : m.status === "ready";
      const actions = lifecycle
        ? h(
            "div",
            { class: "row", style: "flex-wrap:nowrap" },
            (running ? ["stop", "restart"] : ["start"]).map((verb) => {
              const b = button(verb[0].toUpperCase() + verb.slice(1), null, { small: true, kind: verb === "stop" ? "danger ghost" : "" });
              b.setAttribute("aria-label", `${verb} ${m.id}`);
              b.addEventListener("click", () => action(b, m.id, verb));
              return b;
            }),
          )
        : null;
      return h(
        "tr",
        { "data-testid": "model-row", "data-model": m.id },
        h("td", { style: "min-width:170px" }, h("strong", {}, m.id), h("div", { class: "caps" }, (m.capabilities || []).join(" \u00B7 ") || m.backend || "")),
        h("td", { style: "min-width:150px" }, statusBadge(m.status), m.detail ? h("div", { class: "small", style: "color:var(--danger);max-width:280px" }, m.detail) : null),
        h("td", {}, inst ? (inst.instances.length ? inst.instances.map((i) => h("div", { class: "small nowrap", title: i.error || "" }, `${i.worker}: `, statusBadge(i.state), i.node ? h("span", { class: "muted instance-node" }, ` on ${i.node}`) : null)) : h("span", { class: "muted small" }, "none running")) : h("span", { class: "muted small" }, "\u2013")),
        h("td", { class: "num" }, formatMs(f.first_token_p50_ms)),
        h("td", { class: "num" }, f.tokens_per_s ? f.tokens_per_s.toFixed(1) : "\u2013"),
        h("td", { class: "num" }, String(f.requests ?? 0), f.errors ? h("div", { class: "small", style: "color:var(--danger)" }, `${f.errors} failed`) : null),
        lifecycle ? h("td", {}, actions) : null,
      );
    });
    const head = ["Model", "Status", "Instances", "First token (p50)", "Tokens/s", "Requests", ...(lifecycle ? [""] : [])];
    body.replaceChildren(
      cards,
      panel(
        "Served models",
        h("div", { class: "table-wrap" }, h("table", { class: "data", "data-testid": "models-table" }, h("thead", {}, h("tr", {}, head.map((c) => h("th", { scope: "col" }, c)))), h("tbody", {}, rows))),
        figures.status === "rejected" ? h("p", { class: "muted small", style: "margin-top:.5rem" }, `Live figures unavailable: ${figures.reason.message}`) : h("p", { class: "muted small", style: "margin:.5rem 0 0" }, "Figures are medians over each model's last 100 requests."),
      ),
    );
    timer = setTimeout(load, REFRESH_MS);
  }

  await load();
  return () => {
    alive = false;
    clearTimeout(timer);
  };
}
