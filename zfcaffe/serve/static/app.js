// zfcaffe serve: the page. State lives in the URL hash (a permalink for every view):
// #image=ID&layer=NAME&c=MAP&y=ROW&x=COL
"use strict";
const $ = (id) => document.getElementById(id);
let model = null;
const state = { image: "0", layer: null, c: null, y: null, x: null };
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
  history.replaceState(null, "", "#" + p.toString());
}

function readHash() {
  const p = new URLSearchParams(location.hash.slice(1));
  if (p.has("image") && model.images.some((i) => i.id === p.get("image"))) state.image = p.get("image");
  if (p.has("layer") && model.layers.some((l) => l.name === p.get("layer"))) state.layer = p.get("layer");
  state.c = p.has("c") ? parseInt(p.get("c"), 10) || 0 : null;
  state.y = p.has("y") ? parseInt(p.get("y"), 10) : null;
  state.x = p.has("x") ? parseInt(p.get("x"), 10) : null;
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
  await showLayer();
}

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
$("image-select").addEventListener("change", () => { state.image = $("image-select").value; state.y = state.x = null; showImage(); });
$("classviz-button").addEventListener("click", () => showClassviz());
$("upload").addEventListener("change", async () => {
  const file = $("upload").files[0];
  if (!file) return;
  status("uploading…");
  const r = await fetch("/api/upload", { method: "POST", body: file });
  const body = await r.json();
  if (!r.ok) { status(body.error, true); return; }
  [, model] = await getJSON("/api/model");
  state.image = body.id; state.y = state.x = null;
  fillImages();
  showImage();
});
window.addEventListener("hashchange", () => { readHash(); showImage(); });
window.addEventListener("resize", () => maps && drawMarks());
start().catch((e) => status(e.message, true));
