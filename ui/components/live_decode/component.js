// The live decode view: both maps with one shared cursor, both decodes under them, redrawn on
// every pointer move from the decoders in decoder.js. Nothing goes to the server while the
// pointer glides; a click sends the map point back (setTriggerValue "click") as the old path did.
//
// Streamlit calls this function again on every rerun (with the same data when nothing changed);
// the view and the parsed decoders live in a page-wide store, keyed by their content ids, so a
// rerun costs a string comparison and each decoder's weights are parsed once per page.

const STORE = (globalThis.__latentExplorerLive ??= {
  decoders: new Map(), // decoder id (sha256 of its payload) -> parsed decoder
  views: new WeakMap(), // the component's root -> its view
  stats: { decodeMs: [], drawnMs: [], paintedMs: [], moves: 0 },
  last: null, // the last glide point: {x, y, codes: {kind: [...]}, outputs: {kind: [...]}}
});
const MAX_STATS = 20000;

function record(list, value) {
  if (list.length >= MAX_STATS) list.shift();
  list.push(value);
}

function decoderFor(payload) {
  let decoder = STORE.decoders.get(payload.id);
  if (!decoder) {
    decoder = liveParseDecoder(payload);
    STORE.decoders.set(payload.id, decoder);
  }
  return decoder;
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
    panel.innerHTML = `<div class="live-title"></div><div class="live-map"><img alt=""><canvas class="live-cross"></canvas></div>
      <div class="live-out"><canvas class="live-image"></canvas><div class="live-caption"></div></div>`;
    panel.querySelector(".live-title").textContent = data.titles[kind];
    panel.dataset.kind = kind;
    const img = panel.querySelector("img");
    img.src = data.maps[kind];
    const cross = panel.querySelector(".live-cross");
    cross.width = geo.width;
    cross.height = geo.height;
    const decoder = decoderFor(data.decoders[kind]);
    const out = panel.querySelector(".live-image");
    out.width = decoder.width;
    out.height = decoder.height;
    panels.appendChild(panel);
    return { kind, panel, map: panel.querySelector(".live-map"), cross, crossCtx: cross.getContext("2d"),
             out, outCtx: out.getContext("2d"), caption: panel.querySelector(".live-caption"),
             decoder, inverse: data.inverse[kind], code: new Float32Array(decoder.latentDim),
             frame: new ImageData(decoder.width, decoder.height), color: data.colors[kind] };
  });
  const view = { id: data.id, send: null, kinds, listeners: [] };

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

  function glide(event) {
    const p = mapPoint(event, event.currentTarget);
    if (!p) { for (const k of kinds) drawCross(k, null, null); return; }
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
    kinds[0].caption.textContent = kinds.length && `map point (${p.x.toFixed(2)}, ${p.y.toFixed(2)})`;
    for (const k of kinds.slice(1)) k.caption.textContent = "same place";
    STORE.last = last;
    STORE.stats.moves += 1;
    record(STORE.stats.decodeMs, t1 - t0);
    record(STORE.stats.drawnMs, t1 - event.timeStamp);
    // painted: the frame that shows this draw has been produced once a task queued from the next
    // animation-frame callback runs (rAF runs just before that frame's paint)
    requestAnimationFrame(() => {
      const channel = new MessageChannel();
      channel.port1.onmessage = () => record(STORE.stats.paintedMs, performance.now() - event.timeStamp);
      channel.port2.postMessage(0);
    });
  }

  function leave() { for (const k of kinds) drawCross(k, null, null); }

  function click(event) {
    const p = mapPoint(event, event.currentTarget);
    if (p && view.send) view.send("click", { kind: event.currentTarget.parentElement.dataset.kind, x: p.x, y: p.y });
  }

  for (const k of kinds) {
    for (const [type, fn] of [["pointermove", glide], ["pointerleave", leave], ["click", click]]) {
      k.map.addEventListener(type, fn);
      view.listeners.push([k.map, type, fn]);
    }
  }
  status.textContent = data.status;
  view.destroy = () => {
    for (const [el, type, fn] of view.listeners) el.removeEventListener(type, fn);
    view.listeners = [];
  };
  return view;
}

export default function (component) {
  const { data, parentElement, setTriggerValue } = component;
  let view = STORE.views.get(parentElement);
  if (!view || view.id !== data.id) {
    view?.destroy();
    view = buildView(parentElement, data);
    STORE.views.set(parentElement, view);
  }
  view.send = setTriggerValue;
  return () => {
    view.destroy();
    STORE.views.delete(parentElement);
  };
}
