// The Gravity view: reads api/daily, api/runs and api/dead-letter (same origin, Airflow's session cookie)
// and draws them. No framework: Chart.js for the two charts, plain DOM for the rest.
"use strict";

const BUCKETS = [
  ["delivered", "--delivered"],
  ["duplicate", "--duplicate"],
  ["rejected", "--rejected"],
  ["invalid", "--invalid"],
  ["skipped_delivered", "--skipped"],
  ["undelivered", "--undelivered"],
];
const MATCH_KEYS = [
  ["em", "e-mail", "#2f9e44"],
  ["ph", "phone", "#4c6ef5"],
  ["fn_ln", "first + last name", "#ae3ec9"],
  ["external_id", "external id", "#f08c00"],
  ["click_id", "click id", "#0c8599"],
];
const PAGE_SIZE = {runs: 20, "dead-letter": 25};
const state = {filters: {}, offsets: {runs: 0, "dead-letter": 0}, charts: {}};
const numberFormat = new Intl.NumberFormat("en-US");
const percentFormat = new Intl.NumberFormat("en-US", {style: "percent", maximumFractionDigits: 1});

function cssColor(name) {
  return getComputedStyle(document.documentElement).getPropertyValue(name).trim();
}

function isoDay(date) {
  return date.toISOString().slice(0, 10);
}

function cell(text, className) {
  const td = document.createElement("td");
  td.textContent = text === null || text === undefined ? "" : String(text);
  if (className) td.className = className;
  return td;
}

function numberCell(value, field) {
  const td = cell(numberFormat.format(value), "number");
  td.dataset.field = field;
  td.dataset.value = String(value);
  return td;
}

function fillRows(tableId, rows, build) {
  const body = document.querySelector(`#${tableId} tbody`);
  body.replaceChildren(...rows.map(build));
  if (!rows.length) {
    const tr = document.createElement("tr");
    const td = cell("nothing in this range", "empty");
    td.colSpan = document.querySelectorAll(`#${tableId} thead th`).length;
    tr.append(td);
    body.append(tr);
  }
}

function showMessage(text) {
  const message = document.getElementById("message");
  message.textContent = text || "";
  message.hidden = !text;
}

async function getJson(path, parameters) {
  const query = new URLSearchParams(Object.entries(parameters).filter(([, value]) => value !== "" && value != null));
  const response = await fetch(`${path}?${query}`, {credentials: "same-origin", headers: {Accept: "application/json"}});
  const body = await response.json().catch(() => ({detail: response.statusText}));
  if (!response.ok) throw new Error(body.detail || `HTTP ${response.status}`);
  return body;
}

function drawCharts(days) {
  const labels = days.map((day) => day.day);
  const bucketData = {
    labels,
    datasets: BUCKETS.map(([name, color]) => ({
      label: name,
      data: days.map((day) => day[name]),
      backgroundColor: cssColor(color),
      stack: "rows",
    })),
  };
  const coverageData = {
    labels,
    datasets: MATCH_KEYS.map(([key, label, color]) => ({
      label,
      data: days.map((day) => day.match_key_coverage[key]),
      borderColor: color,
      backgroundColor: color,
      tension: 0.2,
      pointRadius: 3,
    })),
  };
  const common = {responsive: true, maintainAspectRatio: false, animation: false, interaction: {mode: "index", intersect: false}};
  for (const chart of Object.values(state.charts)) chart.destroy();
  state.charts.buckets = new Chart(document.getElementById("chart-buckets"), {
    type: "bar",
    data: bucketData,
    options: {...common, scales: {x: {stacked: true}, y: {stacked: true, beginAtZero: true}}},
  });
  state.charts.coverage = new Chart(document.getElementById("chart-coverage"), {
    type: "line",
    data: coverageData,
    options: {
      ...common,
      scales: {y: {min: 0, max: 1, ticks: {callback: (value) => percentFormat.format(value)}}},
      plugins: {tooltip: {callbacks: {label: (item) => `${item.dataset.label}: ${percentFormat.format(item.parsed.y)}`}}},
    },
  });
}

function fillSelect(name, values, selected) {
  const select = document.querySelector(`#filters [name=${name}]`);
  const options = [new Option("all", ""), ...values.map((value) => new Option(value, value))];
  select.replaceChildren(...options);
  select.value = values.includes(selected) ? selected : "";
}

async function loadDaily() {
  const daily = await getJson("api/daily", state.filters);
  const dagIds = [...new Set(daily.tasks.map((task) => task.dag_id))];
  const taskIds = [...new Set(daily.tasks.filter((task) => !state.filters.dag_id || task.dag_id === state.filters.dag_id)
    .map((task) => task.task_id))];
  fillSelect("dag_id", dagIds, state.filters.dag_id);
  fillSelect("task_id", taskIds, state.filters.task_id);
  for (const element of document.querySelectorAll("[data-total]")) {
    const value = daily.totals[element.dataset.total];
    element.textContent = numberFormat.format(value);
    element.dataset.value = String(value);
  }
  drawCharts(daily.days);
  fillRows("reasons", daily.top_reasons, (reason) => {
    const tr = document.createElement("tr");
    tr.append(cell(reason.kind === "rejected" ? "Gravity" : "validation"), cell(reason.reason, "id"),
      numberCell(reason.rows, "rows"));
    return tr;
  });
  fillRows("days", [...daily.days].reverse(), (day) => {
    const tr = document.createElement("tr");
    tr.dataset.day = day.day;
    tr.append(cell(day.day), numberCell(day.runs, "runs"));
    for (const [name] of BUCKETS) tr.append(numberCell(day[name], name));
    for (const key of ["em", "ph"]) {
      const td = cell(percentFormat.format(day.match_key_coverage[key]), "number");
      td.dataset.field = `coverage_${key}`;
      td.dataset.value = String(day.match_key_coverage[key]);
      tr.append(td);
    }
    return tr;
  });
}

function updatePager(name, total) {
  const pager = document.querySelector(`[data-pager=${name}]`);
  const offset = state.offsets[name];
  const last = Math.min(offset + PAGE_SIZE[name], total);
  pager.querySelector("span").textContent = total ? `${offset + 1}–${last} of ${numberFormat.format(total)}` : "";
  pager.querySelector("[data-step='-1']").disabled = offset === 0;
  pager.querySelector("[data-step='1']").disabled = last >= total;
}

async function loadRuns() {
  const runs = await getJson("api/runs", {...state.filters, limit: PAGE_SIZE.runs, offset: state.offsets.runs});
  document.getElementById("runs-count").textContent = `${numberFormat.format(runs.total_entries)} task tries`;
  fillRows("runs", runs.runs, (run) => {
    const tr = document.createElement("tr");
    tr.dataset.runId = String(run.id);
    const outcome = cell(run.outcome, `outcome-${run.outcome}`);
    if (run.failure) outcome.title = run.failure;
    tr.append(cell(run.day), cell(`${run.dag_id} / ${run.task_id}${run.map_index >= 0 ? ` [${run.map_index}]` : ""}`, "id"),
      cell(run.run_id, "id"), cell(run.try_number), outcome, numberCell(run.rows_read, "rows_read"),
      numberCell(run.delivered, "delivered"), numberCell(run.rejected, "rejected"), numberCell(run.invalid, "invalid"),
      numberCell(run.requests, "requests"), numberCell(run.retries, "retries"), cell(run.seconds.toFixed(1), "number"),
      cell(numberFormat.format(Math.round(run.rows_per_second)), "number"));
    return tr;
  });
  updatePager("runs", runs.total_entries);
}

async function loadDeadLetter() {
  const status = document.getElementById("dead-letter-status").value;
  const parameters = {...state.filters, status, limit: PAGE_SIZE["dead-letter"], offset: state.offsets["dead-letter"]};
  const holder = document.getElementById("dead-letter-count");
  let page;
  try {
    page = await getJson("api/dead-letter", parameters);
  } catch (error) {
    holder.textContent = error.message;
    fillRows("dead-letter", [], null);
    updatePager("dead-letter", 0);
    return;
  }
  holder.textContent = `${numberFormat.format(page.total_entries)} events`;
  fillRows("dead-letter", page.dead_letter, (event) => {
    const tr = document.createElement("tr");
    tr.append(cell(event.event_name), cell(event.event_id, "id"), cell(event.status), cell(event.detail, "id"),
      cell(event.attempts, "number"), cell(event.last_run_id, "id"), cell((event.last_recorded_at || "").slice(0, 19).replace("T", " ")));
    return tr;
  });
  updatePager("dead-letter", page.total_entries);
}

async function loadAll() {
  showMessage("");
  document.body.dataset.state = "loading";
  try {
    await loadDaily();
    await Promise.all([loadRuns(), loadDeadLetter()]);
    document.body.dataset.state = "ready";
  } catch (error) {
    showMessage(error.message);
    document.body.dataset.state = "error";
  }
}

function readForm() {
  const form = new FormData(document.getElementById("filters"));
  state.filters = Object.fromEntries([...form.entries()].filter(([, value]) => value !== ""));
  state.offsets = {runs: 0, "dead-letter": 0};
  history.replaceState(null, "", `?${new URLSearchParams(state.filters)}`);
}

function start() {
  const form = document.getElementById("filters");
  const given = new URLSearchParams(location.search);
  const today = new Date();
  form.end_date.value = given.get("end_date") || isoDay(today);
  form.start_date.value = given.get("start_date") || isoDay(new Date(today.getTime() - 29 * 86400000));
  state.filters = {start_date: form.start_date.value, end_date: form.end_date.value};
  for (const name of ["dag_id", "task_id"]) {
    if (given.get(name)) {
      state.filters[name] = given.get(name);
      form[name].replaceChildren(new Option(given.get(name), given.get(name)));
    }
  }
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    readForm();
    loadAll();
  });
  form.dag_id.addEventListener("change", () => {
    form.task_id.value = "";
  });
  document.getElementById("dead-letter-status").addEventListener("change", () => {
    state.offsets["dead-letter"] = 0;
    loadDeadLetter();
  });
  for (const pager of document.querySelectorAll("[data-pager]")) {
    pager.addEventListener("click", (event) => {
      const step = Number(event.target.dataset.step || 0);
      if (!step) return;
      const name = pager.dataset.pager;
      state.offsets[name] = Math.max(0, state.offsets[name] + step * PAGE_SIZE[name]);
      (name === "runs" ? loadRuns : loadDeadLetter)();
    });
  }
  loadAll();
}

document.addEventListener("DOMContentLoaded", start);
