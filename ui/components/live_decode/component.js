// The live decode view: both maps with one shared cursor, both decodes under them, redrawn on
// every pointer move from the decoders in decoder.js. Nothing goes to the server while the
// pointer glides; a click sends the map point back (setTriggerValue "click") as the old path did.
//
// Streamlit calls this function again on every rerun (with the same data when nothing changed);
// the view and the parsed decoders live in a page-wide store, keyed by their content ids, so a
// rerun costs a string comparison. The weights come once: a decoder neither in this page nor in
// the browser's IndexedDB (cache.js) is asked for with the trigger "need" [ids], and the server
// sends those weights in the data of that one run only.

const STORE = (globalThis.__latentExplorerLive ??= {
  decoders: new Map(), // decoder id (sha256 of its payload) -> parsed decoder
  asked: new Map(), // decoder id -> when this page last asked the server for it
  views: new WeakMap(), // the component's root -> its view
  stats: { decodeMs: [], drawnMs: [], paintedMs: [], eventTs: [], moves: 0 }, // read by bench/live_decode.py
  last: null, // the last glide point: {x, y, codes: {kind: [...]}, outputs: {kind: [...]}}
});
const MAX_STATS = 20000;
const ASK_AGAIN_MS = 5000; // a request answered by a run of another map or pair is repeated

function record(list, value) {
  if (list.length >= MAX_STATS) list.shift();
  list.push(value);
}

// weights sent in this run's data: parse them once, keep them in the page and in the browser
function takeWeights(weights) {
  for (const [id, payload] of Object.entries(weights || {})) {
    if (STORE.decoders.has(id)) continue;
    const decoder = liveParseDecoder(payload);
    STORE.decoders.set(id, decoder);
    liveCachePut(id, decoder);
  }
}

// every decoder of the view from the page, else the browser's cache, else ask the server once
async function findDecoders(view) {
  const missing = [];
  for (const k of view.kinds) {
    if (STORE.decoders.has(k.id)) continue;
    const cached = await liveCacheGet(k.id);
    if (cached) STORE.decoders.set(k.id, cached);
    else if (performance.now() - (STORE.asked.get(k.id) ?? -1e9) > ASK_AGAIN_MS) missing.push(k.id);
  }
  view.attach();
  if (missing.length && view.send) {
    for (const id of missing) STORE.asked.set(id, performance.now());
    view.send("need", missing);
  }
}

function buildView(root, data) {
  const panels = root.querySelector(".live-panels");
  const status = root.querySelector(".live-status");
  panels.replaceChildren();
  const geo = data.canvas; // ui/maps.py MapCanvas: a square plot box inside fixed margins
  const [x0, x1] = geo.xlim, [y0, y1] = geo.ylim;
  const kinds = data.kinds.map((kind) => {
    const panel = document.createElement("div");
    panel.className = "live-panel";
    panel.dataset.kind = kind;
    panel.innerHTML = `<div class="live-title"></div><div class="live-map"><img alt=""><canvas class="live-cross"></canvas></div>`;
    panel.querySelector(".live-title").textContent = data.titles[kind];
    panel.querySelector("img").src = data.maps[kind];
    const cross = panel.querySelector(".live-cross");
    cross.width = geo.width;
    cross.height = geo.height;
    const { id, height, width } = data.decoders[kind];
    const box = document.createElement("div");
    box.className = "live-out";
    box.dataset.kind = kind;
    box.innerHTML = `<div class="live-title"></div><canvas class="live-image"></canvas><div class="live-caption"></div>`;
    box.querySelector(".live-title").textContent = data.labels[kind] + " decodes";
    const out = box.querySelector(".live-image");
    out.width = width;
    out.height = height;
    return { kind, id, panel, box, map: panel.querySelector(".live-map"), cross, crossCtx: cross.getContext("2d"),
             out, outCtx: out.getContext("2d"), caption: box.querySelector(".live-caption"), decoder: null,
             inverse: data.inverse[kind], code: new Float32Array(data.inverse[kind].offset.length),
             frame: new ImageData(width, height), color: data.colors[kind] };
  });
  // the decodes side by side between the maps: AE map | AE decode | VAE decode | VAE map
  const order = kinds.length === 2 ? [kinds[0].panel, kinds[0].box, kinds[1].box, kinds[1].panel]
    : kinds.flatMap((k) => [k.panel, k.box]);
  panels.classList.toggle("live-two", kinds.length === 2);
  panels.replaceChildren(...order);
  const view = { id: data.id, send: null, kinds, listeners: [], ready: false, busy: false, pending: null,
                 sawRaw: false };
  view.attach = () => { // the decoders found so far; the view glides once all are there
    for (const k of kinds) k.decoder = STORE.decoders.get(k.id) || null;
    view.ready = kinds.every((k) => k.decoder);
    status.textContent = view.ready ? data.status : "Loading the decoders' weights (once: your browser keeps them)…";
  };

  // pointer -> pixel of the map image as drawn (its own resolution) -> map point, or null
  function mapPoint(event, target) {
    const rect = target.getBoundingClientRect();
    const px = (event.clientX - rect.left) * (geo.width / rect.width);
    const py = (event.clientY - rect.top) * (geo.height / rect.height);
    if (px < geo.left || px > geo.left + geo.size || py < geo.top || py > geo.top + geo.size) return null;
    return { px, py, x: x0 + ((px - geo.left) / geo.size) * (x1 - x0), y: y1 - ((py - geo.top) / geo.size) * (y1 - y0) };
  }

  function drawCross(k, px, py) {
    const g = k.crossCtx;
    g.clearRect(0, 0, geo.width, geo.height);
    if (px === null) return;
    g.lineWidth = 3; g.strokeStyle = "rgba(255,255,255,0.9)";
    g.beginPath(); g.moveTo(geo.left, py); g.lineTo(geo.left + geo.size, py);
    g.moveTo(px, geo.top); g.lineTo(px, geo.top + geo.size); g.stroke();
    g.lineWidth = 1.5; g.strokeStyle = k.color;
    g.beginPath(); g.moveTo(geo.left, py); g.lineTo(geo.left + geo.size, py);
    g.moveTo(px, geo.top); g.lineTo(px, geo.top + geo.size); g.stroke();
    g.beginPath(); g.arc(px, py, 7, 0, 2 * Math.PI); g.lineWidth = 2.5; g.stroke();
  }

  function paint(k, pixels) {
    const { channels, width, height } = k.decoder;
    const rgba = k.frame.data, plane = width * height;
    for (let i = 0; i < plane; i++) { // C, H, W planes -> interleaved RGBA
      const r = pixels[i], g = channels === 3 ? pixels[plane + i] : r, b = channels === 3 ? pixels[2 * plane + i] : r;
      rgba[4 * i] = r * 255 + 0.5; rgba[4 * i + 1] = g * 255 + 0.5; rgba[4 * i + 2] = b * 255 + 0.5; rgba[4 * i + 3] = 255;
    }
    k.outCtx.putImageData(k.frame, 0, 0);
  }

  function glide(event, target) {
    const p = mapPoint(event, target);
    if (!p || !view.ready) { for (const k of kinds) drawCross(k, null, null); return; }
    const t0 = performance.now();
    const last = { x: p.x, y: p.y, codes: {}, outputs: {} };
    for (const k of kinds) {
      liveToCode(k.inverse, p.x, p.y, k.code);
      const output = liveDecode(k.decoder, k.code);
      paint(k, liveToDisplay(k.decoder, output));
      drawCross(k, p.px, p.py);
      last.codes[k.kind] = Array.from(k.code);
      last.outputs[k.kind] = output; // the decoder's own buffer: read it before the next move
    }
    const t1 = performance.now();
    for (const k of kinds) k.caption.textContent = `at (${p.x.toFixed(2)}, ${p.y.toFixed(2)})`;
    STORE.last = last;
    STORE.stats.moves += 1;
    record(STORE.stats.decodeMs, t1 - t0);
    record(STORE.stats.drawnMs, t1 - event.timeStamp);
    record(STORE.stats.eventTs, event.timeStamp);
    // painted: the frame that shows this draw has been produced once a task queued from the next
    // animation-frame callback runs (rAF runs just before that frame's paint)
    requestAnimationFrame(() => {
      const channel = new MessageChannel();
      channel.port1.onmessage = () => record(STORE.stats.paintedMs, performance.now() - event.timeStamp);
      channel.port2.postMessage(0);
    });
  }

  // At most one decode per displayed frame, as early as possible: the first move of a frame is
  // decoded at once, a later one waits for the next frame (the newest wins). Chromium's
  // pointerrawupdate arrives as the input does; pointermove is held until the next frame.
  function frame() {
    view.busy = false;
    if (!view.pending) return;
    const [event, target] = view.pending;
    view.pending = null;
    glide(event, target);
    view.busy = true;
    requestAnimationFrame(frame);
  }

  function move(event) {
    if (view.busy) { view.pending = [event, event.currentTarget]; return; }
    glide(event, event.currentTarget);
    view.busy = true;
    requestAnimationFrame(frame);
  }

  // pointerrawupdate where the browser has it (Chromium, mouse and pen), pointermove otherwise
  // (other browsers; touch): once a raw update has come, the aligned copies are left alone
  function rawMove(event) { view.sawRaw = true; move(event); }
  function alignedMove(event) { if (!view.sawRaw) move(event); }

  function leave() {
    view.pending = null;
    for (const k of kinds) drawCross(k, null, null);
  }

  function click(event) {
    const p = mapPoint(event, event.currentTarget);
    if (p && view.send) view.send("click", { kind: event.currentTarget.closest(".live-panel").dataset.kind, x: p.x, y: p.y });
  }

  for (const k of kinds) {
    for (const [type, fn] of [["pointerrawupdate", rawMove], ["pointermove", alignedMove], ["pointerleave", leave],
                              ["click", click]]) {
      k.map.addEventListener(type, fn);
      view.listeners.push([k.map, type, fn]);
    }
  }
  view.attach();
  view.destroy = () => {
    for (const [el, type, fn] of view.listeners) el.removeEventListener(type, fn);
    view.listeners = [];
  };
  return view;
}

export default function (component) {
  const { data, parentElement, setTriggerValue } = component;
  takeWeights(data.weights);
  let view = STORE.views.get(parentElement);
  if (!view || view.id !== data.id) {
    view?.destroy();
    view = buildView(parentElement, data);
    STORE.views.set(parentElement, view);
  }
  view.send = setTriggerValue;
  if (!view.ready) findDecoders(view);
  return () => {
    view.destroy();
    STORE.views.delete(parentElement);
  };
}
