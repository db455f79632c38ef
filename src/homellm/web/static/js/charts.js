// Bar charts drawn as SVG elements (no library, no inline style: the page's CSP allows neither).
const NS = "http://www.w3.org/2000/svg";
const COLORS = ["#2563eb", "#16a34a", "#d97706", "#db2777", "#7c3aed", "#0891b2", "#65a30d", "#dc2626"];

function svg(tag, attrs) {
  const node = document.createElementNS(NS, tag);
  for (const [name, value] of Object.entries(attrs)) node.setAttribute(name, String(value));
  return node;
}

function short(n) {
  if (n >= 1e6) return `${(n / 1e6).toFixed(1)}M`;
  if (n >= 1e4) return `${(n / 1e3).toFixed(0)}k`;
  return String(Math.round(n));
}

// labels: the x axis; series: [{name, values}] stacked in order. An empty chart says so.
export function barChart(container, labels, series, emptyText) {
  container.replaceChildren();
  const totals = labels.map((_, i) => series.reduce((sum, s) => sum + (s.values[i] || 0), 0));
  const top = Math.max(0, ...totals);
  if (!labels.length || top === 0) {
    const p = document.createElement("p");
    p.className = "small";
    p.textContent = emptyText;
    container.append(p);
    return;
  }
  const width = 640, height = 200, left = 44, bottom = 36, barGap = 4;
  const plot = height - bottom - 8;
  const step = (width - left) / labels.length;
  const chart = svg("svg", { viewBox: `0 0 ${width} ${height}`, role: "img", class: "bars" });
  for (const fraction of [0, 0.5, 1]) {
    const y = 8 + plot * (1 - fraction);
    chart.append(svg("line", { x1: left, x2: width, y1: y, y2: y, class: "grid" }));
    const label = svg("text", { x: left - 6, y: y + 4, "text-anchor": "end", class: "axis" });
    label.textContent = short(top * fraction);
    chart.append(label);
  }
  labels.forEach((name, i) => {
    let y = 8 + plot;
    const barWidth = Math.min(Math.max(step - barGap, 1), 56);
    const x = left + i * step + (step - barWidth) / 2;
    series.forEach((s, k) => {
      const value = s.values[i] || 0;
      if (!value) return;
      const h = (value / top) * plot;
      y -= h;
      const rect = svg("rect", { x, y, width: barWidth, height: h, fill: COLORS[k % COLORS.length] });
      const tip = svg("title", {});
      tip.textContent = `${name} · ${s.name}: ${short(value)}`;
      rect.append(tip);
      chart.append(rect);
    });
    if (labels.length <= 16 || i % Math.ceil(labels.length / 16) === 0) {
      const text = svg("text", { x: x + barWidth / 2, y: height - bottom + 16, "text-anchor": "middle", class: "axis" });
      text.textContent = name.length > 10 ? name.slice(5) : name;
      chart.append(text);
    }
  });
  container.append(chart);
  const legend = document.createElement("ul");
  legend.className = "legend";
  series.forEach((s, k) => {
    const item = document.createElement("li");
    const swatch = svg("svg", { width: 10, height: 10 });
    swatch.append(svg("rect", { width: 10, height: 10, fill: COLORS[k % COLORS.length] }));
    item.append(swatch, document.createTextNode(` ${s.name}`));
    legend.append(item);
  });
  container.append(legend);
}
