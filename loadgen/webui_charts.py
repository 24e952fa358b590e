"""The script that draws the LLM charts: TTFT p50/p99 and output tokens/s over time, steps marked.

In Locust's web UI (loaded by the index page) it polls ``./stampede/llm.json`` and draws below the
LLM tab's table and below Locust's own charts; in a saved report it draws the data embedded as
``window.STAMPEDE_LLM``. Plain SVG, no library: Locust's bundle keeps its chart code to itself.
"""

LIVE_SCRIPT = r"""
(function () {
  var NS = "http://www.w3.org/2000/svg", W = 900, H = 230, L = 60, R = 20, T = 28, B = 30;
  function el(name, attrs, text) {
    var e = document.createElementNS(NS, name);
    for (var k in attrs) e.setAttribute(k, attrs[k]);
    if (text !== undefined) e.textContent = text;
    return e;
  }
  function clock(t) { return new Date(t * 1000).toISOString().substr(11, 8); }
  function chart(title, series, steps, t0, t1) {
    var svg = el("svg", {width: W, height: H, viewBox: "0 0 " + W + " " + H, "class": "stampede-llm-chart"});
    svg.style.background = "#fff"; svg.style.margin = "8px 0"; svg.style.fontFamily = "sans-serif";
    var ymax = 0;
    series.forEach(function (s) { s.points.forEach(function (p) { if (p[1] > ymax) ymax = p[1]; }); });
    ymax = ymax > 0 ? ymax * 1.1 : 1;
    var span = Math.max(t1 - t0, 1);
    function x(t) { return L + (W - L - R) * (t - t0) / span; }
    function y(v) { return H - B - (H - T - B) * v / ymax; }
    svg.appendChild(el("text", {x: L, y: 16, "font-size": 14, "font-weight": "bold"}, title));
    svg.appendChild(el("line", {x1: L, y1: H - B, x2: W - R, y2: H - B, stroke: "#888"}));
    svg.appendChild(el("line", {x1: L, y1: T, x2: L, y2: H - B, stroke: "#888"}));
    var top = ymax.toFixed(ymax < 10 ? 1 : 0);
    svg.appendChild(el("text", {x: L - 4, y: T + 4, "font-size": 11, "text-anchor": "end"}, top));
    svg.appendChild(el("text", {x: L - 4, y: H - B, "font-size": 11, "text-anchor": "end"}, "0"));
    svg.appendChild(el("text", {x: L, y: H - 10, "font-size": 11}, clock(t0)));
    svg.appendChild(el("text", {x: W - R, y: H - 10, "font-size": 11, "text-anchor": "end"}, clock(t1) + " UTC"));
    steps.forEach(function (s) {
      if (s[0] < t0 || s[0] > t1) return;
      var at = x(s[0]);
      svg.appendChild(el("line", {x1: at, y1: T, x2: at, y2: H - B, stroke: "#999", "stroke-dasharray": "4 3"}));
      svg.appendChild(el("text", {x: x(s[0]) + 3, y: T + 10, "font-size": 10, fill: "#555"}, "step " + s[1]));
    });
    var lx = W - R;
    series.slice().reverse().forEach(function (s) {
      var label = el("text", {x: lx, y: 16, "font-size": 12, "text-anchor": "end", fill: s.color}, "\u25A0 " + s.name);
      svg.appendChild(label); lx -= 12 + 7 * s.name.length;
      var pts = s.points.filter(function (p) { return p[1] !== null; })
        .map(function (p) { return x(p[0]).toFixed(1) + "," + y(p[1]).toFixed(1); });
      var line = {points: pts.join(" "), fill: "none", stroke: s.color, "stroke-width": 2};
      if (pts.length) svg.appendChild(el("polyline", line));
    });
    return svg;
  }
  function draw(panel, data) {
    panel.textContent = "";
    var byTarget = {};
    data.points.forEach(function (p) { (byTarget[p[1]] = byTarget[p[1]] || []).push(p); });
    Object.keys(byTarget).forEach(function (target) {
      var pts = byTarget[target], t0 = pts[0][0], t1 = pts[pts.length - 1][0];
      var head = document.createElement("div");
      head.textContent = target + ": over a sliding " + data.window_s + " s window, dashed lines where steps began";
      head.style.fontFamily = "sans-serif"; head.style.marginTop = "12px";
      panel.appendChild(head);
      function col(i) { return pts.map(function (p) { return [p[0], p[i]]; }); }
      panel.appendChild(chart("TTFT (ms)", [{name: "p50", color: "#1f77b4", points: col(2)},
        {name: "p99", color: "#d62728", points: col(3)}], data.steps, t0, t1));
      panel.appendChild(chart("Output tokens/s", [{name: "tokens/s", color: "#2ca02c", points: col(4)}],
        data.steps, t0, t1));
    });
  }
  if (window.STAMPEDE_LLM) { draw(document.getElementById("stampede-llm-charts"), window.STAMPEDE_LLM); return; }
  var panel = document.createElement("div");
  panel.id = "stampede-llm-charts";
  function tick() {
    var tab = new URLSearchParams(window.location.search).get("tab");
    var container = document.querySelector("main .MuiContainer-root");
    if ((tab !== "llm" && tab !== "charts") || !container) { panel.style.display = "none"; return; }
    if (container.lastChild !== panel) container.appendChild(panel);
    panel.style.display = "";
    fetch("./stampede/llm.json").then(function (r) { return r.json(); }).then(function (d) { draw(panel, d); });
  }
  setInterval(tick, 2000);
  window.addEventListener("click", function () { setTimeout(tick, 100); });
})();
"""
