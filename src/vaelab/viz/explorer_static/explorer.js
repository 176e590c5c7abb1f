// vaelab's server-free latent explorer (vaelab/viz/explorer.py writes the page).
// The decoder (and the encoder, where embedded) of a trained model runs here in plain
// JavaScript, in float64, from the weights embedded in the page: no server, no network.
// One runtime serves every explorer on a page; each mounts on its own <div>.
(function () {
  "use strict";
  if (window.VaelabExplorer) return;

  const PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
                   "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"];
  const STEPS = 10; // images in the interpolation strip
  const PLANE_PX = 400; // the plane canvas, px
  const DECODED_PX = 224; // the decoded image: 28 x 28 at 8x
  const STYLE = "__VAELAB_EXPLORER_CSS__";

  // ---- the weights: one base64 string per tensor, little-endian float16 or float32

  function bytesOf(b64) {
    const text = atob(b64);
    const bytes = new Uint8Array(text.length);
    for (let i = 0; i < text.length; i++) bytes[i] = text.charCodeAt(i);
    return bytes;
  }

  function halfToFloat(h) {
    const sign = h & 0x8000 ? -1 : 1;
    const exponent = (h >> 10) & 0x1f;
    const fraction = h & 0x3ff;
    if (exponent === 0) return sign * fraction * 2 ** -24; // subnormal
    if (exponent === 31) return fraction ? NaN : sign * Infinity;
    return sign * (1 + fraction / 1024) * 2 ** (exponent - 15);
  }

  function readTensor(tensor) {
    const view = new DataView(bytesOf(tensor.data).buffer);
    const half = tensor.dtype === "float16";
    const out = new Float32Array(view.byteLength / (half ? 2 : 4));
    for (let i = 0; i < out.length; i++) {
      out[i] = half ? halfToFloat(view.getUint16(2 * i, true)) : view.getFloat32(4 * i, true);
    }
    return out;
  }

  // ---- the nets: each op maps a tensor {data: Float64Array, shape} to the next one, with its
  // weight w and bias b (null: none). Layouts follow PyTorch: Linear weight (out, in); Conv2d
  // (out, in, k, k); ConvTranspose2d (in, out, k, k); feature maps (C, H, W).

  const sigmoid = (v) => 1 / (1 + Math.exp(-v));

  function affine(w, b, x, nIn, nOut) {
    const y = new Float64Array(nOut);
    for (let o = 0; o < nOut; o++) {
      let s = b ? b[o] : 0;
      const row = o * nIn;
      for (let i = 0; i < nIn; i++) s += w[row + i] * x[i];
      y[o] = s;
    }
    return y;
  }

  function map(t, f) {
    return {data: t.data.map(f), shape: t.shape};
  }

  const OPS = {
    linear: (op, t, c, w, b) => ({data: affine(w, b, t.data, op.in, op.out), shape: [op.out]}),
    gated(op, t, c, w, b) {
      // GatedDense: one linear layer to 2 * out, value * sigmoid(gate)
      const h = affine(w, b, t.data, op.in, 2 * op.out);
      const y = new Float64Array(op.out);
      for (let i = 0; i < op.out; i++) y[i] = h[i] * sigmoid(h[op.out + i]);
      return {data: y, shape: [op.out]};
    },
    relu: (op, t) => map(t, (v) => (v > 0 ? v : 0)),
    tanh: (op, t) => map(t, Math.tanh),
    concat(op, t, c) {
      const y = new Float64Array(t.data.length + c.length);
      y.set(t.data);
      y.set(c, t.data.length);
      return {data: y, shape: [y.length]};
    },
    film(op, t, c, w, b) {
      // FiLM: h * (1 + gamma(c)) + beta(c), per unit, or per channel of a feature map
      const f = op.features;
      const gb = affine(w, b, c, op.cond, 2 * f);
      const per = t.data.length / f;
      const y = new Float64Array(t.data.length);
      for (let i = 0; i < t.data.length; i++) {
        const k = Math.floor(i / per);
        y[i] = t.data[i] + t.data[i] * gb[k] + gb[f + k];
      }
      return {data: y, shape: t.shape};
    },
    reshape: (op, t) => ({data: t.data, shape: op.shape}),
    flatten: (op, t) => ({data: t.data, shape: [t.data.length]}),
    conv(op, t, c, w, b) {
      const [, H, Wd] = t.shape;
      const {k, stride: s, pad: p} = op;
      const Ho = Math.floor((H + 2 * p - k) / s) + 1;
      const Wo = Math.floor((Wd + 2 * p - k) / s) + 1;
      const y = new Float64Array(op.out * Ho * Wo);
      for (let o = 0; o < op.out; o++) {
        for (let oy = 0; oy < Ho; oy++) {
          for (let ox = 0; ox < Wo; ox++) {
            let sum = b ? b[o] : 0;
            for (let i = 0; i < op.in; i++) {
              for (let ky = 0; ky < k; ky++) {
                const iy = oy * s - p + ky;
                if (iy < 0 || iy >= H) continue;
                for (let kx = 0; kx < k; kx++) {
                  const ix = ox * s - p + kx;
                  if (ix < 0 || ix >= Wd) continue;
                  sum += w[((o * op.in + i) * k + ky) * k + kx] * t.data[(i * H + iy) * Wd + ix];
                }
              }
            }
            y[(o * Ho + oy) * Wo + ox] = sum;
          }
        }
      }
      return {data: y, shape: [op.out, Ho, Wo]};
    },
    deconv(op, t, c, w, b) {
      // ConvTranspose2d as a scatter: input pixel (iy, ix) adds to output (iy*s - p + ky, ...)
      const [, H, Wd] = t.shape;
      const {k, stride: s, pad: p} = op;
      const Ho = (H - 1) * s - 2 * p + k + op.outpad;
      const Wo = (Wd - 1) * s - 2 * p + k + op.outpad;
      const y = new Float64Array(op.out * Ho * Wo);
      for (let o = 0; b && o < op.out; o++) y.fill(b[o], o * Ho * Wo, (o + 1) * Ho * Wo);
      for (let i = 0; i < op.in; i++) {
        for (let iy = 0; iy < H; iy++) {
          for (let ix = 0; ix < Wd; ix++) {
            const v = t.data[(i * H + iy) * Wd + ix];
            if (v === 0) continue;
            for (let o = 0; o < op.out; o++) {
              const w0 = (i * op.out + o) * k * k;
              for (let ky = 0; ky < k; ky++) {
                const oy = iy * s - p + ky;
                if (oy < 0 || oy >= Ho) continue;
                for (let kx = 0; kx < k; kx++) {
                  const ox = ix * s - p + kx;
                  if (ox < 0 || ox >= Wo) continue;
                  y[(o * Ho + oy) * Wo + ox] += w[w0 + ky * k + kx] * v;
                }
              }
            }
          }
        }
      }
      return {data: y, shape: [op.out, Ho, Wo]};
    },
  };

  function runNet(ops, W, data, shape, c) {
    let t = {data: Float64Array.from(data), shape};
    for (const op of ops) {
      const [w, b] = [op.w, op.b].map((i) => (i === undefined || i < 0 ? null : W[i]));
      t = OPS[op.op](op, t, c, w, b);
    }
    return t.data;
  }

  // The likelihood's mean from the decoder's raw outputs (vaelab/distributions.py).
  const HEADS = {
    sigmoid,
    "continuous-bernoulli": (l) =>
      (Math.abs(l) < 1e-2 ? 0.5 + l / 12 : 1 / -Math.expm1(-l) - 1 / l),
  };

  // ---- a model: decode(z, label) -> the mean image (C*H*W), encode(x, label) -> the mean z

  function makeModel(spec) {
    const W = spec.tensors.map(readTensor);
    const k = spec.num_classes;
    const onehot = (label) => {
      if (!k) return null;
      const c = new Float64Array(k);
      c[label] = 1;
      return c;
    };
    const head = HEADS[spec.decoder.head];
    return {
      decode: (z, label) => runNet(spec.decoder.ops, W, z, [z.length], onehot(label)).map(head),
      encode: spec.encoder && ((x, label) => {
        const out = runNet(spec.encoder.ops, W, x, spec.image_shape, onehot(label));
        return Array.from(out.subarray(0, spec.latent_dim));
      }),
    };
  }

  // ---- small DOM helpers

  function el(tag, props, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(props || {})) {
      if (key === "class") node.className = value;
      else if (key === "text") node.textContent = value;
      else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
      else node.setAttribute(key, value);
    }
    node.append(...children.filter((child) => child !== null && child !== undefined));
    return node;
  }

  function format(template, values) {
    return template.replace(/\{(\w+)\}/g, (all, key) => (key in values ? values[key] : all));
  }

  function paint(canvas, pixels, shape) {
    // pixels (C, H, W) in [0, 1]: gray for one channel, RGB for three
    const [C, H, Wd] = shape;
    const ctx = canvas.getContext("2d");
    const image = ctx.createImageData(Wd, H);
    for (let p = 0; p < H * Wd; p++) {
      for (let ch = 0; ch < 3; ch++) {
        const v = pixels[(C === 3 ? ch : 0) * H * Wd + p];
        image.data[4 * p + ch] = Math.round(255 * Math.min(1, Math.max(0, v)));
      }
      image.data[4 * p + 3] = 255;
    }
    ctx.putImageData(image, 0, 0);
  }

  function injectStyle() {
    if (document.getElementById("vaelab-explorer-style")) return;
    document.head.append(el("style", {id: "vaelab-explorer-style"}, STYLE));
  }

  // ---- one explorer

  function mount(root, spec) {
    injectStyle();
    const T = spec.text;
    const model = makeModel(spec);
    const [C, H, Wd] = spec.image_shape;
    const scale = Math.max(1, Math.floor(DECODED_PX / Math.max(H, Wd)));
    const [dx, dy] = spec.plane;
    const state = {
      z: spec.center.slice(),
      label: 0,
      pixels: null,
      a: null,
      b: null,
      nextEnd: "a",
      drawingZ: null,
      strip: [],
      decodes: 0,
    };
    const color = (label) => (label === null ? "#4a6fa5" : PALETTE[label % PALETTE.length]);
    const className = (c) => (spec.class_names ? spec.class_names[c] : String(c));
    const status = el("p", {class: "vxe-status", role: "status", "aria-live": "polite"});

    // the plane: test codes as dots, markers for z, A, B and the drawing's code
    const plane = el("canvas", {
      class: "vxe-plane", width: PLANE_PX, height: PLANE_PX, tabindex: "0",
      role: "application", "aria-label": format(T.plane_label, {x: dx + 1, y: dy + 1}),
    });
    const scatter = document.createElement("canvas");
    const toPx = (v, d, vertical) => {
      const t = (v - spec.lo[d]) / (spec.hi[d] - spec.lo[d]);
      return vertical ? PLANE_PX * (1 - t) : PLANE_PX * t;
    };
    const fromPx = (px, d, vertical) => {
      const t = vertical ? 1 - px / PLANE_PX : px / PLANE_PX;
      return Math.min(spec.hi[d], Math.max(spec.lo[d], spec.lo[d] + t * (spec.hi[d] - spec.lo[d])));
    };
    const at = (z) => [toPx(z[dx], dx, false), toPx(z[dy], dy, true)];

    function renderScatter() {
      scatter.width = scatter.height = PLANE_PX;
      const ctx = scatter.getContext("2d");
      ctx.fillStyle = "#fff";
      ctx.fillRect(0, 0, PLANE_PX, PLANE_PX);
      ctx.strokeStyle = "#c9c9c2";
      ctx.beginPath();
      const [x0, y0] = at(spec.lo.map((lo, d) => Math.min(Math.max(0, lo), spec.hi[d])));
      ctx.moveTo(x0, 0); ctx.lineTo(x0, PLANE_PX); ctx.moveTo(0, y0); ctx.lineTo(PLANE_PX, y0);
      ctx.stroke();
      ctx.globalAlpha = 0.6;
      const {xy, labels} = spec.points;
      for (let i = 0; i < xy.length; i++) {
        ctx.fillStyle = color(labels ? labels[i] : null);
        ctx.beginPath();
        ctx.arc(toPx(xy[i][0], dx, false), toPx(xy[i][1], dy, true), 2, 0, 2 * Math.PI);
        ctx.fill();
      }
      ctx.globalAlpha = 1;
      ctx.fillStyle = "#333";
      ctx.font = "12px system-ui, sans-serif";
      ctx.fillText(`z${dx + 1} →`, PLANE_PX - 42, PLANE_PX - 6);
      ctx.fillText(`z${dy + 1} ↑`, 6, 14);
    }

    function drawPlane() {
      const ctx = plane.getContext("2d");
      ctx.drawImage(scatter, 0, 0);
      ctx.lineWidth = 2;
      ctx.font = "bold 15px system-ui, sans-serif";
      for (const end of ["a", "b"]) {
        if (!state[end]) continue;
        const [x, y] = at(state[end]);
        ctx.fillStyle = "#111";
        ctx.fillText(end.toUpperCase(), x - 5, y + 5);
      }
      if (state.drawingZ) {
        const [x, y] = at(state.drawingZ);
        ctx.strokeStyle = "#c2185b";
        ctx.beginPath();
        ctx.moveTo(x, y - 8); ctx.lineTo(x + 8, y); ctx.lineTo(x, y + 8); ctx.lineTo(x - 8, y);
        ctx.closePath();
        ctx.stroke();
      }
      const [x, y] = at(state.z);
      ctx.strokeStyle = "#000";
      ctx.beginPath();
      ctx.arc(x, y, 7, 0, 2 * Math.PI);
      for (const [u, v] of [[-1, 0], [1, 0], [0, -1], [0, 1]]) {
        ctx.moveTo(x + 4 * u, y + 4 * v); ctx.lineTo(x + 12 * u, y + 12 * v);
      }
      ctx.stroke();
    }

    // the decoded image at z: redrawn once per animation frame however fast z moves
    const decoded = el("canvas", {
      class: "vxe-image", width: Wd, height: H, role: "img", "aria-label": T.decoded_label,
      style: `width:${Wd * scale}px;height:${H * scale}px`,
    });
    const zText = el("p", {class: "vxe-mono"});
    let frame = 0;
    function render() {
      frame = 0;
      state.pixels = model.decode(state.z, state.label);
      paint(decoded, state.pixels, spec.image_shape);
      drawPlane();
      const shown = state.z.slice(0, 6).map((v) => v.toFixed(2)).join(", ");
      zText.textContent = `z = [${shown}${state.z.length > 6 ? ", …" : ""}]`;
      root.dataset.z = JSON.stringify(state.z);
      root.dataset.decodes = String(++state.decodes);
    }
    const schedule = () => { if (!frame) frame = requestAnimationFrame(render); };

    const sliders = [];
    function goTo(z) {
      state.z = z.slice();
      sliders.forEach(({input, out, d}) => { input.value = state.z[d]; out.value = state.z[d].toFixed(2); });
      schedule();
    }

    function setupPlane() {
      let dragging = false;
      const pointerZ = (event) => {
        const rect = plane.getBoundingClientRect();
        const z = state.z.slice();
        z[dx] = fromPx((event.clientX - rect.left) * PLANE_PX / rect.width, dx, false);
        z[dy] = fromPx((event.clientY - rect.top) * PLANE_PX / rect.height, dy, true);
        return z;
      };
      plane.addEventListener("pointerdown", (event) => {
        plane.focus();
        if (event.shiftKey) { setEnd(state.nextEnd, pointerZ(event)); return; }
        dragging = true;
        plane.setPointerCapture(event.pointerId);
        goTo(pointerZ(event));
      });
      plane.addEventListener("pointermove", (event) => { if (dragging) goTo(pointerZ(event)); });
      const stop = () => { dragging = false; };
      plane.addEventListener("pointerup", stop);
      plane.addEventListener("pointercancel", stop);
      const moves = {ArrowLeft: [-1, 0], ArrowRight: [1, 0], ArrowUp: [0, 1], ArrowDown: [0, -1]};
      plane.addEventListener("keydown", (event) => {
        const key = event.key.toLowerCase();
        if (key === "a" || key === "b") {
          setEnd(key, state.z.slice());
        } else if (event.key in moves) {
          const [u, v] = moves[event.key];
          const step = event.shiftKey ? 0.1 : 0.02;
          const z = state.z.slice();
          z[dx] = Math.min(spec.hi[dx], Math.max(spec.lo[dx], z[dx] + u * step * (spec.hi[dx] - spec.lo[dx])));
          z[dy] = Math.min(spec.hi[dy], Math.max(spec.lo[dy], z[dy] + v * step * (spec.hi[dy] - spec.lo[dy])));
          goTo(z);
        } else {
          return;
        }
        event.preventDefault();
      });
    }

    function legend() {
      const {labels} = spec.points;
      if (!labels) return null;
      const seen = [...new Set(labels)].sort((p, q) => p - q);
      return el("div", {class: "vxe-legend"}, ...seen.map((c) =>
        el("span", {}, el("span", {class: "vxe-swatch", style: `background:${color(c)}`}),
           className(c))));
    }

    // the other latent dimensions: one slider each (the plane's two move with the plane)
    function sliderBox() {
      const rows = [];
      for (let d = 0; d < spec.latent_dim; d++) {
        if (d === dx || d === dy) continue;
        const name = `z${d + 1}`;
        const input = el("input", {
          type: "range", min: spec.lo[d], max: spec.hi[d], step: "any", "aria-label": name,
        });
        input.value = state.z[d];
        const out = el("output", {class: "vxe-mono"});
        out.value = state.z[d].toFixed(2);
        input.addEventListener("input", () => {
          state.z[d] = Number(input.value);
          out.value = state.z[d].toFixed(2);
          schedule();
        });
        sliders.push({input, out, d});
        rows.push(el("label", {class: "vxe-slider"}, el("span", {text: name}), input, out));
      }
      if (!rows.length) return null;
      return el("div", {}, el("h4", {text: T.sliders}), el("div", {class: "vxe-sliders"}, ...rows));
    }

    // conditional models: decode the same z under another label
    const labelButtons = [];
    function labelPicker() {
      if (!spec.num_classes) return null;
      for (let c = 0; c < spec.num_classes; c++) {
        labelButtons.push(el("button", {
          type: "button", "data-label": String(c), "aria-pressed": String(c === state.label),
          onclick: () => chooseLabel(c),
        }, className(c)));
      }
      return el("div", {role: "group", "aria-label": T.label},
        el("h4", {text: T.label + " "}, el("span", {class: "vxe-note", text: T.label_note})),
        el("div", {class: "vxe-buttons vxe-labels"}, ...labelButtons));
    }

    function chooseLabel(c) {
      state.label = c;
      labelButtons.forEach((b, i) => b.setAttribute("aria-pressed", String(i === c)));
      schedule();
      encodeDrawing();
      interpolate();
    }

    // interpolation between A and B: STEPS images at evenly spaced z
    const abNote = el("span", {class: "vxe-note", text: T.ab_none});
    const strip = el("div", {class: "vxe-strip"});
    function setEnd(end, z) {
      state[end] = z;
      state.nextEnd = end === "a" ? "b" : "a";
      abNote.textContent = state.a && state.b ? format(T.ab_both, {n: STEPS})
        : format(T.ab_one, {end: end.toUpperCase(), next: state.nextEnd.toUpperCase()});
      drawPlane();
      interpolate();
    }

    function interpolate() {
      if (!state.a || !state.b) return;
      state.strip = [];
      const cells = [];
      for (let i = 0; i < STEPS; i++) {
        const t = i / (STEPS - 1);
        const z = state.a.map((v, d) => v + t * (state.b[d] - v));
        const pixels = model.decode(z, state.label);
        state.strip.push({z, pixels: Array.from(pixels)});
        const canvas = el("canvas", {width: Wd, height: H, class: "vxe-image",
                                     style: `width:${Wd * 3}px;height:${H * 3}px`});
        paint(canvas, pixels, spec.image_shape);
        cells.push(el("button", {
          type: "button", class: "vxe-cell",
          "aria-label": format(T.step_label, {i: i + 1, n: STEPS}), onclick: () => goTo(z),
        }, canvas));
      }
      strip.replaceChildren(...cells);
      root.dataset.strip = String(cells.length);
    }

    // draw-to-encode (models whose encoder is embedded, one channel): an H x W grid in [0, 1]
    const grid = new Float64Array(H * Wd);
    const pad = el("canvas", {
      class: "vxe-draw", width: Wd * scale, height: H * scale, tabindex: "0",
      role: "application", "aria-label": T.draw_label,
    });
    const recon = el("canvas", {
      class: "vxe-image", width: Wd, height: H, role: "img", "aria-label": T.recon,
      style: `width:${Wd * 5}px;height:${H * 5}px`,
    });
    const useDrawing = el("button", {
      type: "button", disabled: "", onclick: () => goTo(state.drawingZ),
    }, T.use_drawing);
    const pen = {down: false, at: [Wd / 2, H / 2]};

    function stamp(cx, cy) { // a soft round brush about 3 pixels wide, like MNIST's strokes
      for (let y = Math.floor(cy - 2); y <= Math.ceil(cy + 2); y++) {
        for (let x = Math.floor(cx - 2); x <= Math.ceil(cx + 2); x++) {
          if (x < 0 || y < 0 || x >= Wd || y >= H) continue;
          const v = Math.max(0, Math.min(1, 1.8 - Math.hypot(x + 0.5 - cx, y + 0.5 - cy)));
          grid[y * Wd + x] = Math.max(grid[y * Wd + x], v);
        }
      }
    }

    function stroke(from, to) {
      const n = Math.max(1, Math.ceil(Math.hypot(to[0] - from[0], to[1] - from[1]) * 4));
      for (let i = 0; i <= n; i++) {
        stamp(from[0] + (to[0] - from[0]) * i / n, from[1] + (to[1] - from[1]) * i / n);
      }
      renderPad();
    }

    function renderPad() {
      const ctx = pad.getContext("2d");
      ctx.fillStyle = "#000";
      ctx.fillRect(0, 0, pad.width, pad.height);
      for (let p = 0; p < H * Wd; p++) {
        if (!grid[p]) continue;
        const g = Math.round(255 * grid[p]);
        ctx.fillStyle = `rgb(${g},${g},${g})`;
        ctx.fillRect((p % Wd) * scale, Math.floor(p / Wd) * scale, scale, scale);
      }
      if (document.activeElement === pad) { // the keyboard pen
        ctx.strokeStyle = pen.down ? "#e91e63" : "#4fc3f7";
        ctx.lineWidth = 2;
        ctx.strokeRect((pen.at[0] - 1.5) * scale, (pen.at[1] - 1.5) * scale, 3 * scale, 3 * scale);
      }
    }

    function encodeDrawing() {
      if (!model.encode || !grid.some((v) => v > 0)) return;
      const z = model.encode(grid, state.label);
      state.drawingZ = z.map((v, d) => Math.min(spec.hi[d], Math.max(spec.lo[d], v)));
      paint(recon, model.decode(state.drawingZ, state.label), spec.image_shape);
      useDrawing.disabled = false;
      root.dataset.encodes = String(Number(root.dataset.encodes || 0) + 1);
      drawPlane();
    }

    function clearDrawing() {
      grid.fill(0);
      state.drawingZ = null;
      useDrawing.disabled = true;
      recon.getContext("2d").clearRect(0, 0, Wd, H);
      renderPad();
      drawPlane();
    }

    function setupPad() {
      let last = null;
      const cell = (event) => {
        const rect = pad.getBoundingClientRect();
        return [(event.clientX - rect.left) / rect.width * Wd,
                (event.clientY - rect.top) / rect.height * H];
      };
      pad.addEventListener("pointerdown", (event) => {
        pad.setPointerCapture(event.pointerId);
        last = cell(event);
        stroke(last, last);
      });
      pad.addEventListener("pointermove", (event) => {
        if (!last) return;
        const next = cell(event);
        stroke(last, next);
        last = next;
      });
      const finish = () => { if (last) { last = null; encodeDrawing(); } };
      pad.addEventListener("pointerup", finish);
      pad.addEventListener("pointercancel", finish);
      const moves = {ArrowLeft: [-1, 0], ArrowRight: [1, 0], ArrowUp: [0, -1], ArrowDown: [0, 1]};
      pad.addEventListener("keydown", (event) => {
        if (event.key in moves) {
          const from = pen.at.slice();
          const [u, v] = moves[event.key];
          pen.at = [Math.min(Wd - 1, Math.max(0, pen.at[0] + u)),
                    Math.min(H - 1, Math.max(0, pen.at[1] + v))];
          if (pen.down) { stroke(from, pen.at); encodeDrawing(); }
        } else if (event.key === " ") {
          pen.down = !pen.down;
          if (pen.down) { stroke(pen.at, pen.at); encodeDrawing(); }
        } else if (event.key === "Enter" && state.drawingZ) {
          goTo(state.drawingZ);
        } else {
          return;
        }
        renderPad();
        event.preventDefault();
      });
      pad.addEventListener("focus", renderPad);
      pad.addEventListener("blur", renderPad);
      renderPad();
    }

    function drawPanel() {
      if (!model.encode || C !== 1) return null;
      setupPad();
      return el("section", {class: "vxe-panel"},
        el("h3", {text: T.draw}), pad,
        el("div", {class: "vxe-buttons"},
          el("button", {type: "button", onclick: clearDrawing}, T.clear), useDrawing),
        el("h4", {text: T.recon}), recon,
        el("p", {class: "vxe-note", text: T.draw_hint}));
    }

    renderScatter();
    setupPlane();
    const parts = [
      spec.title ? el("h3", {class: "vxe-title", text: spec.title}) : null,
      el("p", {class: "vxe-note vxe-facts", text: spec.facts}),
      el("div", {class: "vxe-grid"},
        el("section", {class: "vxe-panel"},
          el("h3", {text: T.plane}), plane, legend(),
          el("p", {class: "vxe-note", text: T.plane_hint})),
        el("section", {class: "vxe-panel vxe-decoded"},
          el("h3", {text: T.decoded}), decoded, zText, labelPicker(), sliderBox()),
        drawPanel(),
        el("section", {class: "vxe-panel vxe-wide"},
          el("h3", {text: T.interp}),
          el("div", {class: "vxe-buttons"},
            el("button", {type: "button", onclick: () => setEnd("a", state.z.slice())}, T.set_a),
            el("button", {type: "button", onclick: () => setEnd("b", state.z.slice())}, T.set_b),
            abNote),
          strip)),
      status,
    ];
    root.replaceChildren(...parts.filter(Boolean));

    // what tests (and curious readers) can ask: the values behind the canvases
    root.vaelab = {
      state: () => ({z: state.z.slice(), label: state.label, pixels: Array.from(state.pixels),
                     a: state.a, b: state.b, strip: state.strip, drawingZ: state.drawingZ,
                     drawing: Array.from(grid)}),
      decode: (z, label) => Array.from(model.decode(z, label || 0)),
      encode: model.encode ? (x, label) => model.encode(x, label || 0) : null,
      goTo,
    };
    render();
    root.dataset.ready = "true";
  }

  function mountSafely(root, spec) {
    try {
      mount(root, spec);
    } catch (err) {
      root.textContent = `${spec.text.failed} ${err.message}`;
      throw err;
    }
  }

  window.VaelabExplorer = {mount: mountSafely};
})();
