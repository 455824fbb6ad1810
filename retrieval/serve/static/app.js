// gemseg search page: choose or drop a query (or click a hit), draw a box, see the hits, see what
// the query and its hits share (co-segmentation) and why a hit matched (its verified matches).
// Talks only to this server's /api/*. With a token, it asks once and keeps it for the tab.
"use strict";

const $ = (id) => document.getElementById(id);
// The current query: an uploaded file or an indexed image id; its size in pixels (from the server)
// and the box drawn on it (pixels of the original image), if any.
const query = { file: null, id: null, name: "", size: null, box: null };
const server = { maxUploadBytes: null, maxUploadMb: null };
let lastHits = [];
let blobUrls = [];
const TOKEN_KEY = "gemseg-token";

function setStatus(text, isError = false) {
  $("status").textContent = text;
  $("status").classList.toggle("error", isError);
}

// -- the token -----------------------------------------------------------------------------------
function token() { return sessionStorage.getItem(TOKEN_KEY); }

let tokenWaiters = null;
function askToken(message) {
  // shows the token form once; every request that got a 401 waits for the same answer
  if (!tokenWaiters) {
    tokenWaiters = [];
    $("token-panel").hidden = false;
    $("token-message").textContent = message;
    $("token").value = "";
    $("token").focus();
  }
  return new Promise((resolve) => tokenWaiters.push(resolve));
}

function tokenGiven(e) {
  e.preventDefault();
  const value = $("token").value.trim();
  if (!value) return;
  sessionStorage.setItem(TOKEN_KEY, value);
  $("token-panel").hidden = true;
  const waiters = tokenWaiters || [];
  tokenWaiters = null;
  for (const w of waiters) w();
}

async function authFetch(path, options = {}) {
  for (let attempt = 0; attempt < 5; attempt++) {
    const headers = new Headers(options.headers || {});
    if (token()) headers.set("Authorization", `Bearer ${token()}`);
    const response = await fetch(path, { ...options, headers });
    if (response.status !== 401) return response;
    sessionStorage.removeItem(TOKEN_KEY);
    await askToken(attempt === 0 && !token() ? "This server needs a token." : "That token was refused; try again.");
  }
  throw new Error("no valid token");
}

async function api(path, options) {
  const response = await authFetch(path, options);
  const body = await response.json().catch(() => ({ error: `HTTP ${response.status}` }));
  if (!response.ok) throw new Error(body.error || `HTTP ${response.status}`);
  return body;
}

// An indexed image as a blob: URL (an <img src> could not send the token).
async function imageUrl(id, size) {
  const response = await authFetch(`/api/images/${id}?size=${size}`);
  if (!response.ok) throw new Error(`image ${id}: HTTP ${response.status}`);
  const url = URL.createObjectURL(await response.blob());
  blobUrls.push(url);
  return url;
}

function forgetBlobs(keep = []) {
  for (const u of blobUrls) if (!keep.includes(u)) URL.revokeObjectURL(u);
  blobUrls = blobUrls.filter((u) => keep.includes(u));
}

// -- search --------------------------------------------------------------------------------------
function searchForm() {
  const form = new FormData();
  if (query.file) {
    form.append("image", query.file, query.file.name);
    form.append("preview", "1"); // the server's decoded JPEG: what the browser may not decode (HEIC)
  } else form.append("id", String(query.id));
  form.append("top", $("top").value || "12");
  form.append("qe", $("qe").checked ? ($("qe-k").value || "2") : "0");
  form.append("alpha", $("alpha").value || "3");
  const rerank = $("rerank").value.trim();
  if (rerank) form.append("rerank", rerank);
  if (query.box) form.append("box", query.box.join(","));
  return form;
}

// A failed query: its error where the results were, the old hits gone, nothing to share.
// A search still in flight is abandoned: its late answer must not bring the old hits back.
function showFailure(message) {
  searchSeq += 1;
  lastHits = [];
  $("hits").replaceChildren();
  const p = document.createElement("p");
  p.className = "error";
  p.id = "results-error";
  p.textContent = message;
  $("hits").append(p);
  $("share").disabled = true;
  clearCoseg();
  closeWhy();
  setStatus(message, true);
}

let searchSeq = 0;
async function runSearch() {
  if (!query.file && query.id === null) return;
  const seq = ++searchSeq;
  setStatus("searching…");
  $("share").disabled = true;
  try {
    const result = await api("/api/search", { method: "POST", body: searchForm() });
    if (seq !== searchSeq) return; // a newer search was started meanwhile
    query.size = result.size;
    if (result.preview) $("query-img").src = result.preview;
    lastHits = result.hits;
    await renderHits(result.hits);
    if (seq !== searchSeq) return; // superseded while its thumbnails loaded
    $("share").disabled = result.hits.length === 0;
    const steps = result.rerank.length ? ` · re-ranked: ${result.rerank.join(", ")}` : "";
    setStatus(`${result.hits.length} hits in ${result.ms.toFixed(0)} ms${steps}`);
  } catch (err) {
    if (seq === searchSeq) showFailure(err.message);
  }
}

async function renderHits(hits) {
  const grid = $("hits");
  const keep = [$("query-img").src];
  forgetBlobs(keep);
  grid.replaceChildren();
  closeWhy();
  const loads = [];
  for (const hit of hits) {
    const fig = document.createElement("figure");
    fig.className = "hit" + (hit.id === query.id ? " self" : "") + (hit.missing ? " missing" : "");
    fig.dataset.id = hit.id;
    fig.dataset.rank = hit.rank;
    fig.dataset.score = hit.score;
    fig.dataset.missing = hit.missing ? "1" : "0";
    const cap = document.createElement("figcaption");
    const name = hit.path.split(/[\\/]/).pop();
    cap.innerHTML = `<b>#${hit.rank}</b> ${hit.score.toFixed(3)} · `;
    cap.append(name);
    if (hit.missing) {
      // the file is gone: no thumbnail (none cached either), and it cannot become the query
      const gone = document.createElement("div");
      gone.className = "gone";
      gone.textContent = "file missing";
      fig.title = `${hit.path}\nthe indexed file no longer exists`;
      fig.append(gone, cap);
    } else {
      const img = document.createElement("img");
      img.alt = hit.path;
      loads.push(imageUrl(hit.id, 256).then((u) => { img.src = u; }).catch(() => { fig.classList.add("broken"); }));
      fig.title = `${hit.path}\nclick to search with this image`;
      fig.append(img, cap);
      fig.addEventListener("click", () => useIndexed(hit.id, hit.path));
    }
    if (Array.isArray(hit.matches) && hit.matches.length) {
      const why = document.createElement("button");
      why.type = "button";
      why.className = "why";
      why.textContent = `why? ${hit.inliers ?? hit.matches.length} matches`;
      why.addEventListener("click", (e) => { e.stopPropagation(); showWhy(hit); });
      fig.append(why);
    }
    grid.append(fig);
  }
  await Promise.all(loads);
}

function showQuery(src, name) {
  $("stage").hidden = false;
  $("query-img").src = src;
  $("query-name").textContent = name;
  clearBox(false);
  clearCoseg();
}

function useFile(file) {
  if (!file) return;
  if (server.maxUploadBytes !== null && file.size > server.maxUploadBytes) {
    // refused here, before sending: the server would answer 413
    Object.assign(query, { file: null, id: null, name: file.name, size: null });
    $("stage").hidden = true;
    $("query-name").textContent = file.name;
    showFailure(`${file.name} is ${(file.size / 2 ** 20).toFixed(1)} MiB, over this server's upload limit ` +
                `of ${server.maxUploadMb} MiB`);
    return;
  }
  Object.assign(query, { file, id: null, name: file.name, size: null });
  showQuery(URL.createObjectURL(file), file.name);
  runSearch();
}

async function useIndexed(id, path) {
  Object.assign(query, { file: null, id, name: path, size: null });
  try {
    showQuery(await imageUrl(id, 640), path.split(/[\\/]/).pop());
  } catch (err) {
    showFailure(err.message);
    return;
  }
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
function clearCoseg() {
  $("coseg").replaceChildren();
  $("coseg-legend").replaceChildren();
  $("coseg-title").hidden = true;
}

function renderLegend(colours, objectFactors) {
  const legend = $("coseg-legend");
  legend.replaceChildren();
  colours.forEach((colour, j) => {
    const item = document.createElement("span");
    item.className = "swatch";
    item.dataset.factor = j;
    const chip = document.createElement("i");
    chip.style.background = colour;
    item.append(chip, `factor ${j}${objectFactors.includes(j) ? " (object)" : ""}`);
    legend.append(item);
  });
}

async function share() {
  const ids = lastHits.filter((h) => !h.missing).map((h) => h.id).filter((id) => id !== query.id).slice(0, 4);
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
    renderLegend(result.colours || [], result.object_factors);
    $("coseg-title").hidden = false;
    setStatus(`co-segmented ${result.images.length} images in ${result.ms.toFixed(0)} ms ` +
              `(layer ${result.layer}, object factors ${result.object_factors.join(", ")})`);
  } catch (err) {
    setStatus(err.message, true);
  } finally {
    $("share").disabled = lastHits.length === 0;
  }
}

// -- why did it match: the verified matches of a hit -------------------------------------------
function closeWhy() {
  $("why").hidden = true;
  $("why-canvas").getContext("2d").clearRect(0, 0, $("why-canvas").width, $("why-canvas").height);
}

function loaded(img) {
  return img.complete && img.naturalWidth ? Promise.resolve(img)
    : new Promise((resolve, reject) => { img.onload = () => resolve(img); img.onerror = reject; });
}

async function showWhy(hit) {
  const q = await loaded($("query-img"));
  const h = new Image();
  h.src = await imageUrl(hit.id, 640);
  await loaded(h);
  const H = 240;
  const wq = Math.round(q.naturalWidth * H / q.naturalHeight), wh = Math.round(h.naturalWidth * H / h.naturalHeight);
  const canvas = $("why-canvas");
  canvas.width = wq + 12 + wh;
  canvas.height = H;
  const ctx = canvas.getContext("2d");
  ctx.drawImage(q, 0, 0, wq, H);
  ctx.drawImage(h, wq + 12, 0, wh, H);
  // matches are in each image's own pixels (the whole query's, box or not): the query's size from
  // the search, the hit's from the hit
  const qs = query.size;
  const hs = hit.size || [h.naturalWidth, h.naturalHeight];
  const ax = wq / qs[0], ay = H / qs[1], bx = wh / hs[0], by = H / hs[1];
  ctx.lineWidth = 1.5;
  hit.matches.forEach(([xq, yq, xh, yh], n) => {
    ctx.strokeStyle = `hsl(${(n * 47) % 360} 90% 55%)`;
    ctx.beginPath();
    ctx.moveTo(xq * ax, yq * ay);
    ctx.lineTo(wq + 12 + xh * bx, yh * by);
    ctx.stroke();
  });
  $("why-text").textContent = `#${hit.rank} ${hit.path.split(/[\\/]/).pop()}: ${hit.inliers ?? hit.matches.length} ` +
    `inlier matches (lines join the same point in the query and the hit)`;
  $("why").hidden = false;
  $("why").dataset.id = hit.id;
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
  $("why-close").addEventListener("click", closeWhy);
  $("token-form").addEventListener("submit", tokenGiven);
  for (const id of ["top", "qe", "qe-k", "alpha", "rerank"]) $(id).addEventListener("change", runSearch);
  $("options").addEventListener("submit", (e) => { e.preventDefault(); runSearch(); });
  setupBox();
  api("/api/info").then((info) => {
    server.maxUploadMb = info.max_upload_mb;
    server.maxUploadBytes = Math.floor(info.max_upload_mb * 2 ** 20);
    const list = $("rerankers");
    for (const name of info.rerankers || []) {
      const opt = document.createElement("option");
      opt.value = name;
      list.append(opt);
    }
    $("info").textContent = `${info.images} images · ${info.dim}-d · ${info.factory} · ${info.model} · ${info.device}` +
      ` · commit ${info.commit}`;
  }).catch((err) => setStatus(err.message, true));
}

document.addEventListener("DOMContentLoaded", setup);
