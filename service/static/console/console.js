// The model console: lists the models, sends images or feature values to the native API,
// and shows what came back. Plain ES module, no dependencies; every call goes to this
// service's own public API, with the API key from the page's session (never the URL).

const KEY_ITEM = "keras-serving.api-key";
// The plane's shading: GRID x GRID points in one batched request (coarser grids where a
// model's instance limit is lower).
const GRIDS = [44, 22, 11];
// Okabe-Ito's colour-blind-safe palette, then two more.
const PALETTE = ["#E69F00", "#56B4E9", "#009E73", "#F0E442", "#0072B2", "#D55E00",
  "#CC79A7", "#000000", "#999999", "#882255"];

const $ = (id) => document.getElementById(id);
const state = { models: [], current: null, token: 0, grid: null, marker: null, stream: null };

// --- the API key, kept in this tab's session storage only ----------------------------------

function apiKey() {
  return sessionStorage.getItem(KEY_ITEM) || "";
}

function headers(extra = {}) {
  const key = apiKey();
  return key ? { ...extra, "X-API-Key": key } : extra;
}

function showKeyStatus() {
  $("key-status").textContent = apiKey() ? "A key is in use in this tab." : "No key in use.";
}

$("key-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const value = $("api-key").value.trim();
  if (value) sessionStorage.setItem(KEY_ITEM, value);
  $("api-key").value = "";
  showKeyStatus();
  loadModels();
});

$("forget-key").addEventListener("click", () => {
  sessionStorage.removeItem(KEY_ITEM);
  showKeyStatus();
  loadModels();
});

// --- calling the service ---------------------------------------------------------------------

class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

async function api(path, init = {}) {
  let response;
  try {
    response = await fetch(path, { ...init, headers: headers(init.headers || {}) });
  } catch (error) {
    throw new ApiError(0, `the service did not answer (${error.message})`);
  }
  const type = response.headers.get("Content-Type") || "";
  const body = type.startsWith("application/json") ? await response.json() : await response.blob();
  if (!response.ok) {
    const message = body && body.error ? (body.error.message || body.error) : response.statusText;
    const hint = response.status === 401 ? " Paste an API key into the key field above." : "";
    throw new ApiError(response.status, `${response.status}: ${message}.${hint}`);
  }
  return body;
}

function showError(error) {
  $("error").textContent = error.message;
  $("error").hidden = false;
}

// One always-present status line, so screen readers hear each change once.
function announce(text) {
  $("announce").textContent = text;
}

// --- the model list --------------------------------------------------------------------------

function percent(p, digits = 2) {
  if (p > 0 && p < 10 ** -(digits + 2)) return `<${(10 ** -digits).toFixed(digits)}%`;
  return `${(100 * p).toFixed(digits)}%`;
}

function calibrationText(metrics) {
  const c = metrics && metrics.calibration;
  if (!c || !c.test) return "—";
  if (!c.applied) return `${c.test.before.ece.toFixed(4)} (no temperature)`;
  return `${c.test.before.ece.toFixed(4)} → ${c.test.after.ece.toFixed(4)} (T = ${c.temperature.toFixed(3)})`;
}

function cell(row, text, className) {
  const td = document.createElement("td");
  td.textContent = text;
  if (className) td.className = className;
  row.append(td);
  return td;
}

async function loadModels() {
  const status = $("models-status");
  status.textContent = "Loading the model list…";
  let listing;
  try {
    listing = await api("/models");
  } catch (error) {
    status.textContent = `The model list could not be read: ${error.message}`;
    $("models-table").hidden = true;
    return;
  }
  state.models = listing.models;
  const body = $("models-table").tBodies[0];
  body.replaceChildren();
  for (const model of listing.models) {
    for (const version of model.versions) {
      const row = body.insertRow();
      row.dataset.model = model.name;
      row.dataset.version = String(version.version);
      const th = document.createElement("th");
      th.scope = "row";
      th.textContent = model.name + (model.default ? " (default)" : "");
      row.append(th);
      const labels = version.labels && version.labels.length ? ` (${version.labels.join(", ")})` : "";
      cell(row, `${version.version}${labels}`);
      cell(row, version.status, `status-${version.status}`).title = version.error || "";
      cell(row, version.role || "—");
      cell(row, version.provider || "—");
      cell(row, version.task || "—");
      const accuracy = version.metrics ? version.metrics.accuracy : null;
      cell(row, typeof accuracy === "number" ? percent(accuracy) : "—", "number");
      cell(row, calibrationText(version.metrics));
      const action = cell(row, "");
      if (version.status === "loaded") {
        const button = document.createElement("button");
        button.type = "button";
        button.textContent = "Try it";
        button.setAttribute("aria-label", `Try it: ${model.name} version ${version.version}`);
        button.addEventListener("click", () => {
          state.focusTry = true; // move focus to what was chosen once it is shown
          location.hash = `#/models/${encodeURIComponent(model.name)}/versions/${version.version}`;
        });
        action.append(button);
      }
    }
  }
  $("models-table").hidden = false;
  const count = body.rows.length;
  status.textContent = `${listing.models.length} models, ${count} versions.`;
  route();
}

function route() {
  const match = /^#\/models\/([^/]+)\/versions\/(\d+)$/.exec(location.hash);
  if (match) {
    select(decodeURIComponent(match[1]), Number(match[2]));
    return;
  }
  // Another fragment (the skip link's #main) is not a choice: keep the model in use.
  if (state.current) return;
  const served = state.models.filter((m) => m.latest_version !== null);
  const chosen = served.find((m) => m.default) || served[0];
  if (chosen) select(chosen.name, chosen.latest_version);
}

window.addEventListener("hashchange", route);

// --- one model version: its inputs and its card ----------------------------------------------

async function select(name, version, focus = false) {
  const token = ++state.token;
  let view;
  try {
    view = await api(`/models/${encodeURIComponent(name)}/versions/${version}`);
    if (view.status !== "loaded") {
      throw new ApiError(0, `${name} version ${version} is not served (${view.status}` +
        `${view.error ? `: ${view.error}` : ""}); choose a loaded version`);
    }
  } catch (error) {
    if (token !== state.token) return;
    $("try").hidden = false;
    showError(error);
    return;
  }
  if (token !== state.token) return; // a later choice won
  stopCamera();
  state.current = view;
  state.grid = null;
  state.marker = null;
  for (const row of $("models-table").tBodies[0].rows) {
    const chosen = row.dataset.model === name && row.dataset.version === String(version);
    row.classList.toggle("chosen", chosen);
    if (chosen) row.setAttribute("aria-current", "true");
    else row.removeAttribute("aria-current");
  }
  $("model-title").textContent = `${name} version ${version}`;
  announce(`${name} version ${version} chosen.`);
  $("model-description").textContent = (view.metadata && view.metadata.description) || "";
  $("result").hidden = true;
  $("error").hidden = true;
  const kind = view.preprocessing.kind;
  const nFeatures = view.preprocessing.columns ? 0 : view.preprocessing.n_features;
  $("image-input").hidden = kind !== "image";
  $("plane-input").hidden = !(kind === "features" && nFeatures === 2);
  $("feature-form").hidden = kind !== "features";
  if (kind === "features") buildForm(view);
  if (kind === "image") clearDrawing();
  $("try").hidden = false;
  if (state.focusTry) $("try-title").focus();
  state.focusTry = false;
  renderCard(view);
  if (kind === "features" && nFeatures === 2) await drawRegions(view, token);
}

function modelPath(view) {
  return `/models/${encodeURIComponent(view.name)}/versions/${view.version}`;
}

// --- predictions -----------------------------------------------------------------------------

// An answer is shown only while the version it was asked of is still the one in use.
function stillCurrent(view, token) {
  return state.current === view && state.token === token;
}

async function classify(request) {
  const view = state.current;
  const token = state.token;
  const url = `${modelPath(view)}/predict?show_input=true`;
  $("error").hidden = true;
  const started = performance.now();
  let answer;
  try {
    answer = await api(url, { method: "POST", body: request.body, headers: request.headers });
  } catch (error) {
    if (stillCurrent(view, token)) showError(error);
    return;
  }
  const elapsed = performance.now() - started;
  if (!stillCurrent(view, token)) return;
  showResult(answer, elapsed, request);
  showSnippets({ ...request, url: location.origin + url });
}

function showResult(answer, elapsed, request) {
  const prediction = answer.predictions[0];
  // Best first, as the API lists them (a JS object puts integer-like names such as a
  // digit's "4" first, in numeric order, so the order is made again: probability, then index).
  const classes = state.current.classes;
  const probabilities = Object.entries(prediction.probabilities)
    .sort((a, b) => b[1] - a[1] || classes.indexOf(a[0]) - classes.indexOf(b[0]));
  const bars = $("bars");
  bars.replaceChildren();
  for (const [name, p] of probabilities) {
    const item = document.createElement("li");
    item.dataset.class = name;
    item.dataset.probability = String(p);
    const label = document.createElement("span");
    label.className = "name";
    label.textContent = name;
    const track = document.createElement("span");
    track.className = "track";
    track.setAttribute("aria-hidden", "true");
    const fill = document.createElement("span");
    fill.className = "fill";
    fill.style.width = `${Math.max(0, Math.min(1, p)) * 100}%`;
    track.append(fill);
    const value = document.createElement("span");
    value.className = "value";
    value.textContent = percent(p);
    item.append(label, track, value);
    bars.append(item);
  }
  const model = answer.model;
  const summary = $("result-summary");
  summary.replaceChildren();
  const strong = document.createElement("strong");
  strong.textContent = prediction.label;
  strong.id = "result-label";
  summary.append(strong, ` with ${percent(prediction.confidence)} · answered in `);
  const ms = document.createElement("span");
  ms.id = "result-latency";
  ms.textContent = `${elapsed.toFixed(1)} ms`;
  summary.append(ms, ` (round trip) by ${model.name} v${model.version} on ${model.provider}`);
  announce(`${prediction.label}, ${percent(prediction.confidence)}.`);
  const sent = $("sent-image");
  if (sent.src.startsWith("blob:")) URL.revokeObjectURL(sent.src);
  if (request.kind === "image") {
    sent.src = URL.createObjectURL(request.blob);
    sent.alt = `The image the console sent: ${request.fileName}`;
  } else {
    sent.removeAttribute("src");
  }
  $("sent").hidden = request.kind !== "image";
  const seen = prediction.input;
  if (typeof seen === "string") {
    $("seen-image").src = seen;
    const kind = state.current.preprocessing;
    $("seen-image").alt = `The input tensor: the image as ${kind.width}×${kind.height} pixels`;
    $("seen-size").textContent = `${kind.width}×${kind.height}`;
    $("seen").hidden = false;
    $("seen-vector").hidden = true;
  } else if (Array.isArray(seen)) {
    $("seen").hidden = true;
    $("seen-vector").textContent = `The model sees: [${seen.map((v) => Number(v.toPrecision(6))).join(", ")}]`;
    $("seen-vector").hidden = false;
  }
  $("result").hidden = false;
}

// --- images: file, drop, drawing, camera -----------------------------------------------------

function sendImage(blob, fileName) {
  const form = new FormData();
  form.append("file", blob, fileName);
  return classify({ kind: "image", body: form, blob, fileName, type: blob.type || "image/png" });
}

function safeName(name) {
  const cleaned = (name || "").replace(/[^A-Za-z0-9._-]/g, "_");
  return cleaned && !cleaned.startsWith(".") ? cleaned : "image.png";
}

$("file-input").addEventListener("change", () => {
  const file = $("file-input").files[0];
  if (file) sendImage(file, safeName(file.name));
});

const drop = $("drop-zone");
drop.addEventListener("dragover", (event) => {
  event.preventDefault();
  drop.classList.add("over");
});
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (event) => {
  event.preventDefault();
  drop.classList.remove("over");
  const file = event.dataTransfer.files[0];
  if (file) sendImage(file, safeName(file.name));
});

const canvas = $("draw-canvas");
const pen = canvas.getContext("2d");
let drawing = false;
let blank = true; // showing the hint, which must not be sent

function clearDrawing() {
  pen.fillStyle = "#ffffff";
  pen.fillRect(0, 0, canvas.width, canvas.height);
  pen.fillStyle = "#5a6472";
  pen.font = "16px system-ui, sans-serif";
  pen.textAlign = "center";
  pen.fillText("Draw here", canvas.width / 2, canvas.height / 2);
  blank = true;
}

function point(event) {
  // offsetX/Y count from the canvas' padding edge, so its border does not shift the stroke.
  return [event.offsetX * (canvas.width / canvas.clientWidth),
    event.offsetY * (canvas.height / canvas.clientHeight)];
}

canvas.addEventListener("pointerdown", (event) => {
  if (blank) {
    pen.fillStyle = "#ffffff";
    pen.fillRect(0, 0, canvas.width, canvas.height);
    blank = false;
  }
  drawing = true;
  canvas.setPointerCapture(event.pointerId);
  pen.strokeStyle = "#000000";
  pen.lineWidth = 22;
  pen.lineCap = "round";
  pen.lineJoin = "round";
  pen.beginPath();
  pen.moveTo(...point(event));
  pen.lineTo(...point(event));
  pen.stroke();
});
canvas.addEventListener("pointermove", (event) => {
  if (!drawing) return;
  pen.lineTo(...point(event));
  pen.stroke();
});
canvas.addEventListener("pointercancel", () => { drawing = false; });
canvas.addEventListener("pointerup", () => {
  if (!drawing) return;
  drawing = false;
  classifyDrawing();
});

function classifyDrawing() {
  if (blank) {
    showError(new Error("Draw something first: the canvas is empty."));
    return;
  }
  canvas.toBlob((blob) => sendImage(blob, "drawing.png"), "image/png");
}

$("draw-classify").addEventListener("click", classifyDrawing);
$("draw-clear").addEventListener("click", clearDrawing);

const video = $("camera-video");
if (!(navigator.mediaDevices && navigator.mediaDevices.getUserMedia)) {
  $("camera-start").disabled = true;
  $("camera-status").textContent = "This browser offers no camera here (a camera needs https or localhost).";
}

$("camera-start").addEventListener("click", async () => {
  if (state.stream) {
    stopCamera();
    return;
  }
  const token = state.token;
  const start = $("camera-start");
  start.disabled = true; // one request for the camera at a time
  let stream;
  try {
    stream = await navigator.mediaDevices.getUserMedia({ video: true, audio: false });
  } catch (error) {
    $("camera-status").textContent = `No camera: ${error.message}`;
    return;
  } finally {
    start.disabled = false;
  }
  if (token !== state.token) { // the model changed while the browser asked
    for (const track of stream.getTracks()) track.stop();
    return;
  }
  state.stream = stream;
  video.srcObject = state.stream;
  video.hidden = false;
  await video.play();
  $("camera-shoot").hidden = false;
  $("camera-start").textContent = "Stop the camera";
  $("camera-status").textContent = "Camera on.";
});

$("camera-shoot").addEventListener("click", () => {
  if (!video.videoWidth) {
    showError(new Error("The camera has no picture yet: try again in a moment."));
    return;
  }
  const frame = document.createElement("canvas");
  frame.width = video.videoWidth;
  frame.height = video.videoHeight;
  frame.getContext("2d").drawImage(video, 0, 0);
  frame.toBlob((blob) => {
    if (blob) sendImage(blob, "camera.png");
    else showError(new Error("The photo could not be encoded."));
  }, "image/png");
});

function stopCamera() {
  if (state.stream) for (const track of state.stream.getTracks()) track.stop();
  state.stream = null;
  video.hidden = true;
  $("camera-shoot").hidden = true;
  $("camera-start").textContent = "Use the camera";
}

// --- feature vectors: the form, and the plane for two features --------------------------------

function featureRange(view) {
  const dataset = view.metadata && view.metadata.dataset;
  return dataset && dataset.feature_range ? dataset.feature_range : null;
}

function buildForm(view) {
  if (view.preprocessing.columns) return buildColumnForm(view.preprocessing.columns);
  const names = view.preprocessing.feature_names;
  const range = featureRange(view);
  const fields = $("feature-fields");
  fields.replaceChildren();
  state.columns = null;
  names.forEach((name, i) => {
    const input = document.createElement("input");
    input.type = "number";
    input.step = "any";
    input.required = true;
    const middle = range ? (range.min[i] + range.max[i]) / 2 : 0;
    input.value = String(Number(middle.toFixed(4)));
    addField(fields, i, name, input);
  });
}

// One labelled field of the feature form: feature-{i}, as the form's readers find it.
function addField(fields, i, name, input) {
  const wrap = document.createElement("div");
  const label = document.createElement("label");
  label.htmlFor = `feature-${i}`;
  label.textContent = name;
  input.id = `feature-${i}`;
  wrap.append(label, input);
  fields.append(wrap);
}

// A table's raw features (metadata preprocessing.columns): numbers, yes/no and categories
// from the training vocabulary, each with a "missing" choice where the model imputes one.
const MISSING_CHOICE = "(missing)";

function option(value, text) {
  const item = document.createElement("option");
  item.value = value;
  item.textContent = text;
  return item;
}

function buildColumnForm(columns) {
  const fields = $("feature-fields");
  fields.replaceChildren();
  state.columns = columns;
  columns.forEach((column, i) => {
    const imputes = column.impute !== null;
    let input;
    if (column.kind === "numeric") {
      input = document.createElement("input");
      input.type = "number";
      input.step = "any";
      input.required = !imputes;
      input.value = imputes ? String(Number(Number(column.impute).toFixed(4))) : "0";
      if (imputes) input.placeholder = "empty: missing";
    } else {
      input = document.createElement("select");
      const values = column.kind === "boolean" ? ["true", "false"] : column.vocabulary;
      values.forEach((value) => input.append(option(value, value)));
      if (imputes) input.append(option(MISSING_CHOICE, MISSING_CHOICE));
      const usual = column.kind === "boolean" ? (column.impute ? "true" : "false") : column.impute;
      if (usual !== null) input.value = String(usual);
    }
    addField(fields, i, column.name, input);
  });
}

function formValues() {
  const inputs = [...$("feature-fields").querySelectorAll("input, select")];
  if (!state.columns) return inputs.map((input) => Number(input.value));
  const row = {};
  state.columns.forEach((column, i) => {
    const value = inputs[i].value;
    if (value === "" || value === MISSING_CHOICE) row[column.name] = null;
    else if (column.kind === "numeric") row[column.name] = Number(value);
    else if (column.kind === "boolean") row[column.name] = value === "true";
    else row[column.name] = value;
  });
  return row;
}

function sendFeatures(values) {
  const body = JSON.stringify({ instances: [values] });
  return classify({ kind: "features", body, headers: { "Content-Type": "application/json" }, values });
}

$("feature-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const values = formValues();
  if (state.grid) {
    state.marker = values;
    paintPlane();
  }
  sendFeatures(values);
});

function planeBox(view) {
  const range = featureRange(view);
  const low = range ? range.min : [-3, -3];
  const high = range ? range.max : [3, 3];
  const pad = (i) => 0.1 * (high[i] - low[i] || 1);
  return { range, x: [low[0] - pad(0), high[0] + pad(0)], y: [low[1] - pad(1), high[1] + pad(1)] };
}

function gridPoints(box, size) {
  const points = [];
  for (let row = 0; row < size; row++) {
    for (let col = 0; col < size; col++) {
      const x = box.x[0] + ((col + 0.5) / size) * (box.x[1] - box.x[0]);
      const y = box.y[1] - ((row + 0.5) / size) * (box.y[1] - box.y[0]);
      points.push([Number(x.toFixed(5)), Number(y.toFixed(5))]);
    }
  }
  return points;
}

async function drawRegions(view, token) {
  const box = planeBox(view);
  const names = view.preprocessing.feature_names;
  const caption = box.range
    ? "The dashed rectangle is the training data's range."
    : "This model's metadata gives no training range; the plane spans −3…3.";
  $("plane-caption").textContent =
    `Decision regions of ${view.name} v${view.version} over ${names[0]} (across) and ` +
    `${names[1]} (up), shaded by the most probable class, stronger where it is surer. ` +
    `${caption} Click a point to classify it, or type values below.`;
  const legend = $("plane-legend");
  legend.replaceChildren();
  view.classes.forEach((name, i) => {
    const item = document.createElement("li");
    const swatch = document.createElement("span");
    swatch.className = "swatch";
    swatch.style.background = PALETTE[i % PALETTE.length];
    item.append(swatch, name);
    legend.append(item);
  });
  let answer;
  let size;
  for (size of GRIDS) {
    try {
      answer = await api(`${modelPath(view)}/predict`, {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ instances: gridPoints(box, size) }),
      });
      break;
    } catch (error) {
      // 413/422: more instances than this model takes in one request; try a coarser grid.
      if (![413, 422].includes(error.status) || size === GRIDS[GRIDS.length - 1]) {
        if (stillCurrent(view, token)) showError(error);
        return;
      }
    }
  }
  if (!stillCurrent(view, token)) return;
  state.grid = { box, answer, size };
  $("plane").dataset.regions = answer.predictions.map((p) => p.index).join(",");
  paintPlane();
}

function rgb(hex) {
  return [1, 3, 5].map((i) => parseInt(hex.slice(i, i + 2), 16));
}

function paintPlane() {
  const plane = $("plane");
  const ctx = plane.getContext("2d");
  const { box, answer, size } = state.grid;
  const k = state.current.classes.length;
  const image = ctx.createImageData(plane.width, plane.height);
  const cellW = plane.width / size;
  const cellH = plane.height / size;
  for (let py = 0; py < plane.height; py++) {
    for (let px = 0; px < plane.width; px++) {
      const p = answer.predictions[Math.floor(py / cellH) * size + Math.floor(px / cellW)];
      const [r, g, b] = rgb(PALETTE[p.index % PALETTE.length]);
      const sure = Math.max(0, (p.confidence - 1 / k) / (1 - 1 / k));
      const alpha = 0.2 + 0.6 * sure;
      const at = 4 * (py * plane.width + px);
      image.data[at] = Math.round(255 + alpha * (r - 255));
      image.data[at + 1] = Math.round(255 + alpha * (g - 255));
      image.data[at + 2] = Math.round(255 + alpha * (b - 255));
      image.data[at + 3] = 255;
    }
  }
  ctx.putImageData(image, 0, 0);
  const toPx = ([x, y]) => [
    ((x - box.x[0]) / (box.x[1] - box.x[0])) * plane.width,
    ((box.y[1] - y) / (box.y[1] - box.y[0])) * plane.height,
  ];
  if (box.range) {
    const [x0, y0] = toPx([box.range.min[0], box.range.max[1]]);
    const [x1, y1] = toPx([box.range.max[0], box.range.min[1]]);
    ctx.setLineDash([6, 4]);
    ctx.strokeStyle = "#1b1f24";
    ctx.lineWidth = 1.5;
    ctx.strokeRect(x0, y0, x1 - x0, y1 - y0);
    ctx.setLineDash([]);
  }
  ctx.fillStyle = "#1b1f24";
  ctx.font = "12px system-ui, sans-serif";
  ctx.fillText(`${box.x[0].toFixed(2)}`, 4, plane.height - 6);
  ctx.fillText(`${box.x[1].toFixed(2)}`, plane.width - 40, plane.height - 6);
  ctx.fillText(`${box.y[1].toFixed(2)}`, 4, 14);
  if (state.marker) {
    const [mx, my] = toPx(state.marker);
    ctx.beginPath();
    ctx.arc(mx, my, 7, 0, 2 * Math.PI);
    ctx.fillStyle = "#ffffff";
    ctx.fill();
    ctx.lineWidth = 3;
    ctx.strokeStyle = "#1b1f24";
    ctx.stroke();
  }
}

$("plane").addEventListener("click", (event) => {
  if (!state.grid) return;
  const plane = $("plane");
  const { box } = state.grid;
  const fx = event.offsetX / plane.clientWidth;
  const fy = event.offsetY / plane.clientHeight;
  const values = [
    Number((box.x[0] + fx * (box.x[1] - box.x[0])).toFixed(4)),
    Number((box.y[1] - fy * (box.y[1] - box.y[0])).toFixed(4)),
  ];
  const inputs = $("feature-fields").querySelectorAll("input");
  values.forEach((v, i) => { inputs[i].value = String(v); });
  state.marker = values;
  paintPlane();
  sendFeatures(values);
});

// --- the model card --------------------------------------------------------------------------

function facts(list, pairs) {
  list.replaceChildren();
  for (const [term, value] of pairs) {
    if (value === undefined || value === null || value === "") continue;
    const dt = document.createElement("dt");
    dt.textContent = term;
    const dd = document.createElement("dd");
    dd.textContent = value;
    list.append(dt, dd);
  }
}

function renderCard(view) {
  const meta = view.metadata || {};
  const dataset = meta.dataset;
  const training = meta.training || {};
  const exported = meta.export || {};
  $("card-title").textContent = `Model card: ${view.name} version ${view.version}`;
  facts($("card-facts"), [
    ["Task", `${view.task}, ${view.classes.length} classes: ${view.classes.join(", ")}`],
    ["Input", `${view.input.name} ${JSON.stringify(view.input.shape)} ${view.input.dtype}` +
      (view.preprocessing.kind === "image"
        ? ` (${view.preprocessing.width}×${view.preprocessing.height} image, ` +
          `${view.preprocessing.channels} channel${view.preprocessing.channels > 1 ? "s" : ""})`
        : ` (${view.preprocessing.feature_names.join(", ")})`)],
    ["Output", `${view.output.kind}, ${view.output.activation} applied by the service` +
      (view.output.temperature ? ` after dividing by T = ${view.output.temperature}` : "")],
    ["Provider", view.provider],
    ["Labels", (view.labels || []).join(", ")],
    ["Created", meta.created_at],
    ["Data", dataset ? `${dataset.source}: ${dataset.n_train} train, ${dataset.n_validation} ` +
      `validation, ${dataset.n_test} test` : "unknown (an imported model)"],
    ["Network", meta.architecture ? `${meta.architecture.kind}, ${meta.architecture.parameters} parameters` : ""],
    ["Trained with", training.command],
    ["Training time", training.duration_s ? `${training.duration_s} s, ${training.epochs_run} epochs` : ""],
    ["Export", exported.tool ? `${exported.tool}, opset ${exported.opset}, ${exported.onnx_bytes} bytes; ` +
      `largest difference from Keras ${exported.parity ? exported.parity.max_abs_diff : "?"}` : ""],
  ]);
  const m = view.metrics || {};
  const c = m.calibration;
  const calibration = c && c.test
    ? [["Temperature", c.applied ? `${c.temperature} (fitted on the ${c.fitted_on})` : `not applied: ${c.note || ""}`],
      ["ECE", `${c.test.before.ece.toFixed(4)} → ${c.test.after.ece.toFixed(4)}`],
      ["NLL", `${c.test.before.nll.toFixed(4)} → ${c.test.after.nll.toFixed(4)}`],
      ["Brier", `${c.test.before.brier.toFixed(4)} → ${c.test.after.brier.toFixed(4)}`]]
    : [];
  facts($("card-metrics"), typeof m.accuracy !== "number" ? [["Metrics", "none recorded"]] : [
    ["Accuracy", `${percent(m.accuracy)} of ${m.n_samples} test samples (${m.runtime})`],
    ["Macro F1", m.macro_avg ? m.macro_avg.f1.toFixed(4) : ""],
    ["Loss", m.loss !== undefined ? m.loss.toFixed(4) : ""],
    ...calibration,
  ]);
  renderConfusion(view.classes, m.confusion_matrix);
  renderPlots(view);
  renderShadow(view);
  $("card-metadata").textContent = JSON.stringify(meta, null, 2);
  $("snippets").hidden = true;
  $("snippet-none").hidden = false;
  $("card").hidden = false;
}

// The model's shadow comparisons that involve this version (as the served or the shadow one).
async function renderShadow(view) {
  const block = $("shadow-block");
  block.hidden = true;
  let model;
  try {
    model = await api(`/models/${encodeURIComponent(view.name)}`);
  } catch (error) {
    return; // the card stands without it
  }
  if (state.current !== view || !model.shadow) return;
  const pairs = model.shadow.comparisons.filter(
    (c) => c.version === view.version || c.shadow_version === view.version);
  const shadow = model.shadow;
  const running = shadow.version !== null
    ? `Version ${shadow.version} shadows ${shadow.compared_with.length ? "version " +
      shadow.compared_with.join(", ") : "no version (see the model's serving problems)"}` +
      ` on ${percent(shadow.fraction, 0)} of the answered requests.`
    : "No shadow is configured now; these are the comparisons made before.";
  if (!pairs.length && !(shadow.version === view.version || shadow.compared_with.includes(view.version))) return;
  $("shadow-summary").textContent = running;
  const c = pairs[0];
  facts($("shadow-facts"), c ? [
    ["Compared", `version ${c.version} (served) with version ${c.shadow_version} (shadow)`],
    ["Instances", `${c.comparisons} compared, ${c.dropped} dropped (queue full)`],
    ["Agreement", c.agreement_rate === null ? "nothing compared yet" :
      `${percent(c.agreement_rate)} (${c.agreements} of ${c.comparisons} with the same top class)`],
    ["Mean |Δp| of the served class", c.mean_abs_delta === null ? "" : c.mean_abs_delta.toFixed(4)],
    ["Mean KL(served ‖ shadow)", c.mean_kl === null ? "" : c.mean_kl.toFixed(4)],
  ] : [["Compared", "nothing yet"]]);
  const body = $("shadow-flips").tBodies[0];
  body.replaceChildren();
  for (const flip of c ? c.flips : []) {
    const row = body.insertRow();
    cell(row, flip.served);
    cell(row, flip.shadow);
    cell(row, String(flip.count), "number");
  }
  if (c && c.other_flips) {
    const row = body.insertRow();
    cell(row, "other pairs");
    cell(row, "");
    cell(row, String(c.other_flips), "number");
  }
  $("shadow-flips").hidden = !body.rows.length;
  block.hidden = false;
}

function renderConfusion(classes, matrix) {
  const table = $("confusion");
  while (table.rows.length) table.deleteRow(0);
  table.tHead && table.tHead.remove();
  table.tBodies.length && table.tBodies[0].remove();
  if (!matrix) {
    $("confusion-block").hidden = true;
    return;
  }
  const head = table.createTHead().insertRow();
  const corner = document.createElement("td");
  head.append(corner);
  for (const name of classes) {
    const th = document.createElement("th");
    th.scope = "col";
    th.textContent = name;
    th.title = `predicted ${name}`;
    head.append(th);
  }
  const body = table.createTBody();
  matrix.forEach((counts, i) => {
    const row = body.insertRow();
    const th = document.createElement("th");
    th.scope = "row";
    th.textContent = classes[i];
    th.title = `true ${classes[i]}`;
    row.append(th);
    counts.forEach((n, j) => cell(row, String(n), i === j ? "diagonal" : ""));
  });
  $("confusion-block").hidden = false;
}

const PLOTS = {
  "reliability.png": "Reliability diagram: how often the model is right against how sure it says it is",
  "training_curves.png": "Training curves: loss and accuracy per epoch, training and validation",
  "decision_boundary.png": "Decision boundary over the test data (from training)",
  "samples.png": "Test samples with their predictions (from training)",
};

async function renderPlots(view) {
  const plots = $("plots");
  for (const img of plots.querySelectorAll("img")) URL.revokeObjectURL(img.src);
  plots.replaceChildren();
  const token = state.token;
  for (const file of (view.report || []).filter((f) => f in PLOTS)) {
    let blob;
    try {
      blob = await api(`${modelPath(view)}/report/${file}`);
    } catch {
      continue;
    }
    if (token !== state.token) return;
    const figure = document.createElement("figure");
    const img = document.createElement("img");
    img.src = URL.createObjectURL(blob);
    img.alt = `${PLOTS[file]}, for ${view.name} version ${view.version}`;
    img.dataset.file = file;
    const caption = document.createElement("figcaption");
    caption.textContent = `${PLOTS[file]} (report/${file})`;
    figure.append(img, caption);
    plots.append(figure);
  }
}

// --- the request just sent, as curl and as tritonclient --------------------------------------

function shellQuote(text) {
  return `'${text.replace(/'/g, "'\\''")}'`;
}

function showSnippets(request) {
  const view = state.current;
  const keyed = Boolean(apiKey());
  const curl = ["curl -s " + shellQuote(request.url)];
  if (keyed) curl.push('-H "X-API-Key: $SERVING_API_KEY"');
  if (request.kind === "image") {
    curl.push("-F " + shellQuote(`file=@${request.fileName};type=${request.type}`));
  } else {
    curl.push("-H 'Content-Type: application/json'", "-d " + shellQuote(request.body));
  }
  $("snippet-curl").textContent = curl.join(" \\\n  ");
  const link = $("snippet-file-link");
  if (link.href) URL.revokeObjectURL(link.href);
  if (request.kind === "image") {
    link.href = URL.createObjectURL(request.blob);
    link.download = request.fileName;
    link.textContent = request.fileName;
  } else {
    link.removeAttribute("href");
  }
  $("snippet-file").hidden = request.kind !== "image";
  const python = ["import numpy as np", "import tritonclient.http as httpclient"];
  if (keyed) python.unshift("import os");
  python.push("", `client = httpclient.InferenceServerClient(${JSON.stringify(location.host)})`);
  if (request.kind === "image") {
    python.push(
      `with open(${JSON.stringify(request.fileName)}, "rb") as f:`,
      '    tensor = httpclient.InferInput("image", [1], "BYTES")',
      "    tensor.set_data_from_numpy(np.array([f.read()], dtype=object))",
      "tensors = [tensor]",
    );
  } else if (!Array.isArray(request.values)) {
    // one input per feature, as GET /v2/models/{model} lists them; a missing one is left out
    python.push("tensors = []");
    for (const column of view.preprocessing.columns) {
      const value = request.values[column.name];
      if (value === null) continue;
      const [type, data] =
        column.kind === "numeric"
          ? ["FP64", `np.array([${value}], dtype=np.float64)`]
          : column.kind === "boolean"
            ? ["BOOL", `np.array([${value ? "True" : "False"}])`]
            : ["BYTES", `np.array([${JSON.stringify(String(value))}.encode()], dtype=object)`];
      python.push(
        `tensors.append(httpclient.InferInput(${JSON.stringify(column.name)}, [1], "${type}"))`,
        `tensors[-1].set_data_from_numpy(${data})`,
      );
    }
  } else {
    python.push(
      `x = np.array(${JSON.stringify([request.values])}, dtype=np.float32)`,
      `tensor = httpclient.InferInput(${JSON.stringify(view.input.name)}, list(x.shape), "FP32")`,
      "tensor.set_data_from_numpy(x)",
      "tensors = [tensor]",
    );
  }
  const extra = keyed ? ', headers={"X-API-Key": os.environ["SERVING_API_KEY"]}' : "";
  python.push(
    `result = client.infer(${JSON.stringify(view.name)}, tensors, model_version=` +
      `${JSON.stringify(String(view.version))}${extra})`,
    'print(result.as_numpy("label"), result.as_numpy("probabilities"))',
  );
  $("snippet-triton").textContent = python.join("\n");
  $("snippets").hidden = false;
  $("snippet-none").hidden = true;
}

for (const button of document.querySelectorAll("button.copy")) {
  button.addEventListener("click", async () => {
    const text = $(button.dataset.copy).textContent;
    try {
      await navigator.clipboard.writeText(text);
      announce("Copied to the clipboard.");
    } catch {
      announce("The browser refused the clipboard: select the text to copy it.");
    }
  });
}

showKeyStatus();
loadModels();
