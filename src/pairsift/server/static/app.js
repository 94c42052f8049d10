"use strict";
// The search page: text and image queries, a grid of hits, and a sample's explain view.
// Every value from the server is inserted as text (never as HTML), so captions cannot inject.

const $ = (id) => document.getElementById(id);
let lastSearch = null; // re-run when a filter changes
let generation = 0; // number of the latest search

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (name === "text") node.textContent = value;
    else node.setAttribute(name, value);
  }
  for (const child of children) node.append(child);
  return node;
}

function showError(message) {
  $("error").textContent = message;
  $("error").hidden = !message;
}

async function call(url, options) {
  const response = await fetch(url, options);
  const body = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(body.detail || `${response.status} ${response.statusText}`);
  return body;
}

function filters() {
  const params = new URLSearchParams({ k: $("k").value, verdict: $("verdict").value });
  if ($("reason").value) params.set("reason", $("reason").value);
  return params;
}

function hitCard(hit) {
  const verdict = hit.verdict === "drop" ? "dropped" : "kept";
  const numbers = el("div", { class: "numbers" },
    el("span", { class: "score", text: `#${hit.rank} score ${hit.score.toFixed(3)}` }),
    el("span", {
      class: "confidence",
      text: hit.confidence === null ? "" : `P(same) ${(100 * hit.confidence).toFixed(0)}%`,
    }));
  const status = el("div", { class: "status" },
    el("span", { class: `badge ${hit.verdict}`, text: verdict }),
    ...hit.reasons.map((r) => el("span", { class: "reason", text: r })));
  return el("li", { class: "hit", "data-uid": hit.uid, "data-key": hit.key || "" },
    el("img", { src: `/api/thumb/${hit.uid}`, alt: hit.caption || hit.key || hit.uid }),
    numbers, status,
    el("p", { class: "caption", text: hit.caption || "(no caption)" }),
    el("a", { class: "explain-link", href: `#explain/${hit.uid}`, text: "explain" }));
}

function render(result, label) {
  const list = $("results");
  list.replaceChildren(...result.hits.map(hitCard));
  $("status").textContent =
    `${result.hits.length} hits for ${label} (${result.space} space)`;
}

async function runSearch(search) {
  lastSearch = search;
  const mine = ++generation; // a slower earlier answer must not overwrite a later one
  showError("");
  try {
    const result = await search.run();
    if (mine === generation) render(result, search.label);
  } catch (error) {
    if (mine !== generation) return;
    $("results").replaceChildren();
    $("status").textContent = "";
    showError(error.message);
  }
}

function textSearch(query) {
  return {
    label: `"${query}"`,
    run: () => call(`/api/search?${new URLSearchParams({ q: query })}&${filters()}`),
  };
}

function imageSearch(file) {
  return {
    label: `image ${file.name}`,
    run: () => {
      const form = new FormData();
      form.append("file", file);
      return call(`/api/search/image?${filters()}`, { method: "POST", body: form });
    },
  };
}

function table(rows) {
  if (!rows.length) return el("p", { class: "muted", text: "none" });
  return el("table", {}, ...rows.map(([name, value]) => el("tr", {},
    el("th", { text: name }),
    el("td", {}, el("pre", { text: typeof value === "string" ? value : JSON.stringify(value, null, 1) })))));
}

async function showExplain(uid) {
  $("search-view").hidden = true;
  $("explain-view").hidden = false;
  const box = $("explain");
  box.replaceChildren(el("p", { text: "loading…" }));
  try {
    const report = await call(`/api/explain/${encodeURIComponent(uid)}`);
    const sample = report.sample || {};
    box.replaceChildren(
      el("h2", { id: "explain-uid", text: report.uid }),
      el("p", {}, el("span", { class: `badge ${report.verdict}`, id: "explain-verdict",
        text: report.verdict })),
      el("img", { src: `/api/thumb/${report.uid}`, alt: sample.caption || report.uid }),
      el("h3", { text: "sample" }),
      table(Object.entries(sample).map(([k, v]) => [k, v === null ? "" : String(v)])),
      el("h3", { text: "signals" }),
      table(Object.entries(report.signals)),
      el("h3", { text: "decisions" }),
      table(report.decisions.map((d) => [`${d.stage}: ${d.verdict}`,
        { reason: d.reason, evidence: d.evidence }])),
      el("h3", { text: "errors" }),
      table(report.errors.map((e) => [e.stage, `${e.reason}: ${e.message}`])));
  } catch (error) {
    box.replaceChildren(el("p", { role: "alert", text: error.message }));
  }
}

function route() {
  const match = location.hash.match(/^#explain\/([0-9a-f]{32})$/);
  if (match) {
    showExplain(match[1]);
  } else {
    $("explain-view").hidden = true;
    $("search-view").hidden = false;
  }
}

async function init() {
  try {
    const info = await call("/api/info");
    $("info").textContent =
      `${info.workspace}: ${info.samples} samples, model ${info.model}`;
    $("query").maxLength = info.limits.query_chars;
    $("k").max = info.limits.k;
    $("reason").append(...info.reasons.map((r) => el("option", { value: r, text: r })));
  } catch (error) {
    showError(error.message);
  }
  $("text-form").addEventListener("submit", (event) => {
    event.preventDefault();
    runSearch(textSearch($("query").value));
  });
  $("image-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const file = $("image-input").files[0];
    if (file) runSearch(imageSearch(file));
    else showError("choose an image file first");
  });
  for (const id of ["verdict", "reason", "k"]) {
    $(id).addEventListener("change", () => lastSearch && runSearch(lastSearch));
  }
  $("back").addEventListener("click", (event) => {
    event.preventDefault();
    history.pushState(null, "", location.pathname);
    route();
  });
  window.addEventListener("hashchange", route);
  route();
}

init();
