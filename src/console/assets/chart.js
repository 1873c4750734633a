// A small SVG line chart of a series (no library: one polyline and a label).
const NS = 'http://www.w3.org/2000/svg';

export function sparkline(values, label, { width = 240, height = 48 } = {}) {
  const svg = document.createElementNS(NS, 'svg');
  svg.setAttribute('viewBox', `0 0 ${width} ${height}`);
  // Stretched to the box it is given (a card's width on a phone).
  svg.setAttribute('preserveAspectRatio', 'none');
  svg.setAttribute('width', width);
  svg.setAttribute('height', height);
  svg.setAttribute('role', 'img');
  svg.setAttribute('class', 'spark');
  const title = document.createElementNS(NS, 'title');
  const max = Math.max(...values, 0);
  title.textContent = `${label}: max ${max} a minute over the last hour`;
  svg.append(title);
  const top = max || 1;
  const step = values.length > 1 ? width / (values.length - 1) : width;
  const points = values.map((v, i) => `${(i * step).toFixed(1)},${(height - 2 - (v / top) * (height - 6)).toFixed(1)}`).join(' ');
  const line = document.createElementNS(NS, 'polyline');
  line.setAttribute('points', points);
  line.setAttribute('class', 'spark-line');
  svg.append(line);
  svg.setAttribute('aria-label', title.textContent);
  return svg;
}
