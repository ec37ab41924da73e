// winclip inspection station page: vanilla JS, no build step, no network beyond this server.
// The threshold slider relabels and recolours on the client: label = score >= threshold
// (review band kept below it), confidence recomputed with the answer's confidence scale,
// overlay = photo blended with the threshold-anchored colour scale of `winclip predict`
// applied to the returned grayscale map (pixel = round(255 * map)); the server's regions are
// shown only at the threshold the answer was made at and are marked stale elsewhere.
// With an API key, the page asks for it once (kept in sessionStorage for this tab) and sends
// it as `Authorization: Bearer`; pictures and the CSV are fetched with it (blob URLs).
"use strict";

const $ = (sel) => document.querySelector(sel);
const PAGE = 25;
const KEY_STORE = "winclip-api-key";
// Same stops and blend as winclip.inspection.render.COLORMAP / OVERLAY_ALPHA.
const COLORMAP = [[0.0, [20, 30, 140]], [0.3, [30, 110, 230]], [0.45, [90, 200, 220]],
                  [0.5, [255, 230, 0]], [0.75, [255, 120, 0]], [1.0, [200, 0, 0]]];
const ALPHA = 0.5;

const state = { profiles: [], current: null, results: [], offset: 0, total: 0 };

// -- the API key ---------------------------------------------------------------------------

let keyWaiters = [];

function askKey(reason) {
  const form = $("#key-form");
  form.classList.remove("hidden");
  $("#key-msg").textContent = reason;
  $("#key-input").focus();
  return new Promise((resolve) => keyWaiters.push(resolve));
}

function submitKey(event) {
  event.preventDefault();
  const key = $("#key-input").value.trim();
  if (!key) return;
  sessionStorage.setItem(KEY_STORE, key);
  $("#key-input").value = "";
  $("#key-form").classList.add("hidden");
  const waiting = keyWaiters;
  keyWaiters = [];
  waiting.forEach((resolve) => resolve());
}

async function authorized(path, options = {}) {
  for (;;) {
    const key = sessionStorage.getItem(KEY_STORE);
    const headers = new Headers(options.headers || {});
    if (key) headers.set("Authorization", `Bearer ${key}`);
    const response = await fetch(path, { ...options, headers });
    if (response.status !== 401) return response;
    sessionStorage.removeItem(KEY_STORE);
    await askKey(key ? "that key was refused; enter the API key" : "this station needs its API key");
  }
}

async function api(path, options) {
  const response = await authorized(path, options);
  const body = response.headers.get("content-type")?.includes("json") ? await response.json() : null;
  if (!response.ok) throw new Error((body && body.detail) || `${response.status} ${response.statusText}`);
  return body;
}

async function blobUrl(path) {
  const response = await authorized(path);
  if (!response.ok) throw new Error(`${response.status} ${response.statusText}`);
  return URL.createObjectURL(await response.blob());
}

function message(el, text, error) {
  el.textContent = text;
  el.classList.toggle("error", !!error);
}

// -- status and profiles -----------------------------------------------------------------

async function waitReady() {
  const status = $("#status");
  for (;;) {
    try {
      const ready = await api("/health/ready");
      status.textContent = `ready · ${ready.backbone} · ${ready.device}`;
      status.className = "status ready";
      return ready;
    } catch (err) {
      status.textContent = err.message.slice(0, 80);
      status.className = "status down";
      await new Promise((r) => setTimeout(r, 1000));
    }
  }
}

async function loadProfiles(select) {
  const data = await api("/v1/profiles");
  state.profiles = data.profiles;
  const sel = $("#profile-select");
  sel.replaceChildren(...state.profiles.map((p) => new Option(`${p.name} (${p.object_name})`, p.name)));
  const name = select || state.current?.name || state.profiles[0]?.name;
  if (name) {
    sel.value = name;
    await showProfile(name);
  }
}

async function showProfile(name) {
  renderProfile(await api(`/v1/profiles/${encodeURIComponent(name)}`));
  setSlider(state.current.threshold);
  state.results = [];
  $("#results").replaceChildren();
  await refreshHistory();
}

function renderProfile(p) {
  state.current = p;
  $("#profile-info").classList.remove("muted");
  $("#profile-info").innerHTML = [
    `<b>${escapeHtml(p.name)}</b>: ${escapeHtml(p.object_name)} · ${p.shots} reference(s) · ${escapeHtml(p.backbone)}`,
    `threshold ${p.threshold.toFixed(4)}` + (p.review_threshold != null ? ` · review from ${p.review_threshold.toFixed(4)}` : "") +
      (p.calibration ? ` · calibrated at FPR ${p.calibration.target_fpr}` : " · not calibrated") + (p.roi ? " · ROI" : ""),
  ].join("<br>");
  $("#refs").replaceChildren(...p.references.map((r) => {
    const title = `${r.name} sha256:${r.sha256.slice(0, 12)}`;
    if (!r.url) return placeholder(title, "photo not stored");
    const img = document.createElement("img");
    img.title = title;
    img.alt = r.name;
    img.onload = () => URL.revokeObjectURL(img.src);  // decoded: the blob is no longer needed
    blobUrl(r.url).then((url) => { img.src = url; })
      .catch(() => img.replaceWith(placeholder(title, "photo unavailable")));
    return img;
  }));
}

// A reference the service did not store (profiles made with `winclip profile create`): its name, no picture.
function placeholder(title, text) {
  const box = document.createElement("div");
  box.className = "placeholder";
  box.title = title;
  box.textContent = text;
  return box;
}

// -- histograms --------------------------------------------------------------------------

function drawHistogram(canvas, series, lines) {
  const ctx = canvas.getContext("2d");
  const W = canvas.width, H = canvas.height, pad = 18, bins = 30;
  ctx.clearRect(0, 0, W, H);
  const all = series.flatMap((s) => s.values).concat(lines.map((l) => l.value));
  if (!series.some((s) => s.values.length)) {
    ctx.fillStyle = "#66728a";
    ctx.fillText("no scores yet", W / 2 - 30, H / 2);
    return;
  }
  let lo = Math.min(...all), hi = Math.max(...all);
  if (hi - lo < 1e-6) { lo -= 0.01; hi += 0.01; }
  const counts = series.map((s) => {
    const c = new Array(bins).fill(0);
    for (const v of s.values) c[Math.min(bins - 1, Math.floor((v - lo) / (hi - lo) * bins))] += 1;
    return c;
  });
  const peak = Math.max(1, ...counts.flat());
  const bw = (W - 2 * pad) / bins;
  counts.forEach((c, k) => {
    ctx.fillStyle = series[k].color;
    c.forEach((n, i) => {
      const h = (H - 2 * pad) * n / peak;
      ctx.fillRect(pad + i * bw + 1, H - pad - h, bw - 2, h);
    });
  });
  ctx.fillStyle = "#333";
  ctx.font = "11px sans-serif";
  ctx.fillText(lo.toFixed(3), pad, H - 4);
  ctx.fillText(hi.toFixed(3), W - pad - 30, H - 4);
  for (const l of lines) {
    const x = pad + (l.value - lo) / (hi - lo) * (W - 2 * pad);
    ctx.strokeStyle = l.color;
    ctx.lineWidth = 2;
    ctx.beginPath(); ctx.moveTo(x, 4); ctx.lineTo(x, H - pad); ctx.stroke();
    ctx.fillStyle = l.color;
    ctx.fillText(`${l.name} ${l.value.toFixed(3)}`, Math.min(x + 3, W - 95), 14);
  }
}

function drawHistograms() {
  const p = state.current;
  if (!p) return;
  const t = Number($("#threshold").value);
  const recent = state.recent || [];
  if (p.calibration) {
    drawHistogram($("#cal-hist"), [{ values: p.calibration.good, color: "rgba(40,110,220,.75)" },
                                   { values: p.calibration.bad, color: "rgba(200,30,30,.6)" }],
                  [{ name: "threshold", value: p.threshold, color: "#111" }]);
    $("#cal-caption").textContent = `calibration: ${p.calibration.good.length} good (blue), ${p.calibration.bad.length} bad (red)`;
  } else {
    drawHistogram($("#cal-hist"), [{ values: recent, color: "rgba(90,90,120,.7)" }],
                  [{ name: "threshold", value: p.threshold, color: "#111" }]);
    $("#cal-caption").textContent = "not calibrated: scores of the recent inspections";
  }
  drawHistogram($("#hist"), [{ values: recent, color: "rgba(90,90,120,.7)" }], [{ name: "slider", value: t, color: "#c0262d" }]);
}

// -- inspection --------------------------------------------------------------------------

function labelOf(score, t, review) {
  if (score >= t) return "anomalous";
  if (review != null && review < t && score >= review) return "review";
  return "normal";
}

function colour(v) {
  for (let i = 1; i < COLORMAP.length; i++) {
    const [x1, c1] = COLORMAP[i];
    if (v <= x1) {
      const [x0, c0] = COLORMAP[i - 1];
      const f = (v - x0) / (x1 - x0);
      return c0.map((c, ch) => c + f * (c1[ch] - c));
    }
  }
  return COLORMAP[COLORMAP.length - 1][1];
}

function recolour(item, t) {
  const { canvas, photo, map } = item;
  const ctx = canvas.getContext("2d");
  const out = ctx.createImageData(canvas.width, canvas.height);
  const table = new Array(256);
  for (let m = 0; m < 256; m++) {
    const x = m / 255;
    const v = x < t ? 0.5 * x / t : 0.5 + 0.5 * (x - t) / Math.max(1 - t, 1e-12);
    table[m] = colour(Math.min(1, Math.max(0, v)));
  }
  for (let i = 0; i < out.data.length; i += 4) {
    const c = table[map[i]];
    for (let ch = 0; ch < 3; ch++) out.data[i + ch] = Math.round((1 - ALPHA) * photo[i + ch] + ALPHA * c[ch]);
    out.data[i + 3] = 255;
  }
  ctx.putImageData(out, 0, 0);
  if (Math.abs(t - item.result.threshold) < 5e-4) {
    ctx.strokeStyle = "#fff";
    ctx.lineWidth = Math.max(1, Math.round(Math.min(canvas.width, canvas.height) / 200));
    for (const r of item.result.regions) ctx.strokeRect(r.x + 0.5, r.y + 0.5, r.width - 1, r.height - 1);
  }
}

// Same as winclip.inspection.decisions.confidence: 0.5 at the threshold, the answer's own scale.
function confidenceOf(score, t, scale) {
  return 1 / (1 + Math.exp(-(score - t) / scale));
}

function regionText(r, t) {
  const at = r.threshold.toFixed(3);
  if (Math.abs(t - r.threshold) >= 5e-4) {
    return `${r.regions.length} region(s) at ${at}: stale at ${t.toFixed(3)} (save the threshold and inspect again)`;
  }
  return `${r.regions.length} region(s)` +
    r.regions.slice(0, 3).map((g) => ` · (${g.x},${g.y}) ${g.width}×${g.height} peak ${g.peak.toFixed(3)}`).join("");
}

function relabel() {
  const t = Number($("#threshold").value);
  $("#threshold-value").textContent = t.toFixed(3);
  for (const item of state.results) {
    const r = item.result;
    const label = labelOf(r.score, t, r.review_threshold);
    item.label.textContent = label;
    item.label.className = `label ${label}`;
    item.verdict.textContent = `score ${r.score.toFixed(4)} ${r.score >= t ? "≥" : "<"} ${t.toFixed(3)}`;
    item.confidence.textContent = `confidence ${confidenceOf(r.score, t, r.confidence_scale).toFixed(3)}`;
    item.regions.textContent = regionText(r, t);
    item.regions.classList.toggle("stale", Math.abs(t - r.threshold) >= 5e-4);
    recolour(item, t);
  }
  drawHistograms();
}

function setSlider(t) {
  $("#threshold").value = t;
  relabel();
}

function pixels(img) {
  const c = document.createElement("canvas");
  c.width = img.naturalWidth; c.height = img.naturalHeight;
  const ctx = c.getContext("2d");
  ctx.drawImage(img, 0, 0);
  return ctx.getImageData(0, 0, c.width, c.height).data;
}

function loadImage(src) {
  return new Promise((resolve, reject) => {
    const img = new Image();
    img.onload = () => resolve(img);
    img.onerror = () => reject(new Error("the browser cannot show this image"));
    img.src = src;
  });
}

async function inspect(files) {
  const p = state.current;
  const msg = $("#inspect-msg");
  if (!p) { message(msg, "create or pick a profile first", true); return; }
  message(msg, `inspecting ${files.length} image(s)…`);
  const started = performance.now();
  let failed = 0;
  for (const file of files) {   // one request per image: a bad file fails alone
    const form = new FormData();
    form.append("images", file, file.name);
    try {
      const data = await api(`/v1/profiles/${encodeURIComponent(p.name)}/predict?include=map`, { method: "POST", body: form });
      await addCard(file, data.results[0]);
    } catch (err) {
      failed += 1;
      const card = document.createElement("div");
      card.className = "card error";
      card.textContent = err.message;
      $("#results").prepend(card);
    }
  }
  const seconds = ((performance.now() - started) / 1000).toFixed(2);
  await refreshHistory();
  message(msg, `${files.length - failed} inspected, ${failed} refused in ${seconds} s`, failed > 0);
}

async function addCard(file, result) {
  const url = URL.createObjectURL(file);
  const [photoImg, mapImg] = await Promise.all([loadImage(url), loadImage(`data:image/png;base64,${result.map}`)]);
  const card = document.createElement("div");
  card.className = "card";
  const canvas = document.createElement("canvas");
  canvas.width = result.width; canvas.height = result.height;
  const name = document.createElement("div");
  name.className = "name"; name.textContent = result.filename; name.title = `sha256 ${result.sha256}`;
  const label = document.createElement("span");
  const verdict = document.createElement("div");
  const confidence = document.createElement("div");
  confidence.className = "small muted confidence";
  const regions = document.createElement("div");
  regions.className = "small muted regions";
  card.append(canvas, name, label, verdict, confidence, regions);
  $("#results").prepend(card);
  // The photo as decoded by the browser, at the size the server decoded (EXIF orientation applied by both).
  const photoCanvas = document.createElement("canvas");
  photoCanvas.width = result.width; photoCanvas.height = result.height;
  photoCanvas.getContext("2d").drawImage(photoImg, 0, 0, result.width, result.height);
  const photo = photoCanvas.getContext("2d").getImageData(0, 0, result.width, result.height).data;
  state.results.push({ result, canvas, photo, map: pixels(mapImg), label, verdict, confidence, regions });
  URL.revokeObjectURL(url);
  relabel();
}

async function saveThreshold() {
  const p = state.current;
  const msg = $("#threshold-msg");
  if (!p) return;
  const t = Number($("#threshold").value);
  const review = p.review_threshold != null && p.review_threshold <= t ? p.review_threshold : null;
  try {
    // If-Match: the revision shown; another replica or tab may have changed the profile since (412).
    const response = await authorized(`/v1/profiles/${encodeURIComponent(p.name)}`, {
      method: "PATCH", headers: { "content-type": "application/json", "If-Match": `"${p.revision}"` },
      body: JSON.stringify({ threshold: t, review_threshold: review }),
    });
    const body = await response.json();
    if (response.status === 412) {
      renderProfile(await api(`/v1/profiles/${encodeURIComponent(p.name)}`));
      message(msg, `not saved: ${p.name} was changed elsewhere meanwhile; its current thresholds are shown, save again`, true);
      return;
    }
    if (!response.ok) throw new Error(body.detail || `${response.status} ${response.statusText}`);
    renderProfile(body);
    message(msg, `saved: ${p.name} now uses ${t.toFixed(3)} (revision ${body.revision})`);
    drawHistograms();
  } catch (err) {
    message(msg, err.message, true);
  }
}

// -- creating a profile ------------------------------------------------------------------

function lines(text) {
  return text.split("\n").map((s) => s.trim()).filter(Boolean);
}

async function createProfile(event) {
  event.preventDefault();
  const msg = $("#create-msg");
  const form = new FormData();
  form.append("name", $("#new-name").value.trim());
  form.append("object", $("#new-object").value.trim());
  for (const f of $("#new-good").files) form.append("good", f, f.name);
  for (const s of lines($("#new-normal").value)) form.append("normal_states", s);
  for (const s of lines($("#new-anomalous").value)) form.append("anomalous_states", s);
  const roi = $("#new-roi").files[0];
  if (roi) form.append("roi", roi, roi.name);
  message(msg, "encoding the references…");
  $("#create").disabled = true;
  try {
    const p = await api("/v1/profiles", { method: "POST", body: form });
    await loadProfiles(p.name);
    message(msg, `created ${p.name} (${p.shots} reference(s))`);
  } catch (err) {
    message(msg, err.message, true);
  } finally {
    $("#create").disabled = false;
  }
}

function previewGood() {
  $("#new-good-thumbs").replaceChildren(...[...$("#new-good").files].map((f) => {
    const img = document.createElement("img");
    img.onload = () => URL.revokeObjectURL(img.src);
    img.src = URL.createObjectURL(f);
    img.title = f.name;
    return img;
  }));
}

// -- history -----------------------------------------------------------------------------

function historyQuery() {
  const q = new URLSearchParams();
  if (!$("#f-all").checked && state.current) q.set("profile", state.current.name);
  if ($("#f-label").value) q.set("label", $("#f-label").value);
  for (const [id, key] of [["#f-since", "since"], ["#f-until", "until"]]) {
    if ($(id).value) q.set(key, new Date($(id).value).toISOString());
  }
  return q;
}

async function downloadCsv(event) {
  event.preventDefault();
  const link = document.createElement("a");
  link.href = await blobUrl(`/v1/inspections.csv?${historyQuery()}`);
  link.download = "inspections.csv";
  link.click();
  setTimeout(() => URL.revokeObjectURL(link.href), 10_000);
}

async function refreshHistory() {
  const q = historyQuery();
  q.set("limit", PAGE);
  q.set("offset", state.offset);
  const page = await api(`/v1/inspections?${q}`);
  state.total = page.total;
  $("#history tbody").replaceChildren(...page.items.map((r) => {
    const tr = document.createElement("tr");
    const cells = [r.time.replace("T", " ").slice(0, 23), r.profile, r.filename, r.score.toFixed(4), r.threshold.toFixed(4),
                   r.label, String(r.regions.length), r.latency_ms.toFixed(0)];
    cells.forEach((text, i) => {
      const td = document.createElement("td");
      td.textContent = text;
      if (i >= 3 && i !== 5) td.className = "num";
      if (i === 5) td.innerHTML = `<span class="label ${escapeHtml(r.label)}">${escapeHtml(r.label)}</span>`;
      tr.append(td);
    });
    return tr;
  }));
  $("#page-info").textContent = page.total ? `${state.offset + 1}–${state.offset + page.items.length} of ${page.total}` : "no inspections";
  if (state.current) {
    const recent = await api(`/v1/inspections?profile=${encodeURIComponent(state.current.name)}&limit=500`);
    state.recent = recent.items.map((r) => r.score);
  }
  drawHistograms();
}

// -- wiring ------------------------------------------------------------------------------

function escapeHtml(s) {
  return String(s).replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);
}

function dropZone(input, onFiles) {
  const zone = input.closest(".drop");
  zone.addEventListener("dragover", (e) => { e.preventDefault(); zone.classList.add("over"); });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", (e) => {
    e.preventDefault();
    zone.classList.remove("over");
    input.files = e.dataTransfer.files;
    onFiles([...input.files]);
  });
  input.addEventListener("change", () => onFiles([...input.files]));
}

async function main() {
  $("#key-form").addEventListener("submit", submitKey);
  $("#csv").addEventListener("click", downloadCsv);
  await waitReady();
  dropZone($("#inspect-files"), (files) => inspect(files));
  dropZone($("#new-good"), previewGood);
  $("#create-form").addEventListener("submit", createProfile);
  $("#threshold").addEventListener("input", relabel);
  $("#save-threshold").addEventListener("click", saveThreshold);
  $("#profile-select").addEventListener("change", (e) => { state.offset = 0; showProfile(e.target.value); });
  $("#filters").addEventListener("submit", (e) => { e.preventDefault(); state.offset = 0; refreshHistory(); });
  $("#prev").addEventListener("click", () => { state.offset = Math.max(0, state.offset - PAGE); refreshHistory(); });
  $("#next").addEventListener("click", () => { if (state.offset + PAGE < state.total) { state.offset += PAGE; refreshHistory(); } });
  await loadProfiles();
  if (!state.profiles.length) $("#create-box").open = true;
  await refreshHistory();
  document.body.dataset.ready = "1";
}

main();
