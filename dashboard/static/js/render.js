// Stat cards and panels (a Chart.js chart and the table of its numbers), updated in place.
const charts = new Map();

const fmt = new Intl.NumberFormat("en-US", { maximumFractionDigits: 2 });

export function display(value) {
  if (typeof value === "number") return fmt.format(value);
  if (value === null || value === undefined) return "";
  if (typeof value === "boolean") return String(value);
  return String(value);
}

export function renderStats(container, stats) {
  for (const s of stats) {
    let card = container.querySelector(`[data-stat="${s.id}"]`);
    if (!card) {
      card = document.createElement("div");
      card.className = "stat";
      card.dataset.stat = s.id;
      card.innerHTML = '<div class="label"></div><div class="value"></div>';
      container.append(card);
    }
    card.querySelector(".label").textContent = s.label;
    card.querySelector(".value").textContent = display(s.value);
    card.dataset.value = String(s.value);
  }
}

function section(container, panel) {
  let el = container.querySelector(`section[data-panel="${panel.id}"]`);
  if (el) return el;
  el = document.createElement("section");
  el.className = "panel";
  el.dataset.panel = panel.id;
  el.innerHTML = '<h2></h2><div class="chart"><canvas></canvas></div><div class="table-wrap"><table></table></div>';
  el.querySelector("table").dataset.testid = `table-${panel.id}`;
  container.append(el);
  return el;
}

function shortLabel(label) {
  // ISO bucket starts -> "MM-DD HH:MM" (UTC); other labels unchanged
  return /^\d{4}-\d\d-\d\dT/.test(label) ? `${label.slice(5, 10)} ${label.slice(11, 16)}` : label;
}

function chartConfig(chart) {
  const round = chart.type === "doughnut";
  const category = { stacked: chart.stacked, ticks: { callback(v) { return shortLabel(this.getLabelForValue(v)); } } };
  const value = { stacked: chart.stacked, beginAtZero: true };
  if (typeof chart.max === "number") value.max = chart.max; // e.g. 100 for a % used bar
  // horizontal: one bar per label along y, values along x (budget use)
  const scales = round ? {} : chart.horizontal ? { x: value, y: category } : { x: category, y: value };
  return {
    type: chart.type,
    data: { labels: chart.labels, datasets: chart.datasets.map((d) => ({ ...d })) },
    options: {
      indexAxis: chart.horizontal ? "y" : "x",
      responsive: true, maintainAspectRatio: false, animation: false,
      plugins: { legend: { position: "bottom" } }, scales,
      elements: { point: { radius: 0 } },
    },
  };
}

function drawChart(el, panel) {
  const box = el.querySelector(".chart");
  box.hidden = !panel.chart;
  if (!panel.chart) return;
  const existing = charts.get(panel.id);
  if (existing && existing.config.type === panel.chart.type) {
    existing.data.labels = panel.chart.labels;
    existing.data.datasets = panel.chart.datasets.map((d) => ({ ...d }));
    existing.update("none");
    return;
  }
  if (existing) existing.destroy();
  charts.set(panel.id, new window.Chart(box.querySelector("canvas"), chartConfig(panel.chart)));
}

function fillTable(table, data) {
  const head = document.createElement("thead");
  const tr = document.createElement("tr");
  for (const c of data.columns) {
    const th = document.createElement("th");
    th.textContent = c;
    tr.append(th);
  }
  head.append(tr);
  const body = document.createElement("tbody");
  for (const row of data.rows) {
    const r = document.createElement("tr");
    row.forEach((v, i) => {
      const td = document.createElement("td");
      td.dataset.col = data.columns[i];
      td.dataset.value = v === null ? "" : String(v);
      td.textContent = display(v);
      if (typeof v === "number") td.className = "num";
      r.append(td);
    });
    body.append(r);
  }
  if (!data.rows.length) {
    const r = document.createElement("tr");
    r.innerHTML = `<td class="empty" colspan="${data.columns.length}">no rows in this range</td>`;
    body.append(r);
  }
  table.replaceChildren(head, body);
}

export function renderPanels(container, panels) {
  const keep = new Set(panels.map((p) => p.id));
  for (const el of container.querySelectorAll("section[data-panel]")) {
    if (!keep.has(el.dataset.panel)) {
      charts.get(el.dataset.panel)?.destroy();
      charts.delete(el.dataset.panel);
      el.remove();
    }
  }
  for (const panel of panels) {
    const el = section(container, panel);
    el.querySelector("h2").textContent = panel.title;
    drawChart(el, panel);
    fillTable(el.querySelector("table"), panel.table);
  }
}

export function clear(root) {
  for (const chart of charts.values()) chart.destroy();
  charts.clear();
  root.querySelector("#stats").replaceChildren();
  root.querySelector("#panels").replaceChildren();
}
