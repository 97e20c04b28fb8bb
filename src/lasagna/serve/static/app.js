// The lasagna page: pick an image, ask for classes or a query, draw the masks the API returns.
// No framework and nothing from a CDN: this file, index.html and style.css are all the page loads.
"use strict";

const $ = (id) => document.getElementById(id);
const state = {
  file: null,        // the picked File
  image: null,       // its decoded ImageBitmap
  result: null,      // the last /v1/segment answer
  masks: [],         // {name, color, score, pixels: Uint32Array of row-major indices, label: [x, y], visible}
  owner: null,       // Int16Array, per pixel: index of the topmost visible mask, -1 for none
  hover: -1,
  controller: null,  // AbortController of the running request
};

function headers() {
  const key = $("api-key").value.trim();
  return key ? { "X-API-Key": key } : {};
}

function errorText(body, status) {
  if (body && Array.isArray(body.detail)) {
    return body.detail.map((d) => `${(d.loc || []).join(".") || "request"}: ${d.msg}`).join("\n");
  }
  return (body && body.detail) || `HTTP ${status}`;
}

function showError(text) {
  $("error").textContent = text;
  $("error").hidden = !text;
}

async function getJSON(path) {
  const response = await fetch(path, { headers: headers() });
  const body = await response.json().catch(() => null);
  if (!response.ok) throw new Error(errorText(body, response.status));
  return body;
}

async function loadModel() {
  try {
    const model = await getJSON("v1/model");
    $("model-name").textContent = `${model.name} · decoder ${model.default_decoder}`;
    const { lists } = await getJSON("v1/classlists");
    const select = $("classlist");
    select.length = 1;
    for (const list of lists) {
      const option = new Option(list.title, list.id);
      option.dataset.classes = list.classes.join("\n");
      select.add(option);
    }
    showError("");
  } catch (err) {
    $("model-name").textContent = "model unknown";
    showError(`${err.message}\n(If the server needs an API key, enter it under Options.)`);
  }
}

// COCO RLE text counts -> run lengths (5-bit groups, 0x20 continues, 0x10 is the sign, deltas from run i-2).
function runsFromCounts(counts) {
  const runs = [];
  let value = 0, shift = 0;
  for (let i = 0; i < counts.length; i++) {
    const code = counts.charCodeAt(i) - 48;
    value |= (code & 0x1f) << shift;
    shift += 5;
    if (code & 0x20) continue;
    if (code & 0x10) value -= 1 << shift;
    if (runs.length > 2) value += runs[runs.length - 2];
    runs.push(value);
    value = 0;
    shift = 0;
  }
  return runs;
}

// RLE (column-major runs of 0s then 1s) -> row-major indices of the mask's pixels.
function maskPixels(rle) {
  const [h, w] = rle.size;
  const runs = runsFromCounts(rle.counts);
  const out = [];
  let pos = 0;
  runs.forEach((run, i) => {
    if (i % 2 === 1) {
      for (let p = pos; p < pos + run; p++) out.push((p % h) * w + Math.floor(p / h));
    }
    pos += run;
  });
  return Uint32Array.from(out);
}

// Where to write a mask's name: its pixel nearest to its centroid (so it lands on the mask even for a ring).
function labelPoint(pixels, w) {
  let sx = 0, sy = 0;
  for (const p of pixels) { sx += p % w; sy += Math.floor(p / w); }
  const cx = sx / pixels.length, cy = sy / pixels.length;
  let best = pixels[0], bestD = Infinity;
  for (const p of pixels) {
    const d = (p % w - cx) ** 2 + (Math.floor(p / w) - cy) ** 2;
    if (d < bestD) { bestD = d; best = p; }
  }
  return [best % w + 0.5, Math.floor(best / w) + 0.5];
}

function hexToRgb(hex) {
  const n = parseInt(hex.slice(1), 16);
  return [(n >> 16) & 255, (n >> 8) & 255, n & 255];
}

function draw() {
  const canvas = $("view");
  const ctx = canvas.getContext("2d");
  if (!state.image) return;
  const w = state.image.width, h = state.image.height;
  const scale = 640 / Math.max(w, h);
  canvas.width = Math.round(w * scale);
  canvas.height = Math.round(h * scale);
  ctx.imageSmoothingEnabled = scale < 1;  // enlarged pixels stay square, so masks line up with them
  ctx.drawImage(state.image, 0, 0, canvas.width, canvas.height);

  const layer = new ImageData(w, h);
  state.owner = new Int16Array(w * h).fill(-1);
  let drawn = 0;
  state.masks.forEach((m, k) => {
    if (!m.visible) return;
    drawn += 1;
    const [r, g, b] = hexToRgb(m.color);
    const alpha = state.hover < 0 ? 140 : (k === state.hover ? 200 : 50);
    for (const p of m.pixels) {
      layer.data.set([r, g, b, alpha], p * 4);
      state.owner[p] = k;
    }
  });
  // outlines: a shown pixel of a mask next to a pixel of the image that is not (4-neighbours), drawn opaque
  const own = state.owner;
  for (let p = 0; p < w * h; p++) {
    const k = own[p];
    if (k < 0) continue;
    const x = p % w;
    const edge = (x > 0 && own[p - 1] !== k) || (x < w - 1 && own[p + 1] !== k)
      || (p >= w && own[p - w] !== k) || (p < w * (h - 1) && own[p + w] !== k);
    if (edge) layer.data[p * 4 + 3] = state.hover < 0 || k === state.hover ? 255 : 90;
  }
  const off = new OffscreenCanvas(w, h);
  off.getContext("2d").putImageData(layer, 0, 0);
  ctx.drawImage(off, 0, 0, canvas.width, canvas.height);

  ctx.font = "bold 14px system-ui, sans-serif";
  ctx.textAlign = "center";
  ctx.textBaseline = "middle";
  for (const m of state.masks) {
    if (!m.visible) continue;
    const [x, y] = [m.label[0] * scale, m.label[1] * scale];
    const width = ctx.measureText(m.name).width + 8;
    ctx.fillStyle = "rgba(0, 0, 0, 0.65)";
    ctx.fillRect(x - width / 2, y - 10, width, 20);
    ctx.fillStyle = "white";
    ctx.fillText(m.name, x, y);
  }
  canvas.dataset.masks = String(drawn);
}

function setHover(k) {
  if (k === state.hover) return;
  state.hover = k;
  document.querySelectorAll("#present li").forEach((li) => {
    li.classList.toggle("hover", Number(li.dataset.index) === k);
  });
  draw();
}

function listItem(name, score, color, index) {
  const li = document.createElement("li");
  li.dataset.name = name;
  if (index !== undefined) {
    li.dataset.index = String(index);
    const box = document.createElement("input");
    box.type = "checkbox";
    box.checked = true;
    box.title = "show this mask";
    box.addEventListener("change", () => { state.masks[index].visible = box.checked; draw(); });
    const swatch = document.createElement("span");
    swatch.className = "swatch";
    swatch.style.background = color;
    li.append(box, swatch);
    li.addEventListener("mouseenter", () => setHover(index));
    li.addEventListener("mouseleave", () => setHover(-1));
  }
  const label = document.createElement("span");
  label.textContent = name;
  const value = document.createElement("span");
  value.className = "score";
  value.textContent = score === null ? "" : score.toFixed(2);
  li.append(label, value);
  return li;
}

function showResult(result, isQuery) {
  state.result = result;
  const [h, w] = result.image_size;
  if (isQuery) {
    state.masks = result.masks.map((rle, i) => {
      const name = `target ${i + 1}`;
      return { name, score: null, color: result.colors[name], pixels: maskPixels(rle) };
    });
  } else {
    state.masks = result.classes.filter((c) => c.present).map((c) => ({
      name: c.name, score: c.score, color: result.colors[c.name], pixels: maskPixels(c.mask),
    }));
  }
  state.masks = state.masks.map((m) => ({
    ...m, visible: true, label: m.pixels.length ? labelPoint(m.pixels, w) : [w / 2, h / 2],
  }));
  state.hover = -1;

  const present = $("present"), absent = $("absent");
  present.replaceChildren(...state.masks.map((m, k) => listItem(m.name, m.score, m.color, k)));
  const gone = isQuery ? (result.masks.length ? [] : [{ name: "(no target)", score: null }])
    : result.classes.filter((c) => !c.present);
  absent.replaceChildren(...gone.map((c) => listItem(c.name, c.score)));
  $("present-count").textContent = `(${state.masks.length})`;
  $("absent-count").textContent = `(${gone.length})`;
  $("answer").textContent = isQuery ? result.answer : "";
  $("warnings").replaceChildren(...result.warnings.map((text) => {
    const li = document.createElement("li");
    li.textContent = text;
    return li;
  }));
  $("download-json").disabled = false;
  $("download-labels").disabled = !result.label_map_png;
  draw();
}

function classNames() {
  return $("classes").value.split(/[\n,]/).map((s) => s.trim()).filter((s) => s && !s.startsWith("#"));
}

async function run() {
  const isQuery = document.querySelector("input[name=mode]:checked").value === "query";
  const form = new FormData();
  form.append("image", state.file, state.file.name);
  if (isQuery) form.append("query", $("query").value);
  else form.append("classes", classNames().join(", "));
  form.append("chunk_size", $("chunk-size").value || "16");
  if ($("decoder").value) form.append("decoder", $("decoder").value);
  form.append("return_label_map", "true");

  state.controller = new AbortController();
  const started = performance.now();
  const timer = setInterval(() => {
    $("elapsed").textContent = `${((performance.now() - started) / 1000).toFixed(1)} s`;
  }, 100);
  document.body.dataset.state = "running";
  $("run").disabled = true;
  $("cancel").hidden = false;
  $("progress").hidden = false;
  showError("");
  try {
    const response = await fetch("v1/segment", {
      method: "POST", body: form, headers: headers(), signal: state.controller.signal,
    });
    const body = await response.json().catch(() => null);
    if (!response.ok) throw new Error(errorText(body, response.status));
    showResult(body, isQuery);
    document.body.dataset.state = "done";
  } catch (err) {
    showError(err.name === "AbortError" ? "cancelled" : err.message);
    document.body.dataset.state = "error";
  } finally {
    clearInterval(timer);
    $("run").disabled = false;
    $("cancel").hidden = true;
    $("progress").hidden = true;
    state.controller = null;
  }
}

async function pickFile(file) {
  if (!file) return;
  try {
    state.image = await createImageBitmap(file, { imageOrientation: "from-image" });
  } catch {
    showError(`${file.name} is not an image this browser can show`);
    return;
  }
  state.file = file;
  state.masks = [];
  $("file-name").textContent = `${file.name} (${state.image.width}×${state.image.height})`;
  $("run").disabled = false;
  showError("");
  draw();
}

function download(blob, name) {
  const url = URL.createObjectURL(blob);
  const a = document.createElement("a");
  a.href = url;
  a.download = name;
  a.click();
  setTimeout(() => URL.revokeObjectURL(url), 1000);
}

function stem() {
  return state.file ? state.file.name.replace(/\.[^.]*$/, "") : "result";
}

function wire() {
  const drop = $("drop");
  drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    drop.classList.remove("over");
    pickFile(e.dataTransfer.files[0]);
  });
  $("file").addEventListener("change", (e) => pickFile(e.target.files[0]));
  document.querySelectorAll("input[name=mode]").forEach((radio) => radio.addEventListener("change", () => {
    const isQuery = radio.value === "query" && radio.checked;
    $("classes-box").hidden = isQuery;
    $("query-box").hidden = !isQuery;
  }));
  $("classlist").addEventListener("change", (e) => {
    const option = e.target.selectedOptions[0];
    if (option && option.dataset.classes) $("classes").value = option.dataset.classes;
  });
  $("api-key").addEventListener("change", loadModel);
  $("run").addEventListener("click", run);
  $("cancel").addEventListener("click", () => state.controller && state.controller.abort());
  const canvas = $("view");
  canvas.addEventListener("mousemove", (e) => {
    if (!state.owner || !state.image) return;
    const rect = canvas.getBoundingClientRect();
    const x = Math.floor((e.clientX - rect.left) / rect.width * state.image.width);
    const y = Math.floor((e.clientY - rect.top) / rect.height * state.image.height);
    const inside = x >= 0 && y >= 0 && x < state.image.width && y < state.image.height;
    setHover(inside ? state.owner[y * state.image.width + x] : -1);
  });
  canvas.addEventListener("mouseleave", () => setHover(-1));
  $("download-json").addEventListener("click", () => {
    const { overlay_png, label_map_png, ...result } = state.result;
    download(new Blob([JSON.stringify(result, null, 1)], { type: "application/json" }), `${stem()}-result.json`);
  });
  $("download-labels").addEventListener("click", () => {
    const bytes = Uint8Array.from(atob(state.result.label_map_png), (c) => c.charCodeAt(0));
    download(new Blob([bytes], { type: "image/png" }), `${stem()}-labels.png`);
  });
}

wire();
loadModel();
