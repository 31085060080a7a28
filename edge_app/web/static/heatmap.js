// The heatmap overlay's placement, shared by the Screen (app.js) and the detail page. No inline scripts (CSP).
"use strict";

// A heatmap (transparent PNG of the class activation map) goes over the analysed square of its image:
// box = [x0, y0, x1, y1] as fractions of the image. The image may be shown with object-fit cover or
// contain (the Screen's left panel) or at its own aspect (the detail page); the overlay is placed on the
// image's drawn pixels either way. Styles set from script pass the CSP.
function placeHeatmap(overlay, image, box) {
  const iw = image.naturalWidth, ih = image.naturalHeight;
  const ew = image.clientWidth, eh = image.clientHeight;
  if (!iw || !ih || !ew || !eh) return false;
  const fit = getComputedStyle(image).objectFit;
  const scale = fit === "cover" ? Math.max(ew / iw, eh / ih) : fit === "contain" ? Math.min(ew / iw, eh / ih) : null;
  const dw = scale ? iw * scale : ew, dh = scale ? ih * scale : eh;
  const ox = image.offsetLeft + (ew - dw) / 2, oy = image.offsetTop + (eh - dh) / 2;
  overlay.style.left = (ox + box[0] * dw).toFixed(1) + "px";
  overlay.style.top = (oy + box[1] * dh).toFixed(1) + "px";
  overlay.style.width = ((box[2] - box[0]) * dw).toFixed(1) + "px";
  overlay.style.height = ((box[3] - box[1]) * dh).toFixed(1) + "px";
  return true;
}

for (const overlay of document.querySelectorAll(".heatmap-overlay[data-box]")) { // the detail page
  const image = overlay.parentElement.querySelector(".heatmap-base");
  const box = overlay.dataset.box.split(",").map(Number);
  const place = () => placeHeatmap(overlay, image, box);
  if (!place()) image.addEventListener("load", place);
  window.addEventListener("resize", place);
}
