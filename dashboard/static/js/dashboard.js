// The live part of every page: the range selector and a fetch of /api/<page>?range= every N
// seconds, rendered in place (no reload). 401 sends the browser back to the login page.
import { renderPanels, renderStats } from "./render.js";

const RANGE_KEY = "loyalty-dashboard-range";

export function currentRange() {
  const select = document.getElementById("range");
  return select ? select.value : "24h";
}

function restoreRange() {
  const select = document.getElementById("range");
  const wanted = new URLSearchParams(location.search).get("range") || localStorage.getItem(RANGE_KEY);
  if (select && wanted && [...select.options].some((o) => o.value === wanted)) select.value = wanted;
}

function setStatus(text, error = false) {
  const status = document.getElementById("status");
  if (!status) return;
  status.textContent = text;
  status.classList.toggle("error", error);
}

export function createPage(root, apiUrl) {
  const refreshMs = Number(root.dataset.refreshMs) || 10000;
  let timer = null;
  let url = apiUrl;
  let generation = 0;

  async function load() {
    clearTimeout(timer);
    if (!url) return;
    const mine = ++generation;
    const sep = url.includes("?") ? "&" : "?";
    try {
      const resp = await fetch(`${url}${sep}range=${encodeURIComponent(currentRange())}`, {
        credentials: "same-origin", headers: { Accept: "application/json" },
      });
      if (resp.status === 401) { location.assign("/login"); return; }
      const data = await resp.json();
      if (mine !== generation) return; // a newer load (range or customer changed) won
      if (!resp.ok) { root.dispatchEvent(new CustomEvent("page-error", { detail: { status: resp.status, data } })); return; }
      renderStats(root.querySelector("#stats"), data.stats);
      renderPanels(root.querySelector("#panels"), data.panels);
      root.dataset.range = data.range;
      root.dataset.generatedAt = data.generated_at;
      root.dataset.loaded = "true";
      setStatus(`updated ${new Date().toLocaleTimeString()}`);
      root.dispatchEvent(new CustomEvent("page-loaded", { detail: data }));
    } catch (err) {
      setStatus(`refresh failed: ${err.message}`, true);
    } finally {
      if (mine === generation) timer = setTimeout(load, refreshMs);
    }
  }

  restoreRange();
  document.getElementById("range")?.addEventListener("change", (ev) => {
    localStorage.setItem(RANGE_KEY, ev.target.value);
    root.dataset.loaded = "false";
    load();
  });
  return {
    load,
    setUrl(next) { url = next; root.dataset.loaded = "false"; return load(); },
  };
}
