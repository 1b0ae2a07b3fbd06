// A small SVG bar chart of our own (stacked or grouped bars, a value axis, a legend, a tooltip per bar); no library and nothing from outside.
"use strict";

const SvgChart = (() => {
  const NS = "http://www.w3.org/2000/svg";

  function node(tag, attrs, text) {
    const n = document.createElementNS(NS, tag);
    for (const [k, v] of Object.entries(attrs || {})) n.setAttribute(k, String(v));
    if (text !== undefined) n.textContent = String(text);
    return n;
  }

  /** A step of 1, 2 or 5 × 10^k giving about four whole-number gridlines up to `max`. */
  function scale(max) {
    const raw = Math.max(1, max) / 4;
    const p = 10 ** Math.floor(Math.log10(raw));
    const step = Math.max(1, [1, 2, 5, 10].map((m) => m * p).find((s) => s >= raw));
    const top = Math.max(step, Math.ceil(Math.max(1, max) / step) * step);
    return { step, top };
  }

  /**
   * Draws into `container`: `labels` along the bottom, one bar (segment) per series and
   * label. `series`: [{name, values, cls}]. `labelEvery`: label every nth bar.
   */
  function bars(container, { labels, series, stacked = true, height = 200, labelEvery = 1, title = "" }) {
    const W = 640;
    const H = height;
    const pad = { left: 40, right: 8, top: 12, bottom: 30 };
    const plotH = H - pad.top - pad.bottom;
    const totals = labels.map((_, i) => (stacked
      ? series.reduce((sum, s) => sum + (s.values[i] || 0), 0)
      : Math.max(0, ...series.map((s) => s.values[i] || 0))));
    const { step, top } = scale(Math.max(0, ...totals));
    const total = totals.reduce((a, b) => a + b, 0);
    const svg = node("svg", {
      viewBox: `0 0 ${W} ${H}`,
      role: "img",
      "aria-label": `${title}${title ? ": " : ""}${total}`,
      class: "chart-svg",
    });
    const y = (v) => pad.top + plotH * (1 - v / top);
    for (let v = 0; v <= top; v += step) {
      svg.append(node("line", { x1: pad.left, x2: W - pad.right, y1: y(v), y2: y(v), class: v === 0 ? "axis-line" : "grid" }));
      svg.append(node("text", { x: pad.left - 8, y: y(v) + 6, class: "tick", "text-anchor": "end" }, v));
    }
    const band = (W - pad.left - pad.right) / Math.max(1, labels.length);
    const gap = Math.min(band * 0.25, 10);
    labels.forEach((label, i) => {
      const x0 = pad.left + i * band + gap / 2;
      const width = band - gap;
      let stack = 0;
      series.forEach((s, j) => {
        const v = s.values[i] || 0;
        if (!v) return;
        let x = x0;
        let w = width;
        let top0;
        if (stacked) {
          top0 = y(stack + v);
          stack += v;
        } else {
          w = width / series.length;
          x = x0 + j * w;
          top0 = y(v);
        }
        const rect = node("rect", { x, y: top0, width: Math.max(1, stacked ? w : w - 1), height: Math.max(0, y(0) - y(v)), class: `bar ${s.cls || ""}`, rx: 2 });
        rect.append(node("title", {}, `${label} · ${s.name}: ${v}`));
        svg.append(rect);
      });
      if (i % labelEvery === 0) {
        svg.append(node("text", { x: x0 + width / 2, y: H - 6, class: "tick", "text-anchor": "middle" }, label));
      }
    });
    const legend = document.createElement("div");
    legend.className = "legend";
    for (const s of series) {
      const item = document.createElement("span");
      const swatch = document.createElement("i");
      swatch.className = `swatch ${s.cls || ""}`;
      item.append(swatch, document.createTextNode(s.name));
      legend.append(item);
    }
    container.replaceChildren(svg, legend);
  }

  return { bars, scale };
})();
