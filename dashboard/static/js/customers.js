// Customer lookup: the id comes from the form (kept in ?id= so a lookup can be linked).
import { createPage } from "./dashboard.js";
import { clear } from "./render.js";

const root = document.getElementById("page");
const form = document.getElementById("lookup");
const input = document.getElementById("customer-id");
const message = document.getElementById("lookup-message");
const page = createPage(root, "");

root.addEventListener("page-error", (ev) => {
  clear(root);
  message.textContent = ev.detail.data?.detail || `lookup failed (${ev.detail.status})`;
  root.dataset.loaded = "true";
  root.dataset.found = "false";
});
root.addEventListener("page-loaded", () => {
  message.textContent = "";
  root.dataset.found = "true";
});

function lookup(id) {
  const url = new URL(location.href);
  url.searchParams.set("id", id);
  history.replaceState(null, "", url);
  clear(root);
  page.setUrl(`/api/customers/${encodeURIComponent(id)}`);
}

form.addEventListener("submit", (ev) => {
  ev.preventDefault();
  const id = input.value.trim();
  if (id) lookup(id);
});

const initial = new URLSearchParams(location.search).get("id");
if (initial) { input.value = initial; lookup(initial); }
