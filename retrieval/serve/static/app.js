// gemseg search page: choose or drop a query (or click a hit), draw a box, see the hits, and see
// what the query and its hits share (co-segmentation). Talks only to this server's /api/*.
"use strict";

const $ = (id) => document.getElementById(id);
// The current query: an uploaded file or an indexed image id; its size in pixels (from the server)
// and the box drawn on it (pixels of the original image), if any.
const query = { file: null, id: null, name: "", size: null, box: null };
let lastHits = [];

function setStatus(text, isError = false) {
  $("status").textContent = text;
  $("status").classList.toggle("error", isError);
}

async function api(path, options) {
  const response = await fetch(path, options);
  const body = await response.json().catch(() => ({ error: `HTTP ${response.status}` }));
  if (!response.ok) throw new Error(body.error || `HTTP ${response.status}`);
  return body;
}

function searchForm() {
  const form = new FormData();
  if (query.file) form.append("image", query.file, query.file.name);
  else form.append("id", String(query.id));
  form.append("top", $("top").value || "12");
  form.append("qe", $("qe").checked ? ($("qe-k").value || "2") : "0");
  form.append("alpha", $("alpha").value || "3");
  if (query.box) form.append("box", query.box.join(","));
  return form;
}

async function runSearch() {
  if (!query.file && query.id === null) return;
  setStatus("searching…");
  try {
    const result = await api("/api/search", { method: "POST", body: searchForm() });
    query.size = result.size;
    lastHits = result.hits;
    renderHits(result.hits);
    $("share").disabled = result.hits.length === 0;
    setStatus(`${result.hits.length} hits in ${result.ms.toFixed(0)} ms`);
  } catch (err) {
    setStatus(err.message, true);
  }
}

function renderHits(hits) {
  const grid = $("hits");
  grid.replaceChildren();
  for (const hit of hits) {
    const fig = document.createElement("figure");
    fig.className = "hit" + (hit.id === query.id ? " self" : "");
    fig.dataset.id = hit.id;
    fig.dataset.rank = hit.rank;
    fig.dataset.score = hit.score;
    fig.title = `${hit.path}\nclick to search with this image`;
    const img = document.createElement("img");
    img.src = `/api/images/${hit.id}?size=256`;
    img.alt = hit.path;
    img.loading = "lazy";
    const cap = document.createElement("figcaption");
    const name = hit.path.split(/[\\/]/).pop();
    cap.innerHTML = `<b>#${hit.rank}</b> ${hit.score.toFixed(3)} · `;
    cap.append(name);
    fig.append(img, cap);
    fig.addEventListener("click", () => useIndexed(hit.id, hit.path));
    grid.append(fig);
  }
}

function showQuery(src, name) {
  $("stage").hidden = false;
  $("query-img").src = src;
  $("query-name").textContent = name;
  clearBox(false);
  $("coseg").replaceChildren();
  $("coseg-title").hidden = true;
}

function useFile(file) {
  if (!file) return;
  Object.assign(query, { file, id: null, name: file.name, size: null });
  showQuery(URL.createObjectURL(file), file.name);
  runSearch();
}

function useIndexed(id, path) {
  Object.assign(query, { file: null, id, name: path, size: null });
  showQuery(`/api/images/${id}?size=640`, path.split(/[\\/]/).pop());
  runSearch();
}

// -- the box ------------------------------------------------------------------------------------
function clearBox(search = true) {
  const had = query.box !== null;
  query.box = null;
  $("box").hidden = true;
  $("box-text").textContent = "";
  $("clear-box").disabled = true;
  if (search && had) runSearch();
}

let dragStart = null;

function pointIn(img, event) {
  const r = img.getBoundingClientRect();
  return [Math.min(Math.max(event.clientX - r.left, 0), r.width), Math.min(Math.max(event.clientY - r.top, 0), r.height)];
}

function drawBox(a, b) {
  const img = $("query-img");
  const box = $("box");
  box.hidden = false;
  box.style.left = `${img.offsetLeft + Math.min(a[0], b[0])}px`;
  box.style.top = `${img.offsetTop + Math.min(a[1], b[1])}px`;
  box.style.width = `${Math.abs(a[0] - b[0])}px`;
  box.style.height = `${Math.abs(a[1] - b[1])}px`;
}

function setupBox() {
  const img = $("query-img");
  img.addEventListener("pointerdown", (e) => {
    if (!query.size) return;
    e.preventDefault();
    img.setPointerCapture(e.pointerId);
    dragStart = pointIn(img, e);
  });
  img.addEventListener("pointermove", (e) => { if (dragStart) drawBox(dragStart, pointIn(img, e)); });
  img.addEventListener("pointerup", (e) => {
    if (!dragStart) return;
    const a = dragStart, b = pointIn(img, e);
    dragStart = null;
    if (Math.abs(a[0] - b[0]) < 4 || Math.abs(a[1] - b[1]) < 4) { $("box").hidden = query.box === null; return; }
    drawBox(a, b);
    // displayed pixels → pixels of the original image (the server said how large it is)
    const sx = query.size[0] / img.clientWidth, sy = query.size[1] / img.clientHeight;
    const clamp = (v, hi) => Math.min(Math.max(Math.round(v), 0), hi);
    query.box = [clamp(Math.min(a[0], b[0]) * sx, query.size[0]), clamp(Math.min(a[1], b[1]) * sy, query.size[1]),
                 clamp(Math.max(a[0], b[0]) * sx, query.size[0]), clamp(Math.max(a[1], b[1]) * sy, query.size[1])];
    $("box-text").textContent = `box ${query.box.join(", ")} (pixels of the ${query.size.join("×")} query)`;
    $("clear-box").disabled = false;
    runSearch();
  });
}

// -- what do they share -------------------------------------------------------------------------
async function share() {
  const ids = lastHits.map((h) => h.id).filter((id) => id !== query.id).slice(0, 4);
  let options;
  if (query.file) {
    const form = new FormData();
    form.append("image", query.file, query.file.name);
    form.append("ids", ids.join(","));
    form.append("k", "3");
    options = { method: "POST", body: form };
  } else {
    options = { method: "POST", headers: { "Content-Type": "application/json" },
                body: JSON.stringify({ ids: [query.id, ...ids], k: 3 }) };
  }
  setStatus("co-segmenting…");
  $("share").disabled = true;
  try {
    const result = await api("/api/coseg", options);
    const grid = $("coseg");
    grid.replaceChildren();
    for (const item of result.images) {
      const fig = document.createElement("figure");
      const overlay = document.createElement("img");
      overlay.src = item.overlay;
      overlay.alt = `concepts of ${item.name}`;
      const mask = document.createElement("img");
      mask.src = item.mask;
      mask.alt = `object mask of ${item.name}`;
      const cap = document.createElement("figcaption");
      cap.textContent = (item.id === null ? "query · " : "") + item.name.split(/[\\/]/).pop();
      fig.append(overlay, mask, cap);
      grid.append(fig);
    }
    $("coseg-title").hidden = false;
    setStatus(`co-segmented ${result.images.length} images in ${result.ms.toFixed(0)} ms ` +
              `(layer ${result.layer}, object factors ${result.object_factors.join(", ")})`);
  } catch (err) {
    setStatus(err.message, true);
  } finally {
    $("share").disabled = false;
  }
}

// -- wiring -------------------------------------------------------------------------------------
function setup() {
  const drop = $("drop");
  drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    drop.classList.remove("over");
    useFile(e.dataTransfer.files[0]);
  });
  $("file").addEventListener("change", (e) => useFile(e.target.files[0]));
  $("clear-box").addEventListener("click", () => clearBox());
  $("share").addEventListener("click", share);
  for (const id of ["top", "qe", "qe-k", "alpha"]) $(id).addEventListener("change", runSearch);
  $("options").addEventListener("submit", (e) => { e.preventDefault(); runSearch(); });
  setupBox();
  api("/api/info").then((info) => {
    $("info").textContent = `${info.images} images · ${info.dim}-d · ${info.factory} · ${info.model} · ${info.device}`;
  }).catch((err) => setStatus(err.message, true));
}

document.addEventListener("DOMContentLoaded", setup);
