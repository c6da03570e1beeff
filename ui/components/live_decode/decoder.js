// The MLP decoder in plain JavaScript: the payload of vae/export.py `decoder_payload`, parsed
// once into Float32Arrays, then one dense layer after another on preallocated buffers.
// No module syntax here: the component's script and the browser test both include this file.

function liveBytesFromBase64(text) {
  const raw = atob(text);
  const bytes = new Uint8Array(raw.length);
  for (let i = 0; i < raw.length; i++) bytes[i] = raw.charCodeAt(i);
  return bytes;
}

function liveHalfToFloat(bits) {
  // IEEE 754 binary16 -> number (sign, 5-bit exponent, 10-bit fraction)
  const sign = bits & 0x8000 ? -1 : 1;
  const exp = (bits >> 10) & 0x1f;
  const frac = bits & 0x03ff;
  if (exp === 0) return sign * Math.pow(2, -14) * (frac / 1024);
  if (exp === 31) return frac ? NaN : sign * Infinity;
  return sign * Math.pow(2, exp - 15) * (1 + frac / 1024);
}

function liveArrayFromBase64(text, dtype) {
  const bytes = liveBytesFromBase64(text);
  const view = new DataView(bytes.buffer);
  if (dtype === "float16") {
    const out = new Float32Array(bytes.length / 2);
    for (let i = 0; i < out.length; i++) out[i] = liveHalfToFloat(view.getUint16(2 * i, true));
    return out;
  }
  const out = new Float32Array(bytes.length / 4);
  for (let i = 0; i < out.length; i++) out[i] = view.getFloat32(4 * i, true); // little-endian, as exported
  return out;
}

function liveParseDecoder(payload) {
  const layers = payload.layers.map((l) => ({
    nIn: l.n_in, nOut: l.n_out, activation: l.activation, slope: l.slope,
    weight: liveArrayFromBase64(l.weight, payload.dtype), bias: liveArrayFromBase64(l.bias, payload.dtype),
    out: new Float32Array(l.n_out),
  }));
  const [c, h, w] = payload.image_shape;
  return { layers, display: payload.display, channels: c, height: h, width: w,
           latentDim: layers[0].nIn, pixels: new Float32Array(c * h * w) };
}

// code (array of latentDim numbers) -> the decoder's raw output (a Float32Array it owns, C*H*W)
function liveDecode(decoder, code) {
  let x = code;
  for (const layer of decoder.layers) {
    const { nIn, nOut, weight, bias, out, activation, slope } = layer;
    for (let j = 0; j < nOut; j++) {
      let acc = 0;
      const row = j * nIn; // weight is [out, in], row-major: one contiguous row per output
      for (let i = 0; i < nIn; i++) acc += weight[row + i] * x[i];
      acc += bias[j];
      if (activation === "relu") acc = acc > 0 ? acc : 0;
      else if (activation === "leaky_relu") acc = acc >= 0 ? acc : slope * acc;
      else if (activation === "sigmoid") acc = 1 / (1 + Math.exp(-acc));
      else if (activation === "tanh") acc = Math.tanh(acc);
      out[j] = acc;
    }
    x = out;
  }
  return x;
}

// raw output -> pixel values in [0, 1] (Autoencoder.to_image), into decoder.pixels
function liveToDisplay(decoder, output) {
  const px = decoder.pixels;
  for (let i = 0; i < px.length; i++) {
    let v = output[i];
    if (decoder.display === "sigmoid") v = 1 / (1 + Math.exp(-v));
    else if (decoder.display === "half_shift") v = (v + 1) / 2;
    px[i] = v < 0 ? 0 : v > 1 ? 1 : v;
  }
  return px;
}

// a map point (x, y) -> the model's code: z = x * W[0] + y * W[1] + c (vae/export.py affine_inverse)
function liveToCode(inverse, x, y, code) {
  const d = inverse.offset.length;
  for (let k = 0; k < d; k++) code[k] = x * inverse.weight[0][k] + y * inverse.weight[1][k] + inverse.offset[k];
  return code;
}
