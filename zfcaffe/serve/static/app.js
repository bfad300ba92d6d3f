// zfcaffe serve: the page. State lives in the URL hash (a permalink for every view):
// #image=ID&layer=NAME&c=MAP&y=ROW&x=COL[&det=K | &px=X&py=Y] (a detection's or a class pixel's view)
"use strict";
const $ = (id) => document.getElementById(id);
let model = null;
const state = { image: "0", layer: null, c: null, y: null, x: null, det: null, px: null, py: null };
const SVG = "http://www.w3.org/2000/svg";
let dense = null;         // the shown image's detections, class map or keypoints
let maps = null;          // the shown layer's atlas geometry and statistics
let generation = 0;       // answers to older views are dropped

function status(text, error) { $("status").textContent = text; $("status").className = error ? "error" : ""; }

async function getJSON(url) {
  for (let attempt = 0; ; attempt++) {
    const r = await fetch(url);
    if (r.status === 503 && attempt < 5) { await new Promise((f) => setTimeout(f, 300 * (attempt + 1))); continue; }
    const body = await r.json();
    if (!r.ok) throw new Error(body.error || r.statusText);
    return [r.status, body];
  }
}

function query(extra) {
  const p = new URLSearchParams({ image: state.image, layer: state.layer, ...extra });
  return p.toString();
}

function writeHash() {
  const p = new URLSearchParams({ image: state.image, layer: state.layer, c: state.c ?? 0 });
  if (state.y !== null) { p.set("y", state.y); p.set("x", state.x); }
  if (state.det !== null) p.set("det", state.det);
  if (state.px !== null) { p.set("px", state.px); p.set("py", state.py); }
  history.replaceState(null, "", "#" + p.toString());
}

function readHash() {
  const p = new URLSearchParams(location.hash.slice(1));
  if (p.has("image") && model.images.some((i) => i.id === p.get("image"))) state.image = p.get("image");
  if (p.has("layer") && model.layers.some((l) => l.name === p.get("layer"))) state.layer = p.get("layer");
  state.c = p.has("c") ? parseInt(p.get("c"), 10) || 0 : null;
  state.y = p.has("y") ? parseInt(p.get("y"), 10) : null;
  state.x = p.has("x") ? parseInt(p.get("x"), 10) : null;
  state.det = p.has("det") ? parseInt(p.get("det"), 10) : null;
  state.px = p.has("px") ? parseInt(p.get("px"), 10) : null;
  state.py = p.has("py") ? parseInt(p.get("py"), 10) : null;
}

function layerInfo() { return model.layers.find((l) => l.name === state.layer); }

function fillImages() {
  $("image-select").replaceChildren(...model.images.map((i) => new Option(i.name, i.id)));
  $("image-select").value = state.image;
}

async function start() {
  [, model] = await getJSON("/api/model");
  $("title").textContent = "zfcaffe · " + model.name;
  $("files").textContent = model.prototxt + " + " + model.weights;
  $("pipeline").textContent = "preprocessing: " + model.preprocessing + ". " + model.head + ".";
  fillImages();
  $("layer-select").replaceChildren(...model.layers.map((l) =>
    new Option(`${l.name}  ${l.type}  ${l.shape.join("×")}`, l.name)));
  state.layer = model.layers[Math.max(0, model.layers.findIndex((l) => l.type === "Convolution"))].name;
  readHash();
  await showImage();
}

async function showImage() {
  $("image-select").value = state.image;
  $("input-image").src = "/api/input.png?" + new URLSearchParams({ image: state.image });
  const shown = state.image;
  getJSON("/api/scores?" + new URLSearchParams({ image: state.image })).then(([, s]) => {
    if (shown !== state.image) return;
    if (s.kind === "classes") {
      const rows = s.top.map((t) => `<tr><td>${escapeHtml(t.name)}</td><td class="p">${t.p.toFixed(3)}</td>` +
        `<td><span class="bar" style="width:${Math.round(t.p * 80)}px"></span></td></tr>`);
      $("scores").innerHTML = `<table>${rows.join("")}</table><p class="small">${escapeHtml(s.source)}</p>`;
    } else {
      $("scores").innerHTML = s.outputs.map((o) => `${escapeHtml(o.name)} ${o.shape.join("×")}: mean ${o.mean.toPrecision(4)}`).join("<br>");
    }
  }).catch((e) => status(e.message, true));
  if (model.dense) showDense(shown).catch((e) => status(e.message, true));
  await showLayer();
}

// -- detections (clickable boxes), class maps (clickable pixels), keypoints ------------------------------
function svgEl(tag, attrs) {
  const el = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, v);
  return el;
}

async function showDense(shown) {
  const [, d] = await getJSON("/api/detections?" + new URLSearchParams({ image: shown }));
  if (shown !== state.image) return;
  dense = d;
  const svg = $("overlay");
  svg.setAttribute("viewBox", `0 0 ${d.width} ${d.height}`);
  svg.setAttribute("preserveAspectRatio", "none");
  svg.hidden = false;
  $("dense-panel").hidden = false;
  $("dense-overlay").hidden = !d.overlay;
  if (d.overlay) $("dense-overlay").src = d.overlay;
  const items = [];
  if (d.kind === "detector") {
    $("dense-title").textContent = `Detections (score ≥ ${d.threshold})` +
      (d.found > d.detections.length ? `: the best ${d.detections.length} of ${d.found}` : "");
    svg.classList.remove("clickable");
    svg.replaceChildren(...d.detections.map((b) => {
      const g = svgEl("g", { class: "det", "data-k": b.index });
      const r = svgEl("rect", { x: b.box[0], y: b.box[1], width: Math.max(1, b.box[2] - b.box[0]),
                                height: Math.max(1, b.box[3] - b.box[1]), stroke: b.colour, fill: b.colour,
                                "data-k": b.index, class: "box" });
      const title = svgEl("title", {}); title.textContent = `#${b.index} ${b.name} ${b.score.toFixed(3)}`;
      r.append(title);
      r.addEventListener("click", (ev) => { ev.stopPropagation(); selectDetection(b.index); });
      const t = svgEl("text", { x: b.box[0] + 2, y: Math.max(10, b.box[1] - 3), fill: b.colour,
                                transform: "" });
      t.textContent = `#${b.index} ${b.name} ${b.score.toFixed(2)}`;
      g.append(r, t);
      return g;
    }));
    fixTextScale();
    d.detections.forEach((b) => {
      const btn = document.createElement("button");
      btn.type = "button"; btn.dataset.k = b.index; btn.style.borderColor = b.colour;
      btn.textContent = `#${b.index} ${b.name} ${b.score.toFixed(3)}`;
      btn.title = b.unit;
      btn.addEventListener("click", () => selectDetection(b.index));
      items.push(btn);
    });
    $("dense-list").replaceChildren(...items);
    $("dense-info").textContent = d.detections.length ? "click a box (or a button) for its unit, projections and Grad-CAM"
      : "no detection at this threshold (serve --threshold P to lower it)";
    const k = state.det !== null ? state.det : (d.detections.length ? d.detections[0].index : null);
    if (k !== null && d.detections.some((b) => b.index === k)) await selectDetection(k);
  } else if (d.kind === "segmentation") {
    $("dense-title").textContent = "Class map";
    svg.classList.add("clickable");
    svg.replaceChildren();
    $("dense-list").innerHTML = d.classes.slice(0, 20).map((c) =>
      `<span style="display:inline-block;margin-right:8px"><span style="display:inline-block;width:12px;height:12px;background:${c.colour}"></span> ${escapeHtml(c.name)} ${(100 * c.share).toFixed(1)}%</span>`).join("");
    $("dense-info").textContent = "click a pixel of the image for its class's Grad-CAM and projections";
    if (state.px !== null) await selectPixel(state.px, state.py);
  } else {
    $("dense-title").textContent = "Keypoints";
    svg.classList.remove("clickable");
    const shownPeaks = d.peaks.slice(0, 200);
    svg.replaceChildren(...shownPeaks.map((p, i) => {
      const c = svgEl("circle", { cx: p.x, cy: p.y, r: Math.max(2, d.width / 100), fill: "#ff3b30", stroke: "#fff",
                                  class: "peak", "data-k": i });
      const title = svgEl("title", {}); title.textContent = `${p.name} ${p.value.toFixed(3)}`; c.append(title);
      c.addEventListener("click", (ev) => { ev.stopPropagation(); selectPeak(i).catch((e) => status(e.message, true)); });
      return c;
    }));
    $("dense-list").textContent = shownPeaks.map((p) => `${p.name} (${Math.round(p.x)}, ${Math.round(p.y)}) ${p.value.toFixed(2)}`).join(" · ");
    $("dense-info").textContent = `heatmap peaks ≥ ${d.threshold}` +
      (d.peaks.length > shownPeaks.length ? ` (the first ${shownPeaks.length} of ${d.peaks.length})` : "") +
      "; click a peak for its Grad-CAM and projections";
  }
}

function fixTextScale() {
  // the labels keep a readable size whatever the image is shown at
  const svg = $("overlay"), shown = svg.clientWidth || $("input-image").clientWidth;
  if (!dense || !shown) return;
  const scale = dense.width / shown;
  svg.querySelectorAll("text").forEach((t) => t.style.fontSize = (11 * scale) + "px");
}

async function selectDetection(k) {
  state.det = k; state.px = state.py = null;
  writeHash();
  document.querySelectorAll("#overlay rect").forEach((r) => r.classList.toggle("selected", +r.dataset.k === k));
  document.querySelectorAll("#dense-list button").forEach((b) => b.classList.toggle("selected", +b.dataset.k === k));
  const shown = state.image;
  $("dense-view").textContent = `tracing detection #${k}…`;
  const t0 = performance.now();
  const [, t] = await getJSON("/api/detection?" + new URLSearchParams({ image: shown, k }));
  if (shown !== state.image || state.det !== k) return;
  status(`traced in ${Math.round(performance.now() - t0)} ms`);
  const img = new Image(); img.src = t.figure; img.alt = `detection ${k}: box, unit's projections, Grad-CAM`;
  img.id = "detection-figure";
  const p = document.createElement("p"); p.className = "small";
  const num = (v, f) => (v === null ? "?" : f(v));      // null: not a finite number (nets with filler weights)
  p.textContent = `#${t.index} ${t.name} ${t.score.toFixed(4)} · box (${t.box.map((v) => num(v, (a) => a.toFixed(1))).join(", ")}) · ` +
    `unit ${t.unit.what} = ${num(t.unit.value, (a) => a.toPrecision(4))} · Grad-CAM at ${t.cam_layer}: ` +
    `${Math.round(100 * t.mass_in_box)}% of its mass in the box`;
  $("dense-view").replaceChildren(p, img);
}

async function selectPeak(k) {
  const shown = state.image;
  $("dense-view").textContent = `tracing peak ${k}…`;
  const [, t] = await getJSON("/api/keypoint?" + new URLSearchParams({ image: shown, k }));
  if (shown !== state.image) return;
  const img = new Image(); img.src = t.figure; img.alt = `keypoint ${t.name}: Grad-CAM and projections`;
  img.id = "keypoint-figure";
  const p = document.createElement("p"); p.className = "small"; p.textContent = t.what;
  $("dense-view").replaceChildren(p, img);
}

async function selectPixel(x, y) {
  state.px = x; state.py = y; state.det = null;
  writeHash();
  const shown = state.image;
  $("dense-view").textContent = `tracing the class of pixel (${x}, ${y})…`;
  const [, t] = await getJSON("/api/segment?" + new URLSearchParams({ image: shown, x, y }));
  if (shown !== state.image || state.px !== x || state.py !== y) return;
  const img = new Image(); img.src = t.figure; img.alt = `class ${t.name}: Grad-CAM and projections`;
  img.id = "segment-figure";
  const p = document.createElement("p"); p.className = "small";
  p.textContent = `pixel (${x}, ${y}): class ${t.label} ${t.name}, ${(100 * t.share).toFixed(1)}% of the pixels`;
  $("dense-view").replaceChildren(p, img);
}

$("overlay").addEventListener("click", (ev) => {
  if (!dense || dense.kind !== "segmentation") return;
  const r = $("overlay").getBoundingClientRect();
  const x = Math.floor((ev.clientX - r.left) * dense.width / r.width), y = Math.floor((ev.clientY - r.top) * dense.height / r.height);
  if (x >= 0 && y >= 0 && x < dense.width && y < dense.height) selectPixel(x, y).catch((e) => status(e.message, true));
});

async function showLayer() {
  const layer = layerInfo();
  $("layer-select").value = state.layer;
  const rf = layer.receptive_field ? `receptive field ${layer.receptive_field} px` : "sees the whole image";
  $("layer-info").textContent = `${layer.type}, output ${layer.shape.join(" × ")}; ${rf}`;
  $("filters").hidden = $("filters-title").hidden = !layer.filters;
  if (layer.filters) $("filters").src = "/api/filters.png?" + new URLSearchParams({ layer: state.layer });
  const g = ++generation;
  status("loading " + state.layer + "…");
  const [, meta] = await getJSON("/api/maps?" + query({}));
  if (g !== generation) return;
  maps = meta;
  if (state.c === null || state.c >= maps.channels) state.c = maps.strongest[0];   // a new layer: its strongest map
  const atlas = $("atlas");
  atlas.src = "/api/maps.png?" + query({});
  await new Promise((f) => { if (atlas.complete && atlas.naturalWidth) f(); else atlas.onload = f; });
  if (g !== generation) return;
  drawMarks();
  await showUnit();
}

function cellBox(c) {
  const a = $("atlas"), scale = a.clientWidth / a.naturalWidth;
  const col = c % maps.cols, row = Math.floor(c / maps.cols);
  return { left: col * (maps.width + maps.pad) * scale, top: row * (maps.height + maps.pad) * scale,
           width: maps.width * scale, height: maps.height * scale, scale };
}

function drawMarks() {
  const marks = [];
  const put = (cls, b) => { const d = document.createElement("div"); d.className = cls;
    Object.assign(d.style, { left: b.left + "px", top: b.top + "px", width: b.width + "px", height: b.height + "px" });
    marks.push(d); };
  maps.strongest.forEach((c) => put("strong", cellBox(c)));
  const b = cellBox(state.c);
  put("selected", b);
  if (state.y !== null && maps.height > 1) {
    put("dot", { left: b.left + (state.x + 0.5) * b.scale - 3, top: b.top + (state.y + 0.5) * b.scale - 3, width: 6, height: 6 });
  }
  $("marks").replaceChildren(...marks);
}

function tile(src, caption) {
  const f = document.createElement("figure");
  const img = new Image(); img.src = src; img.alt = caption;
  const cap = document.createElement("figcaption"); cap.textContent = caption;
  f.append(img, cap); return f;
}

async function showUnit() {
  writeHash();
  drawMarks();
  const g = generation, layer = layerInfo();
  const where = state.y !== null ? { y: state.y, x: state.x } : {};
  $("unit-title").textContent = `${state.layer} · map ${state.c}`;
  status("projecting…");
  const t0 = performance.now();
  // the paper's mode first, on screen as soon as it is ready; the others follow, cut to the same box
  const [, u] = await getJSON("/api/unit?" + query({ c: state.c, ...where, modes: model.modes[0] }));
  if (g !== generation) return;
  status(`projected in ${Math.round(performance.now() - t0)} ms`);
  showProjections(u);
  const [, rest] = await getJSON("/api/unit?" + query({ c: state.c, ...where, modes: model.modes.join(",") }));
  if (g !== generation) return;
  showProjections(rest);
  $("classviz").replaceChildren();
  showTop9(g);
}

function showProjections(u) {
  const pos = u.unit.length > 1 ? ` at (${u.unit[1]}, ${u.unit[2]})` : "";
  $("unit-title").textContent = `${state.layer} · map ${state.c}${pos} · activation ${u.value.toPrecision(4)}`;
  $("projections").replaceChildren(...Object.entries(u.projections).map(([m, src]) => tile(src, m)),
                                    tile(u.patch, "image patch"));
  const ties = Object.entries(u.near_ties).map(([k, n]) => `${k}: ${n}`).join(", ");
  $("unit-note").textContent = `box y ${u.box[0]}–${u.box[1]}, x ${u.box[2]}–${u.box[3]} of the input` +
    (ties ? `; passes decisions taken by float rounding (${ties})` : "");
}

async function poll(url, target, g, what) {
  for (;;) {
    let code, s;
    try { [code, s] = await getJSON(url); } catch (e) { if (g === generation) target.textContent = e.message; return null; }
    if (g !== generation) return null;
    if (s.state === "done") return s;
    if (s.state === "error") { target.textContent = s.error; return null; }
    target.textContent = s.total ? `${what}: ${s.done} / ${s.total}` : `${what}…`;
    await new Promise((f) => setTimeout(f, 400));
  }
}

async function showTop9(g) {
  const target = $("top9");
  target.textContent = "…";
  const s = await poll("/api/top9?" + new URLSearchParams({ layer: state.layer, c: state.c }), target, g, "scanning images");
  if (!s) return;
  target.replaceChildren(...Object.entries(s.projections).map(([m, src]) => tile(src, m)), tile(s.patches, `image patches (${s.count})`));
}

async function showClassviz() {
  const g = generation, target = $("classviz");
  const s = await poll("/api/classviz?" + new URLSearchParams({ layer: state.layer, c: state.c }), target, g, "optimising");
  if (!s) return;
  target.replaceChildren(tile(s.image, `${s.target}: ${s.start.toPrecision(3)} → ${s.score.toPrecision(3)}`));
}

function escapeHtml(s) { return String(s).replace(/[&<>"']/g, (ch) => `&#${ch.charCodeAt(0)};`); }

function selectMap(c, y, x) { state.c = c; state.y = y; state.x = x; generation++; showUnit().catch((e) => status(e.message, true)); }

$("atlas").addEventListener("click", (ev) => {
  if (!maps) return;
  const a = $("atlas"), scale = a.naturalWidth / a.clientWidth;
  const px = ev.offsetX * scale, py = ev.offsetY * scale;
  const col = Math.floor(px / (maps.width + maps.pad)), row = Math.floor(py / (maps.height + maps.pad));
  const x = Math.floor(px - col * (maps.width + maps.pad)), y = Math.floor(py - row * (maps.height + maps.pad));
  const c = row * maps.cols + col;
  if (col >= maps.cols || c >= maps.channels || x >= maps.width || y >= maps.height) return;
  if (maps.height > 1 || maps.width > 1) selectMap(c, y, x); else selectMap(c, null, null);
});

function moveLayer(step) {
  const i = model.layers.findIndex((l) => l.name === state.layer);
  const next = model.layers[Math.min(model.layers.length - 1, Math.max(0, i + step))];
  if (next.name !== state.layer) { state.layer = next.name; state.c = null; state.y = state.x = null; showLayer().catch((e) => status(e.message, true)); }
}

document.addEventListener("keydown", (ev) => {
  if (!maps || ev.target.tagName === "INPUT") return;
  const keys = { ArrowLeft: -1, ArrowRight: 1, h: -1, l: 1 };
  if (ev.key in keys) { ev.preventDefault(); selectMap((state.c + keys[ev.key] + maps.channels) % maps.channels, null, null); }
  else if (ev.key === "ArrowDown" || ev.key === "j") { ev.preventDefault(); moveLayer(1); }
  else if (ev.key === "ArrowUp" || ev.key === "k") { ev.preventDefault(); moveLayer(-1); }
});
$("layer-select").addEventListener("keydown", (ev) => ev.stopPropagation());
$("layer-select").addEventListener("change", () => { state.layer = $("layer-select").value; state.c = null; state.y = state.x = null; showLayer(); });
$("image-select").addEventListener("change", () => { state.image = $("image-select").value; state.y = state.x = null; state.det = state.px = state.py = null; showImage(); });
$("classviz-button").addEventListener("click", () => showClassviz());
$("upload").addEventListener("change", async () => {
  const file = $("upload").files[0];
  if (!file) return;
  status("uploading…");
  const r = await fetch("/api/upload", { method: "POST", body: file });
  const body = await r.json();
  if (!r.ok) { status(body.error, true); return; }
  [, model] = await getJSON("/api/model");
  state.image = body.id; state.y = state.x = null; state.det = state.px = state.py = null;
  fillImages();
  showImage();
});
window.addEventListener("hashchange", () => { readHash(); showImage(); });
$("input-image").addEventListener("load", () => fixTextScale());
window.addEventListener("resize", () => { if (maps) drawMarks(); fixTextScale(); });
start().catch((e) => status(e.message, true));
