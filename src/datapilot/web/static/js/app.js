// The shell: hash routing between pages, the mobile menu, the API key dialog, the vendor note.

import { apiKey, setApiKey } from "./api.js";
import { errorNotice, h, toast } from "./ui.js";

const PAGES = {
  chat: () => import("./pages/chat.js"),
  data: () => import("./pages/data.js"),
  knowledge: () => import("./pages/knowledge.js"),
  models: () => import("./pages/models.js"),
  cache: () => import("./pages/cache.js"),
  flows: () => import("./pages/flows.js"),
};
const TITLES = { chat: "Chat", data: "Data sources", knowledge: "Knowledge", models: "Models", cache: "Cache", flows: "Flows" };

const main = document.getElementById("main");
const sidebar = document.getElementById("sidebar");
const navToggle = document.getElementById("nav-toggle");
let cleanup = null;
let generation = 0;

function config() {
  try {
    return JSON.parse(document.getElementById("datapilot-config")?.textContent || "{}");
  } catch {
    return {};
  }
}

function route() {
  const [name, ...rest] = location.hash.replace(/^#\/?/, "").split("/");
  return { name: PAGES[name] ? name : "chat", args: rest.map(decodeURIComponent) };
}

async function show() {
  const { name, args } = route();
  const mine = ++generation;
  if (cleanup) {
    try {
      cleanup();
    } catch {
      /* a page's cleanup never blocks the next page */
    }
    cleanup = null;
  }
  for (const a of document.querySelectorAll(".nav a")) {
    if (a.dataset.page === name) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
  document.title = `${TITLES[name]} \u00B7 DataPilot`;
  sidebar.classList.remove("open");
  navToggle.setAttribute("aria-expanded", "false");
  const root = h("div", { class: name === "chat" ? "page-chat" : "page", "data-page": name });
  main.replaceChildren(root);
  try {
    const mod = await PAGES[name]();
    if (mine !== generation) return;
    const done = await mod.render(root, { args, navigate });
    if (mine !== generation) {
      if (typeof done === "function") done();
      return;
    }
    cleanup = typeof done === "function" ? done : null;
  } catch (err) {
    root.replaceChildren(errorNotice(err, `The ${TITLES[name]} page failed`));
    console.warn(err);
  }
}

export function navigate(hash) {
  if (location.hash === hash) show();
  else location.hash = hash;
}

function setupShell() {
  navToggle.addEventListener("click", () => {
    const open = sidebar.classList.toggle("open");
    navToggle.setAttribute("aria-expanded", String(open));
  });
  const dialog = document.getElementById("key-dialog");
  const input = document.getElementById("key-input");
  document.getElementById("api-key-button").addEventListener("click", () => {
    input.value = apiKey();
    dialog.showModal();
  });
  document.getElementById("key-clear").addEventListener("click", () => {
    setApiKey("");
    input.value = "";
    dialog.close();
    toast("API key cleared");
    show();
  });
  document.getElementById("key-form").addEventListener("submit", () => {
    setApiKey(input.value.trim());
    toast("API key saved in this browser");
    show();
  });
  const vendor = config().vendor || {};
  const missing = Object.entries(vendor).filter(([, ok]) => !ok).map(([k]) => k);
  if (missing.length) {
    const note = h(
      "p",
      { class: "vendor-note", role: "note", "data-testid": "vendor-note" },
      `Not installed: ${missing.join(", ")} libraries. Answers show as plain text and charts as tables; run scripts/install.sh to add them.`,
    );
    document.querySelector(".sidebar-foot").before(note);
  }
}

setupShell();
window.addEventListener("hashchange", show);
if (!location.hash) history.replaceState(null, "", "#/chat");
show();
