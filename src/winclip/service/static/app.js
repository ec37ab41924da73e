// winclip inspection station page: vanilla JS, no build step, no network beyond this server.
// The threshold slider relabels and redraws on the client: label = score >= threshold
// (review band kept below it), confidence recomputed with the answer's confidence scale, and
// each answer's picture is `winclip predict`'s composite (winclip.inspection.composite):
// photo | heat | mask, the heat leaving the photo untouched below the threshold and colouring
// the rest with HEAT (= winclip.inspection.render.HEAT_COLORMAP) over (m - t) / (1 - t), from
// the returned grayscale map (pixel = round(255 * map)); the server's regions are shown only at
// the threshold the answer was made at and are marked stale elsewhere. Clicking a picture shows
// the original photo; clicking a history row shows its record.
// With an API key, the page asks for it once (kept in sessionStorage for this tab) and sends
// it as `Authorization: Bearer`; pictures and the CSV are fetched with it (blob URLs).
"use strict";

const $ = (sel) => document.querySelector(sel);
const PAGE = 25;
const KEY_STORE = "winclip-api-key";
// Same stops and blend as winclip.inspection.render.HEAT_COLORMAP / HEAT_ALPHA (a test compares them).
const HEAT = [[0.0, [66, 10, 104]], [0.125, [106, 23, 110]], [0.25, [147, 38, 103]], [0.375, [188, 55, 84]],
              [0.5, [221, 81, 58]], [0.625, [243, 120, 25]], [0.75, [252, 165, 10]], [0.875, [246, 215, 70]],
              [1.0, [252, 255, 164]]];
const HEAT_ALPHA = 0.7;
// The layout of winclip.inspection.composite (panel sizes, margins, text sizes).
const LAYOUT = { min: 256, max: 512, maxWidth: 768, margin: 12, gap: 10, footer: 50, title: 18, text: 13 };
const LABEL_COLOURS = { normal: "#2a8a4a", review: "#c98a00", anomalous: "#c0262d" };

const state = { profiles: [], current: null, results: [], offset: 0, total: 0, names: new Map() };

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
  status.textContent = "connecting…";
  status.classList.remove("hidden");
  for (;;) {
    try {
      const ready = await api("/health/ready");
      status.textContent = `ready · ${ready.backbone} · ${ready.device}`;
      status.className = "status ready";
      if (ready.random_weights) {
        const banner = $("#banner");
        banner.textContent = `RANDOM WEIGHTS: this station's model (${ready.backbone}) has random weights ` +
          "(--pretrained none); every score, label and picture below is meaningless.";
        banner.classList.remove("hidden");
      }
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
  } else {
    $("#profile-info").textContent = "no profile yet: create one below";
  }
}

async function showProfile(name) {
  renderProfile(await api(`/v1/profiles/${encodeURIComponent(name)}`));
  setSlider(state.current.threshold);
  for (const item of state.results) URL.revokeObjectURL(item.url);  // the originals of the cards removed
  state.results = [];
  state.names = new Map();
  $("#results").replaceChildren();
  await refreshHistory();
}

function renderProfile(p) {
  state.current = p;
  $("#profile-info").classList.remove("muted");
  $("#profile-info").innerHTML = [
    `<b>${escapeHtml(p.name)}</b>: ${escapeHtml(p.object_name)} · ${p.shots} reference(s) · ${escapeHtml(p.backbone)}`,
    thresholdText(p.threshold, p.review_threshold) +
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

// "threshold 0.2382 · review from 0.2379": as many digits as it takes to tell the two apart; no review band, or one
// at the threshold itself, is not shown.
function thresholdText(t, review) {
  if (review == null || review >= t) return `threshold ${t.toFixed(4)}`;
  let digits = 4;
  while (digits < 8 && t.toFixed(digits) === review.toFixed(digits)) digits += 1;
  return `threshold ${t.toFixed(digits)} · review from ${review.toFixed(digits)}`;
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

function heatColour(v) {
  const x = Math.min(1, Math.max(0, v));
  for (let i = 1; i < HEAT.length; i++) {
    const [x1, c1] = HEAT[i];
    if (x <= x1) {
      const [x0, c0] = HEAT[i - 1];
      const f = (x - x0) / (x1 - x0);
      return c0.map((c, ch) => Math.round(c + f * (c1[ch] - c)));
    }
  }
  return HEAT[HEAT.length - 1][1];
}

// winclip.inspection.composite.panel_size: a readable size, aspect ratio kept.
function panelSize(width, height) {
  const scale = Math.min(Math.max(LAYOUT.min, Math.min(LAYOUT.max, height)) / height, LAYOUT.maxWidth / width);
  return [Math.max(1, Math.round(width * scale)), Math.max(1, Math.round(height * scale))];
}

// Why an anomalous label has no region (winclip.inspection.decisions.region_note), from the returned map.
function regionNote(label, score, t, peak) {
  if (label !== "anomalous" || peak >= t) return "";
  return `no region above the threshold: the image score reaches it, the map's peak (${peak.toFixed(4)}) does not`;
}

function font(size, weight = "") {
  return `${weight} ${size}px system-ui, sans-serif`.trim();
}

function fit(ctx, text, width) {
  if (ctx.measureText(text).width <= width) return text;
  while (text && ctx.measureText(`${text}...`).width > width) text = text.slice(0, -1);
  return `${text}...`;
}

// The heat's scale from the threshold (left) to 1 (right), the map's peak marked.
function colourBar(ctx, x, y, width, t, peak) {
  for (let i = 0; i < width; i++) {
    ctx.fillStyle = `rgb(${heatColour(i / Math.max(1, width - 1)).join(",")})`;
    ctx.fillRect(x + i, y, 1, 12);
  }
  ctx.strokeStyle = "#66728a";
  ctx.strokeRect(x + 0.5, y + 0.5, width - 1, 12);
  ctx.fillStyle = "#1d2430";
  ctx.font = font(LAYOUT.text);
  ctx.textBaseline = "top";
  ctx.textAlign = "left";
  ctx.fillText(`${t.toFixed(3)} = threshold`, x, y + 15);
  ctx.textAlign = "right";
  ctx.fillText("1.0", x + width, y + 15);
  ctx.textAlign = "left";
  if (peak >= t) {
    const px = x + Math.round((width - 1) * (peak - t) / Math.max(1 - t, 1e-12));
    ctx.beginPath(); ctx.moveTo(px, y - 1); ctx.lineTo(px - 5, y - 8); ctx.lineTo(px + 5, y - 8); ctx.fill();
  }
  ctx.fillStyle = "#66728a";
  const text = peak >= t ? `heat over the photo; map peak ${peak.toFixed(3)} (marked)` : `map peak ${peak.toFixed(3)} < threshold: nothing coloured`;
  ctx.fillText(fit(ctx, text, width), x, y + 31);
}

// The composite of one answer at threshold t: photo | heat | mask, label, score, threshold and a colour bar.
function drawComposite(item, t, label) {
  const { canvas, result, pw, ph, photo, map } = item;
  const { margin: M, gap: G, title: TS, text: XS } = LAYOUT;
  const note = regionNote(label, result.score, t, item.peak);
  const header = TS + 10 + (note ? XS + 6 : 0);
  canvas.width = 2 * M + 3 * pw + 2 * G;
  canvas.height = M + header + ph + G + LAYOUT.footer + M;
  const ctx = canvas.getContext("2d");
  ctx.fillStyle = "#fff";
  ctx.fillRect(0, 0, canvas.width, canvas.height);
  ctx.textBaseline = "top";
  ctx.font = font(TS, "600");
  const chip = ` ${label.toUpperCase()} `;
  const chipW = Math.round(ctx.measureText(chip).width);
  ctx.fillStyle = LABEL_COLOURS[label];
  ctx.fillRect(M, M, chipW, TS + 4);
  ctx.fillStyle = "#fff";
  ctx.fillText(chip, M, M + 2);
  let verdict = `score ${result.score.toFixed(4)} ${result.score >= t ? "≥" : "<"} threshold ${t.toFixed(4)}`;
  if (result.review_threshold != null && result.review_threshold < t) verdict += `  (review from ${result.review_threshold.toFixed(4)})`;
  ctx.font = font(TS);
  ctx.fillStyle = "#1d2430";
  ctx.fillText(fit(ctx, verdict, canvas.width - 2 * M - chipW - 10), M + chipW + 10, M + 2);
  if (note) {
    ctx.font = font(XS);
    ctx.fillStyle = "#b02a2a";
    ctx.fillText(fit(ctx, note, canvas.width - 2 * M), M, M + TS + 10);
  }
  const top = M + header;
  const [x0, x1, x2] = [0, 1, 2].map((i) => M + i * (pw + G));
  const heat = new ImageData(pw, ph);
  const mask = new ImageData(pw, ph);
  for (let i = 0; i < heat.data.length; i += 4) {
    const m = map[i] / 255;
    const above = m >= t;
    const c = above ? heatColour((m - t) / Math.max(1 - t, 1e-12)) : null;
    for (let ch = 0; ch < 3; ch++) {
      heat.data[i + ch] = above ? Math.round((1 - HEAT_ALPHA) * photo[i + ch] + HEAT_ALPHA * c[ch]) : photo[i + ch];
      mask.data[i + ch] = above ? 255 : 0;
    }
    heat.data[i + 3] = mask.data[i + 3] = 255;
  }
  ctx.putImageData(new ImageData(photo, pw, ph), x0, top);
  ctx.putImageData(heat, x1, top);
  ctx.putImageData(mask, x2, top);
  if (Math.abs(t - result.threshold) < 5e-4) {  // the server's regions, at the threshold they were found at
    ctx.strokeStyle = "#fff";
    ctx.lineWidth = 2;
    const sx = pw / result.width, sy = ph / result.height;
    for (const r of result.regions) ctx.strokeRect(x1 + r.x * sx, top + r.y * sy, r.width * sx - 1, r.height * sy - 1);
  }
  const below = top + ph + G;
  ctx.font = font(XS);
  ctx.fillStyle = "#66728a";
  ctx.fillText(fit(ctx, `photo, ${result.width}x${result.height} px`, pw), x0, below);
  ctx.fillText(fit(ctx, item.name, pw), x0, below + 17);
  colourBar(ctx, x1, below + 2, pw, t, item.peak);
  ctx.fillStyle = "#66728a";
  ctx.font = font(XS);
  const stale = Math.abs(t - result.threshold) >= 5e-4 ? " (stale)" : "";
  ctx.fillText(fit(ctx, `mask: map ≥ threshold, ${result.regions.length} region(s)${stale}`, pw), x2, below);
  return note;
}

// The legend: the heat scale from the threshold to 1, and what below the threshold looks like.
function drawLegend() {
  const canvas = $("#legend");
  const ctx = canvas.getContext("2d");
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  ctx.fillStyle = "#9aa8bf";
  ctx.fillRect(0, 4, 90, 14);
  ctx.fillStyle = "#1d2430";
  ctx.font = font(12);
  ctx.textBaseline = "top";
  ctx.fillText("below: photo", 0, 24);
  const x = 100, width = canvas.width - x - 4;
  for (let i = 0; i < width; i++) {
    ctx.fillStyle = `rgb(${heatColour(i / (width - 1)).join(",")})`;
    ctx.fillRect(x + i, 4, 1, 14);
  }
  ctx.fillStyle = "#1d2430";
  ctx.fillText("threshold", x, 24);
  ctx.textAlign = "right";
  ctx.fillText("map value 1", x + width, 24);
  ctx.textAlign = "left";
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
    item.note.textContent = drawComposite(item, t, label);
  }
  drawHistograms();
}

function setSlider(t) {
  $("#threshold").value = t;
  relabel();
}

// An image's RGBA pixels drawn at width x height (resampled by the browser, smoothing on).
function pixels(img, width, height) {
  const c = document.createElement("canvas");
  c.width = width; c.height = height;
  const ctx = c.getContext("2d");
  ctx.imageSmoothingQuality = "high";
  ctx.drawImage(img, 0, 0, width, height);
  return ctx.getImageData(0, 0, width, height).data;
}

// Same-named files (two 000.png from two folders) told apart: the second is "000.png (2)".
function uniqueName(name) {
  const n = (state.names.get(name) || 0) + 1;
  state.names.set(name, n);
  return n === 1 ? name : `${name} (${n})`;
}

function showPhoto(item) {
  $("#photo-full").src = item.url;
  $("#photo-name").textContent = `${item.name} (${item.result.width}x${item.result.height}, sha256 ${item.result.sha256.slice(0, 12)})`;
  $("#photo-dialog").showModal();
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
  const url = URL.createObjectURL(file);  // kept for the original photo (revoked when the cards are cleared)
  const [photoImg, mapImg] = await Promise.all([loadImage(url), loadImage(`data:image/png;base64,${result.map}`)]);
  const card = document.createElement("div");
  card.className = "card";
  const canvas = document.createElement("canvas");
  canvas.title = "click: the original photo";
  const name = document.createElement("div");
  const shown = uniqueName(result.filename);
  name.className = "name"; name.textContent = shown; name.title = `${result.filename} · sha256 ${result.sha256}`;
  const label = document.createElement("span");
  const verdict = document.createElement("div");
  const confidence = document.createElement("div");
  confidence.className = "small muted confidence";
  const regions = document.createElement("div");
  regions.className = "small muted regions";
  const note = document.createElement("div");
  note.className = "small note";
  card.append(canvas, name, label, verdict, confidence, regions, note);
  $("#results").prepend(card);
  // The photo as decoded by the browser, at the size the server decoded (EXIF orientation applied by both),
  // then at the composite's panel size; the map likewise; its peak from the full-size map.
  const [pw, ph] = panelSize(result.width, result.height);
  const full = pixels(mapImg, result.width, result.height);
  let peak = 0;
  for (let i = 0; i < full.length; i += 4) peak = Math.max(peak, full[i]);
  const item = {
    result, canvas, url, name: shown, pw, ph, peak: peak / 255, label, verdict, confidence, regions, note,
    photo: pixels(photoImg, pw, ph), map: pixels(mapImg, pw, ph),
  };
  canvas.addEventListener("click", () => showPhoto(item));
  state.results.push(item);
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
    tr.tabIndex = 0;
    tr.title = "open the record";
    tr.addEventListener("click", () => showRecord(r));
    tr.addEventListener("keydown", (e) => { if (e.key === "Enter") showRecord(r); });
    return tr;
  }));
  $("#page-info").textContent = page.total ? `${state.offset + 1}–${state.offset + page.items.length} of ${page.total}` : "no inspections";
  if (state.current) {
    const recent = await api(`/v1/inspections?profile=${encodeURIComponent(state.current.name)}&limit=500`);
    state.recent = recent.items.map((r) => r.score);
  }
  drawHistograms();
}

// A history row's whole record, as the API returned it.
function showRecord(r) {
  const fields = Object.entries(r).map(([key, value]) => {
    const dt = document.createElement("dt");
    dt.textContent = key;
    const dd = document.createElement("dd");
    dd.textContent = value === null ? "—" : typeof value === "object" ? JSON.stringify(value) : String(value);
    return [dt, dd];
  });
  $("#record-fields").replaceChildren(...fields.flat());
  $("#record-dialog").showModal();
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
  drawLegend();
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
