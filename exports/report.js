// The process map's only behaviour: hovering an activity brings its transitions forward. Before that, a label
// rendered in a wider font than the layout measured is squeezed into its box.
(() => {
  "use strict";
  const svg = document.getElementById("process-map");
  if (!svg) return;
  for (const text of svg.querySelectorAll("text[data-fit]")) {
    const room = Number(text.dataset.fit);
    if (room > 0 && text.getComputedTextLength() > room) {
      text.setAttribute("textLength", String(room));
      text.setAttribute("lengthAdjust", "spacingAndGlyphs");
    }
  }
  const edges = Array.from(svg.querySelectorAll(".pm-edge"));
  for (const node of svg.querySelectorAll(".pm-node")) {
    const name = node.dataset.activity;
    node.addEventListener("mouseenter", () => {
      svg.classList.add("focus");
      node.classList.add("on");
      for (const edge of edges) edge.classList.toggle("on", edge.dataset.from === name || edge.dataset.to === name);
    });
    node.addEventListener("mouseleave", () => {
      svg.classList.remove("focus");
      node.classList.remove("on");
      for (const edge of edges) edge.classList.remove("on");
    });
  }
})();
