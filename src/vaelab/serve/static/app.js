// The latent explorer's page: plain JavaScript over the JSON API of vaelab/serve/app.py.
(() => {
  "use strict";

  const PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
                   "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"];
  const PAD = 26; // plane margin for tick labels, px
  const STEPS = 10; // images in the interpolation strip
  const $ = (id) => document.getElementById(id);

  const state = {
    info: null,
    points: null,
    z: [], // the current latent vector
    label: 0, // conditional models: the class to decode under
    drawingZ: null, // the drawing's code
    a: null,
    b: null,
    nextEnd: "a", // which end shift-click sets
  };

  // ---- talking to the server

  async function api(path, body) {
    const options = body === undefined ? {} : {
      method: "POST",
      headers: {"Content-Type": "application/json"},
      body: JSON.stringify(body),
    };
    const response = await fetch(path, options);
    const data = await response.json();
    if (!response.ok) throw new Error(data.error || response.statusText);
    return data;
  }

  function withLabel(body) {
    if (state.info.conditional) body.label = state.label;
    return body;
  }

  function setStatus(text, isError) {
    $("status").textContent = text;
    $("status").classList.toggle("error", Boolean(isError));
  }

  // One decode in flight at a time; moves made meanwhile collapse into one more request.
  const decoder = {busy: false, again: false};
  async function decodeCurrent() {
    if (decoder.busy) { decoder.again = true; return; }
    decoder.busy = true;
    try {
      do {
        decoder.again = false;
        const data = await api("/api/decode", withLabel({z: state.z.slice()}));
        $("decoded").src = data.image;
      } while (decoder.again);
      setStatus("");
    } catch (err) {
      setStatus(err.message, true);
    } finally {
      decoder.busy = false;
    }
    showZ();
  }

  function showZ() {
    const shown = state.z.slice(0, 8).map((v) => v.toFixed(2)).join(", ");
    $("z-text").textContent = `z = [${shown}${state.z.length > 8 ? ", …" : ""}]`;
  }

  // ---- the plane: scatter of test codes, markers for z, A, B and the drawing

  const plane = $("plane");
  const scatter = document.createElement("canvas"); // the static layer, drawn once

  function toPx(v, vertical) {
    const e = state.info.extent;
    const span = plane.width - 2 * PAD;
    const t = (v + e) / (2 * e);
    return vertical ? plane.height - PAD - t * span : PAD + t * span;
  }

  function fromPx(p, vertical) {
    const e = state.info.extent;
    const span = plane.width - 2 * PAD;
    const t = vertical ? (plane.height - PAD - p) / span : (p - PAD) / span;
    return Math.max(-e, Math.min(e, -e + 2 * e * t));
  }

  function color(label) {
    return label === null ? "#4a6fa5" : PALETTE[label % PALETTE.length];
  }

  function renderScatter() {
    scatter.width = plane.width;
    scatter.height = plane.height;
    const ctx = scatter.getContext("2d");
    const e = state.info.extent;
    const dims = state.info.plane.dims;
    ctx.fillStyle = "#fff";
    ctx.fillRect(0, 0, scatter.width, scatter.height);
    const tick = e > 6 ? 5 : 1;
    ctx.font = "10px system-ui, sans-serif";
    for (let v = -Math.floor(e / tick) * tick; v <= e; v += tick) {
      ctx.strokeStyle = v === 0 ? "#b9b9b2" : "#ecece8";
      ctx.beginPath();
      ctx.moveTo(toPx(v, false), PAD); ctx.lineTo(toPx(v, false), plane.height - PAD);
      if (dims.length > 1) {
        ctx.moveTo(PAD, toPx(v, true)); ctx.lineTo(plane.width - PAD, toPx(v, true));
      }
      ctx.stroke();
      ctx.fillStyle = "#8a8a90";
      ctx.fillText(String(v), toPx(v, false) - 4, plane.height - PAD + 12);
      if (dims.length > 1) ctx.fillText(String(v), 4, toPx(v, true) + 3);
    }
    ctx.fillStyle = "#333";
    ctx.fillText(`z${dims[0] + 1} →`, plane.width - PAD - 30, plane.height - 4);
    if (dims.length > 1) ctx.fillText(`z${dims[1] + 1} ↑`, 4, 12);
    const {xy, labels} = state.points;
    ctx.globalAlpha = 0.55;
    xy.forEach((p, i) => {
      ctx.fillStyle = color(labels ? labels[i] : null);
      ctx.beginPath();
      ctx.arc(toPx(p[0], false), toPx(p.length > 1 ? p[1] : 0, true), 1.8, 0, 2 * Math.PI);
      ctx.fill();
    });
    ctx.globalAlpha = 1;
  }

  function planeXY(z) {
    const [dx, dy] = state.info.plane.dims;
    return [toPx(z[dx], false), toPx(dy === undefined ? 0 : z[dy], true)];
  }

  function marker(ctx, z, draw) {
    if (!z) return;
    const [x, y] = planeXY(z);
    ctx.save();
    draw(ctx, x, y);
    ctx.restore();
  }

  function drawPlane() {
    const ctx = plane.getContext("2d");
    ctx.drawImage(scatter, 0, 0);
    ctx.lineWidth = 2;
    for (const end of ["a", "b"]) {
      marker(ctx, state[end], (c, x, y) => {
        c.fillStyle = "#111";
        c.font = "bold 14px system-ui, sans-serif";
        c.fillText(end.toUpperCase(), x - 4, y + 5);
      });
    }
    marker(ctx, state.drawingZ, (c, x, y) => {
      c.strokeStyle = "#c2185b";
      c.beginPath();
      c.moveTo(x, y - 8); c.lineTo(x + 8, y); c.lineTo(x, y + 8); c.lineTo(x - 8, y);
      c.closePath();
      c.stroke();
    });
    marker(ctx, state.z, (c, x, y) => {
      c.strokeStyle = "#000";
      c.beginPath();
      c.arc(x, y, 7, 0, 2 * Math.PI);
      c.moveTo(x - 12, y); c.lineTo(x - 4, y); c.moveTo(x + 4, y); c.lineTo(x + 12, y);
      c.moveTo(x, y - 12); c.lineTo(x, y - 4); c.moveTo(x, y + 4); c.lineTo(x, y + 12);
      c.stroke();
    });
  }

  function pointerZ(event) {
    const rect = plane.getBoundingClientRect();
    const px = (event.clientX - rect.left) * plane.width / rect.width;
    const py = (event.clientY - rect.top) * plane.height / rect.height;
    const [dx, dy] = state.info.plane.dims;
    const z = state.z.slice();
    z[dx] = fromPx(px, false);
    if (dy !== undefined) z[dy] = fromPx(py, true);
    return z;
  }

  function goTo(z) {
    state.z = z;
    syncSliders();
    drawPlane();
    decodeCurrent();
  }

  function setupPlane() {
    let dragging = false;
    plane.addEventListener("pointerdown", (event) => {
      if (event.shiftKey) { setEnd(state.nextEnd, pointerZ(event)); return; }
      dragging = true;
      plane.setPointerCapture(event.pointerId);
      goTo(pointerZ(event));
    });
    plane.addEventListener("pointermove", (event) => { if (dragging) goTo(pointerZ(event)); });
    const stop = () => { dragging = false; };
    plane.addEventListener("pointerup", stop);
    plane.addEventListener("pointercancel", stop);
  }

  function buildLegend() {
    const {labels} = state.points;
    if (!labels) return;
    const names = state.info.class_names;
    for (const label of [...new Set(labels)].sort((p, q) => p - q)) {
      const item = document.createElement("span");
      const swatch = document.createElement("span");
      swatch.className = "swatch";
      swatch.style.background = color(label);
      item.append(swatch, names && names[label] !== undefined ? names[label] : String(label));
      $("legend").append(item);
    }
  }

  // ---- sliders (latent_dim > 2) and the label picker (conditional models)

  const sliders = [];

  function buildSliders() {
    const {latent_dim: dims, extent, plane: {dims: planeDims}} = state.info;
    if (dims <= 2) return;
    $("slider-box").hidden = false;
    for (let d = 0; d < dims; d++) {
      const label = document.createElement("label");
      const axis = planeDims.indexOf(d);
      label.textContent = `z${d + 1}${axis >= 0 ? (axis === 0 ? " (x)" : " (y)") : ""}`;
      if (axis >= 0) label.className = "plane-dim";
      const input = Object.assign(document.createElement("input"), {
        type: "range", min: -extent, max: extent, step: 0.01, value: 0, id: `z${d + 1}`,
      });
      label.htmlFor = input.id;
      const value = Object.assign(document.createElement("span"), {className: "mono"});
      input.addEventListener("input", () => {
        state.z[d] = Number(input.value);
        value.textContent = state.z[d].toFixed(2);
        drawPlane();
        decodeCurrent();
      });
      $("sliders").append(label, input, value);
      sliders.push({input, value});
    }
    syncSliders();
  }

  function syncSliders() {
    sliders.forEach(({input, value}, d) => {
      input.value = state.z[d];
      value.textContent = state.z[d].toFixed(2);
    });
  }

  function buildLabels() {
    if (!state.info.conditional) return;
    $("label-picker").hidden = false;
    const names = state.info.class_names;
    for (let c = 0; c < state.info.num_classes; c++) {
      const button = document.createElement("button");
      button.type = "button";
      button.dataset.label = String(c);
      button.textContent = names && names[c] !== undefined ? names[c] : String(c);
      button.classList.toggle("chosen", c === state.label);
      button.addEventListener("click", () => chooseLabel(c));
      $("label-buttons").append(button);
    }
  }

  function chooseLabel(c) {
    state.label = c;
    for (const button of $("label-buttons").children) {
      button.classList.toggle("chosen", Number(button.dataset.label) === c);
    }
    decodeCurrent();
    if (hasDrawing()) encodeDrawing();
    interpolate();
  }

  // ---- the drawing canvas: 28 x 28 (the model's H x W) values in [0, 1], drawn large

  const drawCanvas = $("draw");
  const small = document.createElement("canvas");
  let drawing = null; // Float32Array(H * W)

  function setupDrawing() {
    const [, height, width] = state.info.image_shape;
    small.width = width;
    small.height = height;
    drawing = new Float32Array(width * height);
    let last = null;
    const at = (event) => {
      const rect = drawCanvas.getBoundingClientRect();
      return [(event.clientX - rect.left) / rect.width * width,
              (event.clientY - rect.top) / rect.height * height];
    };
    drawCanvas.addEventListener("pointerdown", (event) => {
      drawCanvas.setPointerCapture(event.pointerId);
      last = at(event);
      stroke(last, last);
    });
    drawCanvas.addEventListener("pointermove", (event) => {
      if (!last) return;
      const next = at(event);
      stroke(last, next);
      last = next;
    });
    const finish = () => {
      if (!last) return;
      last = null;
      encodeDrawing();
    };
    drawCanvas.addEventListener("pointerup", finish);
    drawCanvas.addEventListener("pointercancel", finish);
    $("clear").addEventListener("click", clearDrawing);
    $("use-drawing").addEventListener("click", () => goTo(state.drawingZ.slice()));
    renderDrawing();
  }

  // A soft round brush about 3 pixels wide, like the pen strokes of MNIST digits.
  function stamp(cx, cy) {
    const width = small.width;
    for (let y = Math.floor(cy - 2); y <= Math.ceil(cy + 2); y++) {
      for (let x = Math.floor(cx - 2); x <= Math.ceil(cx + 2); x++) {
        if (x < 0 || y < 0 || x >= width || y >= small.height) continue;
        const d = Math.hypot(x + 0.5 - cx, y + 0.5 - cy);
        const v = Math.max(0, Math.min(1, 1.8 - d));
        drawing[y * width + x] = Math.max(drawing[y * width + x], v);
      }
    }
  }

  function stroke(from, to) {
    const n = Math.max(1, Math.ceil(Math.hypot(to[0] - from[0], to[1] - from[1]) * 4));
    for (let i = 0; i <= n; i++) {
      stamp(from[0] + (to[0] - from[0]) * i / n, from[1] + (to[1] - from[1]) * i / n);
    }
    renderDrawing();
  }

  function renderDrawing() {
    const ctx = small.getContext("2d");
    const image = ctx.createImageData(small.width, small.height);
    drawing.forEach((v, i) => {
      const g = Math.round(v * 255);
      image.data.set([g, g, g, 255], 4 * i);
    });
    ctx.putImageData(image, 0, 0);
    const big = drawCanvas.getContext("2d");
    big.imageSmoothingEnabled = false;
    big.drawImage(small, 0, 0, drawCanvas.width, drawCanvas.height);
  }

  function hasDrawing() {
    return drawing !== null && drawing.some((v) => v > 0);
  }

  function clearDrawing() {
    drawing.fill(0);
    renderDrawing();
    state.drawingZ = null;
    $("recon").removeAttribute("src");
    $("use-drawing").disabled = true;
    drawPlane();
  }

  async function encodeDrawing() {
    const channels = state.info.image_shape[0];
    const plane1 = Array.from(drawing, (v) => Math.round(v * 1000) / 1000);
    const pixels = [].concat(...Array(channels).fill(plane1)); // gray on every channel
    try {
      const data = await api("/api/encode", withLabel({pixels}));
      const limit = state.info.z_limit;
      state.drawingZ = data.z.map((v) => Math.max(-limit, Math.min(limit, v)));
      $("recon").src = data.image;
      $("use-drawing").disabled = false;
      drawPlane();
    } catch (err) {
      setStatus(err.message, true);
    }
  }

  // ---- interpolation between A and B

  function setEnd(end, z) {
    state[end] = z;
    state.nextEnd = end === "a" ? "b" : "a";
    const ready = state.a && state.b;
    $("ab-note").textContent = ready ? `${STEPS} images from A to B, decoded at evenly spaced z.`
      : `${end.toUpperCase()} set; now set ${state.nextEnd.toUpperCase()}.`;
    drawPlane();
    interpolate();
  }

  async function interpolate() {
    if (!state.a || !state.b) return;
    try {
      const data = await api("/api/interpolate",
                             withLabel({a: state.a, b: state.b, steps: STEPS}));
      const images = data.images.map((src, i) => {
        const img = Object.assign(new Image(84, 84), {src, className: "digit"});
        const t = i / (data.images.length - 1);
        img.title = `t = ${t.toFixed(2)}: click to explore from here`;
        img.addEventListener("click", () => {
          goTo(state.a.map((v, d) => v + t * (state.b[d] - v)));
        });
        return img;
      });
      $("strip").replaceChildren(...images);
    } catch (err) {
      setStatus(err.message, true);
    }
  }

  // ---- the run's facts

  function buildFacts() {
    const {facts, plane: {reason}, latent_dim: dims} = state.info;
    for (const [name, text] of facts) {
      const row = document.createElement("tr");
      const th = Object.assign(document.createElement("th"), {textContent: name});
      const td = Object.assign(document.createElement("td"), {textContent: text});
      row.append(th, td);
      $("facts").append(row);
    }
    const get = (key) => (facts.find(([name]) => name === key) || [])[1];
    const parts = [get("model") || state.info.model, get("dataset"), `latent size ${dims}`];
    $("subtitle").textContent = parts.filter(Boolean).join(" · ");
    $("plane-note").textContent = dims > 2
      ? `The plane shows ${reason}; the sliders set the other dimensions.`
      : `The plane shows ${reason}.`;
  }

  async function start() {
    state.info = await api("/api/info");
    state.points = await api("/api/points");
    state.z = new Array(state.info.latent_dim).fill(0);
    buildFacts();
    buildLegend();
    buildLabels();
    buildSliders();
    renderScatter();
    drawPlane();
    setupPlane();
    setupDrawing();
    $("set-a").addEventListener("click", () => setEnd("a", state.z.slice()));
    $("set-b").addEventListener("click", () => setEnd("b", state.z.slice()));
    await decodeCurrent();
    document.body.dataset.ready = "true";
  }

  start().catch((err) => setStatus(`could not start: ${err.message}`, true));
})();
