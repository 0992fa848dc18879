// Depth tab read-out: the value under the cursor on the depth map (#depth-measure), from the
// low-resolution grid the server put in the legend (#depth-legend [data-grid]: uint16 codes,
// base64 little-endian, value = offset + (code - first) * scale, code `nodata` = no value).
// It only displays numbers the server computed; a click asks the server for the exact value.
// Pixel coordinates follow Gradio's own click mapping (contain-fit, never upscaled, centred).
if (!window.__depthReadout) {
  window.__depthReadout = true;
  let cache = { key: null };
  const grid = () => {
    const el = document.querySelector('#depth-legend [data-grid]');
    if (!el) return null;
    const key = el.dataset.grid;
    if (cache.key !== key) {
      const bin = atob(key);
      const codes = new Uint16Array(bin.length >> 1);
      for (let i = 0; i < codes.length; i++) codes[i] = bin.charCodeAt(2 * i) | (bin.charCodeAt(2 * i + 1) << 8);
      const nodata = el.dataset.nodata === '' ? null : Number(el.dataset.nodata);
      cache = { key, codes, nodata, w: +el.dataset.w, h: +el.dataset.h, step: +el.dataset.step,
                offset: +el.dataset.offset, scale: +el.dataset.scale, unit: el.dataset.unit,
                width: +el.dataset.width, height: +el.dataset.height };
    }
    return cache;
  };
  const pixel = (img, e) => {
    const r = img.getBoundingClientRect();
    if (!img.naturalWidth || !r.width) return null;
    const s = Math.min(r.width / img.naturalWidth, r.height / img.naturalHeight, 1);
    const x = Math.round((e.clientX - r.left - (r.width - img.naturalWidth * s) / 2) / s);
    const y = Math.round((e.clientY - r.top - (r.height - img.naturalHeight * s) / 2) / s);
    return (x < 0 || y < 0 || x >= img.naturalWidth || y >= img.naturalHeight) ? null : [x, y];
  };
  const tip = document.createElement('div');
  tip.id = 'depth-hover-tip';
  tip.className = 'depth-hover-tip';
  tip.style.display = 'none';
  document.body.appendChild(tip);
  const show = (text, e) => {
    const line = document.getElementById('depth-hover');
    if (line) line.textContent = text;
    tip.textContent = text;
    tip.style.display = text ? 'block' : 'none';
    if (e) { tip.style.left = (e.clientX + 14) + 'px'; tip.style.top = (e.clientY + 14) + 'px'; }
  };
  document.addEventListener('mousemove', (e) => {
    const box = e.target && e.target.closest ? e.target.closest('#depth-measure') : null;
    const img = box ? box.querySelector('img') : null;
    const g = img ? grid() : null;
    const p = g ? pixel(img, e) : null;
    if (!p) { if (tip.style.display !== 'none') show('', null); return; }
    // the picture may be shown at another size than the prediction: map to prediction pixels first
    const px = Math.min(g.width - 1, Math.floor(p[0] * g.width / img.naturalWidth));
    const py = Math.min(g.height - 1, Math.floor(p[1] * g.height / img.naturalHeight));
    const gx = Math.min(g.w - 1, Math.round(px / g.step)), gy = Math.min(g.h - 1, Math.round(py / g.step));
    const code = g.codes[gy * g.w + gx];
    const first = g.nodata === null ? 0 : 1;
    const value = (g.nodata !== null && code === g.nodata) ? null : g.offset + (code - first) * g.scale;
    const text = value === null ? `(${px}, ${py}): no value`
      : `(${px}, ${py}): ${Number(value.toPrecision(4))} ${g.unit}`;
    show(text, e);
  });
}
