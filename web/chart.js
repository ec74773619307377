/* chart.js — a small time-series line chart drawn on <canvas>, for the dashboard's depth and
 * rate charts. No library: axes with "nice" ticks, minutes-ago labels on the x axis, one
 * line per series, sharp on high-DPI screens. */
'use strict';

const FerryChart = (() => {
  /* Ticks at 1, 2 or 5 × 10^k covering [0, max]. */
  function niceTicks(max, count) {
    if (!(max > 0)) return [0, 1];
    const raw = max / count;
    const pow = Math.pow(10, Math.floor(Math.log10(raw)));
    const step = [1, 2, 5, 10].map(m => m * pow).find(s => s >= raw);
    const ticks = [];
    for (let v = 0; v <= max + step * 0.001; v += step) ticks.push(v);
    if (ticks[ticks.length - 1] < max) ticks.push(ticks[ticks.length - 1] + step);
    return ticks;
  }

  function label(v) {
    if (v >= 1e6) return (v / 1e6).toFixed(v % 1e6 ? 1 : 0) + 'M';
    if (v >= 1e3) return (v / 1e3).toFixed(v % 1e3 ? 1 : 0) + 'k';
    return String(Math.round(v * 100) / 100);
  }

  /* series: [{label, color, points: [[timeMs, value], ...]}]; opts.windowMs: x range ending
   * now (default: the samples' span, at least 5 minutes and at most an hour, so a page opened a
   * minute ago does not squeeze its line into the right edge). */
  function draw(canvas, series, opts = {}) {
    const dpr = window.devicePixelRatio || 1;
    const w = canvas.clientWidth || 600, h = canvas.clientHeight || 180;
    if (canvas.width !== Math.round(w * dpr) || canvas.height !== Math.round(h * dpr)) {
      canvas.width = Math.round(w * dpr);
      canvas.height = Math.round(h * dpr);
    }
    const ctx = canvas.getContext('2d');
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.clearRect(0, 0, w, h);
    const now = opts.now || Date.now();
    let first = now;
    for (const s of series) if (s.points.length && s.points[0][0] < first) first = s.points[0][0];
    const windowMs = opts.windowMs || Math.min(3600e3, Math.max(300e3, Math.ceil((now - first) / 300e3) * 300e3));
    const t0 = now - windowMs;
    const left = 48, right = 10, top = 10, bottom = 22;
    const pw = w - left - right, ph = h - top - bottom;
    let max = 0;
    for (const s of series) for (const [t, v] of s.points) if (t >= t0 && v > max) max = v;
    const ticks = niceTicks(max, 4);
    const ymax = ticks[ticks.length - 1] || 1;
    const x = t => left + ((t - t0) / windowMs) * pw;
    const y = v => top + ph - (v / ymax) * ph;

    ctx.font = '11px system-ui, sans-serif';
    ctx.fillStyle = '#6b7280';
    ctx.strokeStyle = '#e5e7eb';
    ctx.lineWidth = 1;
    ctx.textAlign = 'right';
    ctx.textBaseline = 'middle';
    for (const v of ticks) {
      const yy = Math.round(y(v)) + 0.5;
      ctx.beginPath();
      ctx.moveTo(left, yy);
      ctx.lineTo(left + pw, yy);
      ctx.stroke();
      ctx.fillText(label(v), left - 6, yy);
    }
    ctx.textAlign = 'center';
    ctx.textBaseline = 'top';
    const stepMin = windowMs >= 2400e3 ? 15 : windowMs >= 900e3 ? 5 : 1;
    for (let m = 0; m * 60e3 <= windowMs; m += stepMin) {
      ctx.fillText(m === 0 ? 'now' : `-${m}m`, x(now - m * 60e3), top + ph + 5);
    }
    for (const s of series) {
      const pts = s.points.filter(([t]) => t >= t0);
      if (!pts.length) continue;
      ctx.strokeStyle = s.color;
      ctx.lineWidth = 2;
      ctx.beginPath();
      pts.forEach(([t, v], i) => (i ? ctx.lineTo(x(t), y(v)) : ctx.moveTo(x(t), y(v))));
      ctx.stroke();
      if (pts.length === 1) {
        ctx.fillStyle = s.color;
        ctx.beginPath();
        ctx.arc(x(pts[0][0]), y(pts[0][1]), 2.5, 0, 2 * Math.PI);
        ctx.fill();
      }
    }
    if (!series.some(s => s.points.some(([t]) => t >= t0))) {
      ctx.fillStyle = '#9ca3af';
      ctx.textAlign = 'center';
      ctx.textBaseline = 'middle';
      ctx.fillText('collecting samples…', left + pw / 2, top + ph / 2);
    }
  }

  const palette = ['#1f6feb', '#d97706', '#059669', '#dc2626', '#7c3aed', '#0891b2'];
  return { draw, palette };
})();
