// The search page: plain JavaScript, no build step, nothing from another host.
// Every call goes to this server's /v1 API with the tab's key (sessionStorage) when it asks
// for one; images and sounds are fetched with that key and shown from blob: URLs.

const $ = (selector) => document.querySelector(selector);
const KEY_STORE = "mmr-api-key";
const PAGE = 24; // results a page: the first, and each "More results" adds one (offset)
const MAX_K = 1000;
const UPLOADS_AT_ONCE = 3;
const TEXT_FILE = /\.(txt|md)$/i;

const state = {
  key: sessionStorage.getItem(KEY_STORE),
  collections: [],
  collection: null,
  query: null, // {text} | {file} | {item_id, label}
  shown: 0, // results on the page: the next page's offset
  searchRun: 0, // the newest search; an older one's answer is dropped
  blobUrls: [],
};

class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

// ---- the API -----------------------------------------------------------------------------

function authHeaders() {
  return state.key ? { Authorization: `Bearer ${state.key}` } : {};
}

async function errorOf(response) {
  try {
    const body = await response.json();
    if (body && body.error) return new ApiError(response.status, body.error.code, body.error.message);
  } catch (_) { /* not our error body */ }
  return new ApiError(response.status, "http_" + response.status, `the server answered ${response.status}`);
}

// fetch with the key; a 401 asks for a key and tries again.
async function call(path, { method = "GET", json, form, accept = "json", signal } = {}) {
  for (;;) {
    const headers = authHeaders();
    let body;
    if (json !== undefined) {
      headers["Content-Type"] = "application/json";
      body = JSON.stringify(json);
    } else if (form) {
      body = form;
    }
    const response = await fetch(path, { method, headers, body, signal });
    if (response.status === 401) {
      const error = await errorOf(response);
      await askForKey(state.key ? `The key was refused: ${error.message}` : error.message);
      continue;
    }
    if (!response.ok) throw await errorOf(response);
    if (accept === "blob") return response.blob();
    if (response.status === 204) return null;
    return response.json();
  }
}

// ---- the key -----------------------------------------------------------------------------

let keyWaiters = null;

function askForKey(reason) {
  const dialog = $("#key-dialog");
  $("#key-reason").textContent = reason || "This server asks for an API key.";
  if (!keyWaiters) {
    keyWaiters = [];
    $("#key-input").value = "";
    dialog.showModal();
    $("#key-input").focus();
  }
  return new Promise((resolve) => keyWaiters.push(resolve));
}

function setUpKey() {
  $("#key-form").addEventListener("submit", (event) => {
    const key = $("#key-input").value.trim();
    if (!key) { // spaces only: no key yet, the prompt stays
      event.preventDefault();
      return;
    }
    state.key = key;
    sessionStorage.setItem(KEY_STORE, key);
    $("#key-button").hidden = false;
    const waiting = keyWaiters || [];
    keyWaiters = null;
    waiting.forEach((resolve) => resolve());
  });
  $("#key-dialog").addEventListener("cancel", (event) => event.preventDefault());
  // Closed without a key (a second Escape closes a modal whatever cancel says): calls that
  // wait for one would wait forever, so it opens again.
  $("#key-dialog").addEventListener("close", () => {
    if (keyWaiters) $("#key-dialog").showModal();
  });
  $("#key-button").hidden = !state.key;
  $("#key-button").addEventListener("click", async () => {
    await askForKey("Enter another key.");
    await loadCollections();
  });
}

// ---- collections -------------------------------------------------------------------------

function modalitiesOf(collection) {
  return collection.audio_model ? "images, texts, videos, sounds" : "images, texts, videos";
}

function describe(collection) {
  const items = `${collection.count} item${collection.count === 1 ? "" : "s"}`;
  return `${items} · model ${collection.model} · ${modalitiesOf(collection)} · index ${collection.index.type}`;
}

async function loadCollections() {
  const select = $("#collection");
  const { collections } = await call("/v1/collections");
  state.collections = collections;
  const wanted = state.collection || new URLSearchParams(location.search).get("collection");
  select.replaceChildren(...collections.map((c) => new Option(c.name, c.name)));
  if (!collections.length) {
    $("#collection-info").textContent = "No collection yet: create one with the API (POST /v1/collections).";
    state.collection = null;
    return;
  }
  state.collection = collections.some((c) => c.name === wanted) ? wanted : collections[0].name;
  select.value = state.collection;
  showCollection();
}

function showCollection() {
  const found = state.collections.find((c) => c.name === state.collection);
  $("#collection-info").textContent = found ? describe(found) : "";
}

async function refreshCollection() {
  if (!state.collection) return;
  const fresh = await call(`/v1/collections/${encodeURIComponent(state.collection)}`);
  state.collections = state.collections.map((c) => (c.name === fresh.name ? fresh : c));
  showCollection();
}

// ---- search ------------------------------------------------------------------------------

function parseFilter(text) {
  const filter = {};
  for (const line of text.split("\n")) {
    if (!line.trim()) continue;
    const at = line.indexOf("=");
    if (at < 1) throw new ApiError(0, "filter", `"${line.trim()}" is not key = value`);
    const key = line.slice(0, at).trim();
    const raw = line.slice(at + 1).trim();
    // A number or a boolean may be stored as one or as text: match either.
    let values = [raw];
    if (/^-?\d+(\.\d+)?$/.test(raw)) values = [raw, Number(raw)];
    else if (raw === "true" || raw === "false") values = [raw, raw === "true"];
    const before = filter[key] || [];
    filter[key] = before.concat(values);
  }
  return Object.keys(filter).length ? filter : null;
}

function chosenModalities() {
  const boxes = [...document.querySelectorAll('input[name="modality"]')];
  const on = boxes.filter((b) => b.checked).map((b) => b.value);
  return on.length === boxes.length ? null : on;
}

function say(text) {
  $("#result-count").textContent = text;
}

// A new search (its first page), or with ``more`` the next page of the one shown, appended.
async function search(more = false) {
  const run = more ? state.searchRun : ++state.searchRun;
  const query = state.query;
  const offset = more ? state.shown : 0;
  const k = Math.min(PAGE, MAX_K - offset);
  if (!state.collection || !query) {
    showResults([], run);
    say("");
    return;
  }
  let filter;
  try {
    filter = parseFilter($("#filter").value);
  } catch (error) {
    say(error.message);
    return;
  }
  const modalities = chosenModalities();
  if (modalities && !modalities.length) {
    showResults([], run);
    say("Tick at least one kind of item to search.");
    return;
  }
  const path = `/v1/collections/${encodeURIComponent(state.collection)}/search`;
  say(more ? "Loading more…" : "Searching…");
  $("#more").hidden = true; // one page at a time
  try {
    let answer;
    if (query.file) {
      const form = new FormData();
      form.append("file", query.file, query.file.name);
      form.append("k", String(k));
      if (offset) form.append("offset", String(offset));
      if (modalities) form.append("modalities", modalities.join(","));
      if (filter) form.append("filter", JSON.stringify(filter));
      answer = await call(path, { method: "POST", form });
    } else {
      const body = { k };
      if (offset) body.offset = offset;
      if (query.text !== undefined) body.text = query.text;
      // exact words (lexical) or both (hybrid) for typed words; files and items by meaning
      const mode = $("#mode").value;
      if (query.text !== undefined && mode !== "vector") body.mode = mode;
      if (query.item_id !== undefined) body.item_id = query.item_id;
      if (modalities) body.modalities = modalities;
      if (filter) body.filter = filter;
      answer = await call(path, { method: "POST", json: body });
    }
    if (run !== state.searchRun) return;
    showResults(answer.results, run, offset);
    const n = state.shown;
    say(`${n} result${n === 1 ? "" : "s"} for ${labelOf(query)}`);
    $("#more").hidden = answer.results.length < k || n >= MAX_K;
  } catch (error) {
    if (run !== state.searchRun) return;
    if (!more) showResults([], run);
    $("#more").hidden = true;
    say(`Search failed: ${error.message}`);
  }
}

function labelOf(query) {
  if (query.file) return `the file ${query.file.name}`;
  if (query.item_id !== undefined) return `items like ${query.label || query.item_id}`;
  return `“${query.text}”`;
}

function searchBy(query) {
  state.query = query;
  const shown = $("#query-shown");
  shown.hidden = !(query && (query.file || query.item_id !== undefined));
  if (!shown.hidden) shown.textContent = `Searching by ${labelOf(query)}. Type words to search by words again.`;
  return search();
}

function itemPath(item, what) {
  return `/v1/collections/${encodeURIComponent(item.collection)}/items/${encodeURIComponent(item.id)}/${what}`;
}

// Thumbnails and sounds are fetched (with the key) only once they come near the screen, and
// the fetches of results that were replaced are abandoned: "More results" up to 1,000 does
// not download a thousand originals.
let mediaLoads = new AbortController();
const loaders = new WeakMap();
// An observer that runs each element's loader (whenNear) once it comes near the screen.
function loadingObserver() {
  const observer = new IntersectionObserver((entries) => {
    for (const entry of entries) {
      if (!entry.isIntersecting) continue;
      observer.unobserve(entry.target);
      const load = loaders.get(entry.target);
      if (load) load();
    }
  }, { rootMargin: "400px" });
  return observer;
}
const nearScreen = loadingObserver();

function whenNear(element, load) {
  loaders.set(element, load);
  nearScreen.observe(element);
}

async function blobUrl(path) {
  const blob = await call(path, { accept: "blob", signal: mediaLoads.signal });
  const url = URL.createObjectURL(blob);
  state.blobUrls.push(url);
  return url;
}

function seconds(value) {
  return `${value.toFixed(1)} s`;
}

// A video hit: the frame at the matched moment, and a button that plays the video from
// there (the original is fetched only then: it may be large).
function videoOf(hit) {
  const item = hit.item;
  const start = hit.start || 0;
  const box = document.createElement("div");
  box.className = "video";
  const img = mediaOf({ ...hit, item: { ...item, modality: "image-of-video" } });
  const play = document.createElement("button");
  play.type = "button";
  play.textContent = `Play from ${seconds(start)}`;
  play.setAttribute("aria-label", `Play video ${item.id} from ${seconds(start)}`);
  play.addEventListener("click", () => {
    play.disabled = true;
    const video = document.createElement("video");
    video.controls = true;
    video.preload = "metadata";
    video.dataset.start = String(start);
    video.setAttribute("aria-label", `Video ${item.id}, from ${seconds(start)}`);
    video.addEventListener("loadedmetadata", () => {
      video.currentTime = start;
      video.play().catch(() => {});
    }, { once: true });
    blobUrl(itemPath(item, "content"))
      .then((url) => { video.src = url; box.replaceChildren(video); })
      .catch(() => { play.disabled = false; });
  });
  box.append(img, play);
  return box;
}

function mediaOf(hit) {
  const item = hit.item;
  if (item.modality === "video") return videoOf(hit);
  if (item.modality === "image" || item.modality === "image-of-video") {
    const video = item.modality === "image-of-video";
    const img = document.createElement("img");
    img.alt = `${video ? "Video" : "Picture"} ${item.id}`;
    img.decoding = "async";
    const at = video && hit.start != null ? `?t=${hit.start}` : "";
    whenNear(img, () => blobUrl(itemPath(item, "thumbnail") + at)
      .then((url) => { img.src = url; })
      .catch((error) => { if (error.name !== "AbortError") img.alt = `${img.alt} (no thumbnail)`; }));
    return img;
  }
  if (item.modality === "audio") {
    const audio = document.createElement("audio");
    audio.controls = true;
    audio.preload = "metadata";
    const start = hit.start || 0;
    audio.setAttribute("aria-label", `Sound ${item.id}, from ${seconds(start)}`);
    audio.dataset.start = String(start);
    audio.addEventListener("loadedmetadata", () => { audio.currentTime = start; }, { once: true });
    whenNear(audio, () => blobUrl(itemPath(item, "content")).then((url) => { audio.src = url; }).catch(() => {}));
    return audio;
  }
  const text = document.createElement("p");
  text.className = "snippet";
  const words = item.text || "";
  text.textContent = words.length > 280 ? words.slice(0, 279) + "…" : words;
  return text;
}

// The results of a new search, or (``from`` > 0) the next page's, after those shown.
function showResults(results, run, from = 0) {
  if (run !== state.searchRun) return;
  const list = $("#results");
  state.shown = from + results.length;
  if (from > 0) {
    list.append(...results.map((hit, n) => hitElement(hit, from + n)));
    return;
  }
  mediaLoads.abort();
  mediaLoads = new AbortController();
  nearScreen.disconnect();
  // The old players and pictures let go of their blob: URLs before these are revoked (a
  // player still reading one would log a failed load).
  for (const media of $("#results").querySelectorAll("audio, video, img")) {
    media.removeAttribute("src");
    if (media.load) media.load();
  }
  state.blobUrls.forEach((url) => URL.revokeObjectURL(url));
  state.blobUrls = [];
  list.replaceChildren(...results.map((hit, n) => hitElement(hit, n)));
}

function hitElement(hit, n) {
  const li = document.createElement("li");
  li.className = "hit";
  li.dataset.id = hit.item.id;
  li.dataset.modality = hit.item.modality;
  li.title = `score ${hit.score.toFixed(3)}`;
  li.append(mediaOf(hit));
  const meta = document.createElement("div");
  meta.className = "meta";
  const name = document.createElement("span");
  name.textContent = `${n + 1}. ${hit.item.id}`;
  const score = document.createElement("span");
  score.className = "score";
  score.textContent = hit.score.toFixed(3);
  meta.append(name, score);
  const like = document.createElement("button");
  like.type = "button";
  like.textContent = "More like this";
  like.setAttribute("aria-label", `More like ${hit.item.id}`);
  like.addEventListener("click", () => {
    $("#query").value = "";
    searchBy({ item_id: hit.item.id, label: hit.item.id });
  });
  li.append(meta, like);
  if (hit.start != null && (hit.item.modality === "audio" || hit.item.modality === "video")) {
    const when = document.createElement("span");
    when.className = "muted";
    when.textContent = `match at ${seconds(hit.start)}–${seconds(hit.end)}`;
    li.append(when);
  }
  return li;
}

function debounce(fn, ms) {
  let timer = null;
  return (...args) => {
    clearTimeout(timer);
    timer = setTimeout(() => fn(...args), ms);
  };
}

function firstMedia(files) {
  return [...files].find((f) => /^(image|audio|video)\//.test(f.type) || !f.type);
}

function setUpSearch() {
  const typed = debounce(() => {
    const text = $("#query").value.trim();
    searchBy(text ? { text } : null);
  }, 250);
  $("#query").addEventListener("input", typed);
  $("#search-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const text = $("#query").value.trim();
    searchBy(text ? { text } : null);
  });
  $("#query-file").addEventListener("change", (event) => {
    const file = firstMedia(event.target.files);
    if (file) searchBy({ file });
    event.target.value = "";
  });
  const again = debounce(() => search(), 250);
  document.querySelectorAll('input[name="modality"]').forEach((box) => box.addEventListener("change", again));
  $("#filter").addEventListener("input", again);
  $("#mode").addEventListener("change", again);
  $("#more").addEventListener("click", () => search(true));
  const section = $("#search-section");
  const hint = $("#query-drop");
  section.addEventListener("dragover", (event) => {
    event.preventDefault();
    hint.classList.add("active");
  });
  section.addEventListener("dragleave", (event) => {
    if (!section.contains(event.relatedTarget)) hint.classList.remove("active");
  });
  section.addEventListener("drop", (event) => {
    event.preventDefault();
    hint.classList.remove("active");
    const file = firstMedia(event.dataTransfer.files);
    if (file) searchBy({ file });
  });
  document.addEventListener("paste", (event) => {
    if ($("#search-section").hidden) return;
    const file = firstMedia(event.clipboardData ? event.clipboardData.files : []);
    if (file) {
      event.preventDefault();
      searchBy({ file });
    }
  });
}

// ---- adding items ------------------------------------------------------------------------

const uploads = { queue: [], running: 0, total: 0, done: 0, failed: 0, bytes: 0, sent: new Map() };

function overall() {
  let sent = 0;
  uploads.sent.forEach((n) => { sent += n; });
  $("#add-overall").hidden = false;
  $("#add-progress").value = uploads.bytes ? sent / uploads.bytes : 1;
  const left = uploads.total - uploads.done - uploads.failed;
  $("#add-summary").textContent =
    `${uploads.done} of ${uploads.total} added` +
    (uploads.failed ? `, ${uploads.failed} failed` : "") + (left ? `, ${left} to go` : "");
}

function rowFor(name) {
  const li = document.createElement("li");
  const label = document.createElement("span");
  label.className = "name";
  label.textContent = name;
  const bar = document.createElement("progress");
  bar.max = 1;
  bar.value = 0;
  bar.setAttribute("aria-label", `Upload of ${name}`);
  const status = document.createElement("span");
  status.className = "status";
  status.textContent = "waiting";
  li.append(label, bar, status);
  $("#uploads").append(li);
  return { li, bar, status };
}

function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

// One request with upload progress (fetch has none); resolves with {status, body, retryAfter}.
function send(path, body, onProgress, contentType) {
  return new Promise((resolve) => {
    const xhr = new XMLHttpRequest();
    xhr.open("POST", path);
    Object.entries(authHeaders()).forEach(([k, v]) => xhr.setRequestHeader(k, v));
    if (contentType) xhr.setRequestHeader("Content-Type", contentType);
    xhr.upload.addEventListener("progress", (event) => {
      if (event.lengthComputable) onProgress(event.loaded / event.total);
    });
    xhr.addEventListener("load", () => {
      let parsed = null;
      try { parsed = JSON.parse(xhr.responseText); } catch (_) { /* not JSON */ }
      resolve({ status: xhr.status, body: parsed, retryAfter: Number(xhr.getResponseHeader("Retry-After")) });
    });
    xhr.addEventListener("error", () => resolve({ status: 0, body: null, retryAfter: 0 }));
    xhr.send(body);
  });
}

async function uploadOne(task) {
  const { file, id, row } = task;
  const path = `/v1/collections/${encodeURIComponent(task.collection)}/items`;
  let failures = 0;
  for (;;) {
    let body;
    let type;
    if (TEXT_FILE.test(file.name)) {
      body = JSON.stringify({ id, text: await file.text() });
      type = "application/json";
    } else {
      body = new FormData();
      body.append("file", file, file.name);
      body.append("id", id);
    }
    row.status.textContent = "sending";
    const answer = await send(path, body, (fraction) => {
      row.bar.value = fraction;
      uploads.sent.set(task, fraction * file.size);
      overall();
    }, type);
    if (answer.status === 200 || answer.status === 201) {
      row.bar.value = 1;
      uploads.sent.set(task, file.size);
      row.status.textContent = answer.status === 201 ? "added" : "replaced";
      row.status.className = "status done";
      uploads.done += 1;
      return;
    }
    if (answer.status === 401) {
      await askForKey(answer.body && answer.body.error ? answer.body.error.message : "");
      continue;
    }
    if (answer.status === 429) { // the server is busy: wait as long as it says, then again
      row.status.textContent = "server busy, waiting";
      await sleep(1000 * (answer.retryAfter || 1));
      continue;
    }
    if ((answer.status === 0 || answer.status >= 500) && failures < 3) {
      failures += 1;
      row.status.textContent = `retrying (${failures})`;
      await sleep(500 * 2 ** failures);
      continue;
    }
    const error = answer.body && answer.body.error;
    row.status.textContent = error ? error.message : `failed (HTTP ${answer.status || "connection lost"})`;
    row.status.className = "status failed";
    row.li.classList.add("failed");
    uploads.failed += 1;
    uploads.sent.set(task, file.size);
    return;
  }
}

async function pump() {
  while (uploads.running < UPLOADS_AT_ONCE && uploads.queue.length) {
    const task = uploads.queue.shift();
    uploads.running += 1;
    uploadOne(task).catch((error) => {
      task.row.status.textContent = `failed: ${error.message}`;
      task.row.status.className = "status failed";
      uploads.failed += 1;
      uploads.sent.set(task, task.file.size);
    }).finally(() => {
      uploads.running -= 1;
      overall();
      if (!uploads.running && !uploads.queue.length) refreshCollection().catch(() => {});
      pump();
    });
  }
}

// An item's id is its path, as `mmr ingest` makes it: "%" and "/" escaped (an id holds no "/").
function idOf(path) {
  return path.replaceAll("%", "%25").replaceAll("/", "%2F");
}

function addFiles(entries) {
  if (!state.collection) return;
  for (const { file, path } of entries) {
    const id = idOf(path || file.name);
    uploads.queue.push({ file, id, row: rowFor(id), collection: state.collection });
    uploads.total += 1;
    uploads.bytes += file.size;
  }
  overall();
  pump();
}

// Files of a dropped folder, recursively, with their paths.
async function walk(entry, prefix) {
  if (entry.isFile) {
    const file = await new Promise((resolve, reject) => entry.file(resolve, reject));
    return [{ file, path: prefix + entry.name }];
  }
  const reader = entry.createReader();
  const found = [];
  for (;;) {
    const batch = await new Promise((resolve, reject) => reader.readEntries(resolve, reject));
    if (!batch.length) break;
    for (const child of batch) found.push(...(await walk(child, `${prefix}${entry.name}/`)));
  }
  return found;
}

function setUpAdding() {
  const zone = $("#add-drop");
  $("#add-files").addEventListener("change", (event) => {
    addFiles([...event.target.files].map((file) => ({ file, path: file.name })));
    event.target.value = "";
  });
  $("#add-folder").addEventListener("change", (event) => {
    addFiles([...event.target.files].map((file) => ({ file, path: file.webkitRelativePath || file.name })));
    event.target.value = "";
  });
  zone.addEventListener("dragover", (event) => {
    event.preventDefault();
    zone.classList.add("active");
  });
  zone.addEventListener("dragleave", () => zone.classList.remove("active"));
  zone.addEventListener("drop", async (event) => {
    event.preventDefault();
    zone.classList.remove("active");
    const items = [...(event.dataTransfer.items || [])];
    const entries = items.map((i) => (i.webkitGetAsEntry ? i.webkitGetAsEntry() : null));
    if (entries.length && entries.every(Boolean)) {
      const found = [];
      for (const entry of entries) found.push(...(await walk(entry, "")));
      addFiles(found);
    } else {
      addFiles([...event.dataTransfer.files].map((file) => ({ file, path: file.name })));
    }
  });
}

// ---- jobs --------------------------------------------------------------------------------

let polling = null;
let watched = 0; // the newest watchJob; an older one's answers are dropped

function percent(x) {
  return `${Math.round(100 * x)}%`;
}

function progressText(job) {
  const p = job.progress || {};
  const parts = [`${job.type}: ${job.status}`];
  if (p.epoch != null) parts.push(`epoch ${p.epoch}${p.max_epochs ? ` of ${p.max_epochs}` : ""}`);
  if (p.loss != null) parts.push(`loss ${Number(p.loss).toFixed(3)}`);
  if (p.eta_s != null && job.status === "running") parts.push(`about ${Math.ceil(p.eta_s)} s left`);
  if (job.error) parts.push(job.error);
  const m = job.metrics || {};
  if (job.status === "succeeded" && m.aligner_version != null) {
    parts.push(`version ${m.aligner_version} ${m.activated ? "activated" : "kept, not activated"}`);
  }
  return parts.join(" · ");
}

function drawChart(metrics) {
  const before = metrics && metrics.before;
  const after = metrics && metrics.after;
  const figure = $("#job-chart");
  if (!before || !after) {
    figure.hidden = true;
    return;
  }
  // recall@5 each way when the job measured it (a_to_b@5: the first modality finds the
  // second), else every figure it gave.
  const all = Object.keys(after).filter((k) => k in before);
  const fives = all.filter((k) => k.endsWith("@5"));
  const keys = fives.length ? fives : all;
  const [a, b] = metrics.modalities || ["a", "b"];
  const nameOf = (key) => key.replace("a_to_b", `${a}→${b}`).replace("b_to_a", `${b}→${a}`);
  const svg = $("#chart");
  const ns = "http://www.w3.org/2000/svg";
  const width = 320;
  const height = 150;
  const base = 120;
  const group = (width - 40) / Math.max(keys.length, 1);
  const shapes = [];
  keys.forEach((key, n) => {
    [["before", before[key]], ["after", after[key]]].forEach(([which, value], m) => {
      const bar = document.createElementNS(ns, "rect");
      const h = Math.max(1, 100 * value);
      bar.setAttribute("x", String(30 + n * group + m * (group / 2 - 4)));
      bar.setAttribute("y", String(base - h));
      bar.setAttribute("width", String(group / 2 - 8));
      bar.setAttribute("height", String(h));
      bar.setAttribute("class", `bar-${which}`);
      shapes.push(bar);
      const label = document.createElementNS(ns, "text");
      label.setAttribute("x", String(30 + n * group + m * (group / 2 - 4)));
      label.setAttribute("y", String(base - h - 3));
      label.textContent = percent(value);
      shapes.push(label);
    });
    const name = document.createElementNS(ns, "text");
    name.setAttribute("x", String(30 + n * group));
    name.setAttribute("y", String(base + 16));
    name.textContent = nameOf(key);
    shapes.push(name);
  });
  const legend = document.createElementNS(ns, "text");
  legend.setAttribute("x", "30");
  legend.setAttribute("y", String(height - 2));
  legend.textContent = "grey: before · blue: after";
  shapes.push(legend);
  svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
  svg.replaceChildren(...shapes);
  $("#chart-text").textContent = keys
    .map((k) => `${nameOf(k)}: ${percent(before[k])} before, ${percent(after[k])} after`).join("; ");
  figure.hidden = false;
}

async function watchJob(id, run = ++watched) {
  clearTimeout(polling);
  const job = await call(`/v1/jobs/${encodeURIComponent(id)}`);
  if (run !== watched) return;
  $("#job").hidden = false;
  $("#job-title").textContent = `Job ${job.id}`;
  const p = job.progress || {};
  $("#job-progress").value = job.status === "succeeded" ? 1 : Number(p.fraction || 0);
  $("#job-status").textContent = progressText(job);
  if (["queued", "running"].includes(job.status)) {
    polling = setTimeout(() => watchJob(id, run).catch(() => {}), 1000);
    return;
  }
  if (job.type === "finetune") drawChart(job.metrics);
  await Promise.all([loadVersions(), loadJobs(), refreshCollection()]);
}

async function loadVersions() {
  const body = $("#versions tbody");
  if (!state.collection) {
    body.replaceChildren();
    return;
  }
  const { aligners } = await call(`/v1/collections/${encodeURIComponent(state.collection)}/aligners`);
  body.replaceChildren(...aligners.map((a) => {
    const tr = document.createElement("tr");
    const cells = [
      `${a.version}${a.active ? " (active)" : ""}`,
      a.meta && a.meta.job ? `fine-tune (job ${String(a.meta.job).slice(0, 8)})` : "the model's own heads",
      new Date(a.created_at).toLocaleString(),
    ].map((text) => {
      const td = document.createElement("td");
      td.textContent = text;
      return td;
    });
    const action = document.createElement("td");
    if (!a.active) {
      const button = document.createElement("button");
      button.type = "button";
      button.textContent = `Activate version ${a.version}`;
      button.addEventListener("click", async () => {
        try {
          await call(`/v1/collections/${encodeURIComponent(state.collection)}/aligners/${a.version}/activate`, { method: "POST" });
          $("#job-status").textContent = `Version ${a.version} is active.`;
        } catch (error) {
          $("#job-status").textContent = `Could not activate version ${a.version}: ${error.message}`;
        }
        await loadVersions();
      });
      action.append(button);
    }
    tr.append(...cells, action);
    return tr;
  }));
}

async function loadJobs() {
  if (!state.collection) return;
  const { jobs } = await call(`/v1/jobs?collection=${encodeURIComponent(state.collection)}&limit=5`);
  $("#job-list").replaceChildren(...jobs.map((job) => {
    const li = document.createElement("li");
    const button = document.createElement("button");
    button.type = "button";
    button.textContent = `${job.type} ${job.id.slice(0, 8)}: ${job.status}`;
    button.addEventListener("click", () => watchJob(job.id));
    li.append(button);
    return li;
  }));
}

function setUpJobs() {
  const kind = $("#job-type");
  kind.addEventListener("change", () => {
    $("#finetune-fields").hidden = kind.value !== "finetune";
    $("#pair-key").required = kind.value === "finetune";
  });
  $("#job-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const job = { type: kind.value, collection: state.collection };
    if (kind.value === "finetune") {
      job.pair_key = $("#pair-key").value.trim();
      job.activate = $("#activate").value;
    }
    try {
      const created = await call("/v1/jobs", { method: "POST", json: job });
      $("#job-chart").hidden = true;
      await watchJob(created.id);
    } catch (error) {
      $("#job").hidden = false;
      $("#job-status").textContent = `The job was refused: ${error.message}`;
    }
  });
}

// ---- duplicates ------------------------------------------------------------------------

const dup = { cursor: null, run: 0, shown: 0 };

// Each item of a pair is read once it comes near the screen, then shown as a search hit is
// (an observer of its own: a new search forgets the results' one).
const pairsNear = loadingObserver();

function pairSide(id) {
  const side = document.createElement("div");
  side.className = "side";
  const name = document.createElement("span");
  name.textContent = id;
  const holder = document.createElement("div");
  holder.className = "holder";
  side.append(holder, name);
  const path = `/v1/collections/${encodeURIComponent(state.collection)}/items/${encodeURIComponent(id)}`;
  loaders.set(holder, () => call(path)
    .then((item) => holder.append(mediaOf({ item })))
    .catch(() => {}));
  pairsNear.observe(holder);
  return side;
}

function showPair(pair) {
  const li = document.createElement("li");
  li.className = "pair";
  li.dataset.a = pair.a;
  li.dataset.b = pair.b;
  const score = document.createElement("span");
  score.className = "score";
  score.textContent = pair.score.toFixed(3);
  li.append(pairSide(pair.a), pairSide(pair.b), score);
  return li;
}

async function findDuplicates(more = false) {
  const run = more ? dup.run : ++dup.run;
  if (!more) {
    dup.cursor = null;
    dup.shown = 0;
    pairsNear.disconnect();
    $("#pairs").replaceChildren();
  }
  $("#more-pairs").hidden = true;
  if (!state.collection) return;
  const params = new URLSearchParams({ threshold: $("#threshold").value, limit: String(PAGE) });
  if (dup.cursor) params.set("cursor", dup.cursor);
  $("#pair-count").textContent = "Looking for duplicates…";
  try {
    const page = await call(`/v1/collections/${encodeURIComponent(state.collection)}/duplicates?${params}`);
    if (run !== dup.run) return;
    $("#pairs").append(...page.pairs.map(showPair));
    dup.shown += page.pairs.length;
    dup.cursor = page.next_cursor;
    $("#more-pairs").hidden = !dup.cursor;
    const n = dup.shown;
    $("#pair-count").textContent = n ? `${n} pair${n === 1 ? "" : "s"}${dup.cursor ? " so far" : ""}, most alike first` : "No duplicates at this threshold.";
  } catch (error) {
    if (run !== dup.run) return;
    $("#pair-count").textContent = `Could not find duplicates: ${error.message}`;
  }
}

function setUpDuplicates() {
  $("#duplicates-form").addEventListener("submit", (event) => {
    event.preventDefault();
    findDuplicates();
  });
  $("#more-pairs").addEventListener("click", () => findDuplicates(true));
}

// ---- sections and start ------------------------------------------------------------------

function setUpTabs() {
  const tabs = [...document.querySelectorAll(".tab")];
  tabs.forEach((tab) => tab.addEventListener("click", () => {
    tabs.forEach((other) => {
      const on = other === tab;
      other.setAttribute("aria-pressed", String(on));
      document.getElementById(other.getAttribute("aria-controls")).hidden = !on;
    });
    if (tab.getAttribute("aria-controls") === "jobs-section") {
      Promise.all([loadVersions(), loadJobs()]).catch((error) => { $("#job-status").textContent = error.message; });
    }
  }));
}

async function start() {
  setUpKey();
  setUpTabs();
  setUpSearch();
  setUpAdding();
  setUpJobs();
  setUpDuplicates();
  $("#collection").addEventListener("change", (event) => {
    state.collection = event.target.value;
    showCollection();
    search();
    if (!$("#jobs-section").hidden) Promise.all([loadVersions(), loadJobs()]).catch(() => {});
    if (!$("#duplicates-section").hidden) findDuplicates();
  });
  try {
    await loadCollections();
  } catch (error) {
    $("#collection-info").textContent = `Could not list the collections: ${error.message}`;
  }
  document.body.dataset.ready = "true";
}

start();
