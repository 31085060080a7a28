// DermaEdge touch UI. Plain JS, no dependencies, no inline scripts (the CSP forbids them).
//
// The Screen page is a small state machine (data-state on #screen):
//   ready  -> live preview, Capture enabled
//   busy   -> the image being analysed is frozen on the left, the old result is cleared,
//             Capture disabled, a second upload is refused with a message
//   result -> the stored record's own image beside its result, until "New screening"
//             (or Retake, or an upload) starts the next one; only then the preview returns.
// Every capture/upload carries a request_id made here, so a repeated POST (double tap,
// retry) gets the first record back. The id of the *next* screening is made and saved in
// sessionStorage as soon as the screen is ready (long before the tap, so the browser has
// written it even if the page reloads a moment after the tap); on load the page asks the
// server for that id and shows the result it had not shown yet. Back from Details finds
// the shown result the same way.
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

(function () {
  const csrf = document.querySelector('meta[name="csrf-token"]')?.content || "";
  const screen = document.getElementById("screen");
  if (!screen) return; // the other pages need no more script

  const $ = (id) => document.getElementById(id);
  const ui = JSON.parse(screen.dataset.ui);
  const noVerdict = new Set(ui.noVerdict);
  const previewImg = $("preview");
  const shotImg = $("shot");
  const previewEmpty = $("preview-empty");
  const shotBox = $("shot-box");
  const captureBtn = $("capture");
  const nextBtn = $("next");
  const uploadInput = $("upload");
  const operator = $("operator");
  const lesionRef = $("lesion_ref");
  const result = $("result");
  const KEY = { next: "dermaedge.next_request", pending: "dermaedge.pending", shown: "dermaedge.shown", lesion: "dermaedge.lesion_ref" };
  const TAP_GUARD_MS = 800; // taps this soon after a capture tap or a result belong to that screening
  let previewUrl = null;
  let uploadUrl = null;
  let cameraState = screen.dataset.camera;
  let guardUntil = 0;

  const state = () => screen.dataset.state;
  const fmtMs = (ms) => ms.toFixed(1) + " ms"; // the Performance page and the detail page show one decimal too
  const store = {
    get: (k) => { try { return JSON.parse(sessionStorage.getItem(k)); } catch (e) { return null; } },
    set: (k, v) => sessionStorage.setItem(k, JSON.stringify(v)),
    del: (k) => sessionStorage.removeItem(k),
  };
  const newRequestId = () => (crypto.randomUUID ? crypto.randomUUID()
    : Date.now().toString(36) + "-" + Math.random().toString(36).slice(2, 12));
  function nextRequestId() {
    let id = store.get(KEY.next);
    if (!id) { id = newRequestId(); store.set(KEY.next, id); }
    return id;
  }

  // The operator survives reloads on this device (not patient data); the lesion reference only this tab.
  operator.value = localStorage.getItem("dermaedge.operator") || "";
  operator.addEventListener("change", () => localStorage.setItem("dermaedge.operator", operator.value.trim()));
  lesionRef.value = store.get(KEY.lesion) || "";
  lesionRef.addEventListener("input", () => store.set(KEY.lesion, lesionRef.value));
  for (const chip of document.querySelectorAll(".chip-pick")) {
    chip.addEventListener("click", () => { lesionRef.value = chip.dataset.ref; store.set(KEY.lesion, lesionRef.value); });
  }

  function notice(text) {
    const n = $("notice");
    n.textContent = text || "";
    n.hidden = !text;
  }

  // ------------------------------------------------------------- left panel: preview or the analysed image
  function showPreview() {
    shotImg.hidden = true;
    $("shot-caption").hidden = true;
    previewImg.hidden = !previewUrl;
    previewEmpty.hidden = !!previewUrl;
  }

  function showShot(src, caption) {
    shotImg.src = src;
    shotImg.hidden = false;
    previewImg.hidden = true;
    previewEmpty.hidden = true;
    $("shot-caption").textContent = caption;
    $("shot-caption").hidden = !caption;
  }

  let previewInFlight = false;
  async function pollPreview() {
    if (window.dermaPreview) return; // preview.js streams the live frames instead
    if (document.hidden || cameraState === "none" || previewInFlight || state() !== "ready") return;
    previewInFlight = true;
    try {
      const r = await fetch("/preview.jpg", { cache: "no-store" });
      if (state() !== "ready") return; // a capture started meanwhile: keep the frozen frame
      if (r.ok) {
        const url = URL.createObjectURL(await r.blob());
        if (state() !== "ready") { URL.revokeObjectURL(url); return; }
        previewImg.src = url;
        if (previewUrl) URL.revokeObjectURL(previewUrl);
        previewUrl = url;
        showPreview();
      } else {
        const body = await r.json().catch(() => ({}));
        previewImg.hidden = true;
        previewEmpty.hidden = false;
        previewEmpty.textContent = body.error || "Camera not ready";
      }
    } catch (e) {
      previewEmpty.hidden = false;
      previewEmpty.textContent = "Lost contact with the device app…";
    } finally {
      previewInFlight = false;
    }
  }

  // ------------------------------------------------------------- camera status + count
  function setCamera(cam) {
    cameraState = cam.state;
    const pill = $("camera-status");
    pill.className = "pill pill-" + cam.state;
    let text = "Camera: " + cam.kind;
    if (cam.state === "live") text += " · live";
    else if (cam.state === "reconnecting") text += " · reconnecting" + (cam.retry_in_s !== undefined ? " in " + Math.ceil(cam.retry_in_s) + " s" : "");
    else text = "No camera · upload only";
    $("camera-text").textContent = text;
    pill.title = cam.error || cam.source || "";
    updateButtons();
  }

  // The model in force can change while the page is open (`edge-app model install` / rollback).
  function setModel(m) {
    if (!m || !$("model-version")) return;
    $("model-version").textContent = m.model_version;
    $("model-sha").textContent = (m.model_sha256 || "").slice(0, 8);
    $("model-card-link").hidden = !m.model_card_url;
    $("model-fallback").hidden = !m.fallback;
    $("model-fallback-text").textContent = m.fallback || "";
  }

  async function refreshStats() {
    try {
      const r = await fetch("/api/stats", { cache: "no-store" });
      if (!r.ok) return;
      const s = await r.json();
      setCamera(s.camera);
      setModel(s.model);
      const n = s.counts.total || 0;
      $("count-text").textContent = n + " stored";
    } catch (e) { /* the next poll retries */ }
  }

  // ------------------------------------------------------------- states
  function updateButtons() {
    const st = state();
    captureBtn.hidden = st === "result";
    nextBtn.hidden = st !== "result";
    captureBtn.disabled = st !== "ready" || cameraState !== "live";
    $("capture-text").textContent = st === "busy" ? "Analysing…" : "Capture";
    $("upload-label").classList.toggle("is-disabled", st === "busy");
  }

  function setState(st) {
    screen.dataset.state = st;
    document.body.classList.toggle("is-busy", st === "busy");
    updateButtons();
  }

  // ------------------------------------------------------------- heatmap over the analysed image (toggle)
  const heatmap = $("heatmap");
  let heatmapBox = null;

  function hideHeatmap(available) {
    heatmap.hidden = true;
    $("heatmap-controls").hidden = !available;
    $("heatmap-meaning").hidden = true;
    $("heatmap-toggle").setAttribute("aria-pressed", "false");
    $("heatmap-toggle").textContent = "Show where the model looked";
  }

  function offerHeatmap(rec) {
    heatmapBox = rec.heatmap_url ? rec.heatmap_box : null;
    heatmap.removeAttribute("src");
    if (rec.heatmap_url) heatmap.dataset.src = rec.heatmap_url;
    $("heatmap-meaning").textContent = rec.heatmap_meaning_short || "";
    $("heatmap-meaning").title = rec.heatmap_meaning || "";
    hideHeatmap(!!rec.heatmap_url);
  }

  function showHeatmap() {
    if (!heatmap.getAttribute("src")) heatmap.src = heatmap.dataset.src;
    const place = () => placeHeatmap(heatmap, shotImg, heatmapBox);
    if (!place()) shotImg.addEventListener("load", place, { once: true });
    heatmap.hidden = false;
    $("heatmap-meaning").hidden = false;
    $("heatmap-toggle").setAttribute("aria-pressed", "true");
    $("heatmap-toggle").textContent = "Hide heatmap";
  }

  $("heatmap-toggle").addEventListener("click", () => (heatmap.hidden ? showHeatmap() : hideHeatmap(true)));
  window.addEventListener("resize", () => { if (!heatmap.hidden && heatmapBox) placeHeatmap(heatmap, shotImg, heatmapBox); });

  function clearResult(stateName, title, sub) {
    hideHeatmap(false);
    result.dataset.state = stateName;
    $("decision-icon").textContent = "";
    $("decision").textContent = title;
    $("decision-sub").textContent = sub;
    $("prob").hidden = true;
    $("retake").hidden = true;
    $("result-links").hidden = true;
    $("latency-line").hidden = true;
  }

  function ready() {
    store.del(KEY.shown);
    setState("ready");
    if (previewUrl) { URL.revokeObjectURL(previewUrl); previewUrl = null; } // never show a frame from before the last screening
    if (cameraState !== "none") previewEmpty.textContent = "Starting live preview…";
    const upload = cameraState === "none";
    clearResult("empty", "Ready to screen", upload ? "Tap Upload to screen a photo of the lesion."
      : "Centre the lesion in the preview, then tap Capture.");
    showPreview();
    pollPreview();
  }

  function busy(label) {
    notice("");
    setState("busy");
    clearResult("busy", label, "Checking quality, preprocessing and classifying on this device.");
  }

  function showError(message) {
    setState("ready");
    clearResult("error", "Could not screen", message);
    $("decision-icon").textContent = "!";
    showPreview();
  }

  function showRecord(rec) {
    setState("result");
    guardUntil = performance.now() + TAP_GUARD_MS;
    store.set(KEY.shown, rec.id);
    if (rec.request_id && rec.request_id === store.get(KEY.next)) store.set(KEY.next, newRequestId()); // used up
    const verdict = !noVerdict.has(rec.decision);
    const malignant = rec.decision === "malignant";
    result.dataset.state = verdict ? rec.decision : "none";
    $("decision-icon").textContent = !verdict ? "?" : malignant ? "!" : "✓";
    $("decision").textContent = ui.labels[rec.decision] || rec.decision;
    showShot(rec.screen_url, "Analysed image · " + rec.time_local.slice(11) + (rec.lesion_ref ? " · " + rec.lesion_ref : ""));
    if (verdict) {
      $("decision-sub").textContent = (malignant ? "At or above the threshold" : "Below the threshold") + " · " + rec.time_local.slice(11);
      $("bar-fill").style.width = Math.max(1, rec.malignant_probability * 100).toFixed(1) + "%";
      $("bar-threshold").style.left = (rec.threshold * 100).toFixed(1) + "%";
      $("prob-text").textContent = "Malignant probability " + rec.probability_text;
      $("threshold-text").textContent = "threshold " + rec.threshold_text + " (" + rec.threshold_source_text + ")";
      $("prob").hidden = false;
      $("retake").hidden = true;
    } else {
      const outOfScope = rec.decision === "out_of_scope";
      $("decision-sub").textContent = outOfScope ? "Not a dermoscopy image of a skin lesion: no call was made."
        : "Quality check failed: no call was made.";
      $("retake-title").textContent = outOfScope ? "Retake through the dermatoscope:" : "Fix this, then retake:";
      $("prob").hidden = true;
      const list = $("retake-list");
      const lines = outOfScope ? [ui.reasons[rec.decision]] : rec.quality.messages || [];
      list.replaceChildren(...lines.map((m) => {
        const li = document.createElement("li");
        li.textContent = m;
        return li;
      }));
      $("retake").hidden = false;
    }
    offerHeatmap(rec);
    window.dermaTiming?.shown(rec);
    $("result-links").hidden = false;
    $("result-detail").href = rec.detail_url;
    $("result-follow").hidden = !rec.follow_up_url;
    if (rec.follow_up_url) $("result-follow").href = rec.follow_up_url;
    $("result-perf").href = "/performance?id=" + encodeURIComponent(rec.id);
    const t = rec.timings_ms || {};
    let line = "Analysed in " + fmtMs(t.total || 0);
    if (t.end_to_end !== undefined) line += " · tap → result " + fmtMs(t.end_to_end);
    $("latency-line").textContent = line;
    $("latency-line").hidden = false;
  }

  // ------------------------------------------------------------- one request per intent
  async function submit(form, label) {
    if (state() === "busy") return;
    const requestId = nextRequestId();
    busy(label);
    form.append("request_id", requestId);
    form.append("operator", operator.value.trim());
    form.append("lesion_ref", lesionRef.value.trim());
    if (screen.dataset.corrects) form.append("corrects", screen.dataset.corrects);
    store.set(KEY.pending, requestId);
    try {
      const r = await fetch("/api/screenings", { method: "POST", body: form, headers: { "X-CSRF-Token": csrf } });
      const body = await r.json().catch(() => ({ error: "unexpected reply from the device (" + r.status + ")" }));
      store.del(KEY.pending);
      if (r.status === 403 && /CSRF/.test(body.error || "")) {
        showError("Session expired: reloading the page…");
        setTimeout(() => location.reload(), 1200);
      } else if (!r.ok) {
        showError(body.error || "error " + r.status);
      } else {
        showRecord(body);
        if (screen.dataset.corrects) {
          screen.dataset.corrects = "";
          $("correcting")?.remove();
          history.replaceState(null, "", "/");
        }
      }
    } catch (e) {
      showError("Lost contact with the device app. Check that it is running, then try again.");
    } finally {
      if (uploadUrl) { URL.revokeObjectURL(uploadUrl); uploadUrl = null; }
      refreshStats();
    }
  }

  captureBtn.addEventListener("click", (event) => {
    if (state() !== "ready" || performance.now() < guardUntil) return;
    window.dermaTiming?.start("capture", event.timeStamp);
    const frameId = window.dermaPreview?.shownId(); // the frame on screen now is the one analysed
    guardUntil = performance.now() + TAP_GUARD_MS;
    shotBox.classList.remove("is-flash");
    void shotBox.offsetWidth; // restart the flash animation
    shotBox.classList.add("is-flash");
    const form = new FormData();
    if (frameId) form.append("frame_id", frameId);
    submit(form, "Analysing…");
  });

  function startNext() {
    if (state() !== "result" || performance.now() < guardUntil) return;
    ready();
  }
  nextBtn.addEventListener("click", startNext);
  $("retake-btn").addEventListener("click", () => {
    if (cameraState === "none") { if (performance.now() >= guardUntil) uploadInput.click(); return; }
    startNext();
  });

  uploadInput.addEventListener("change", (event) => {
    const file = uploadInput.files[0];
    uploadInput.value = "";
    if (!file) return;
    if (state() === "busy") {
      notice("“" + file.name + "” was not screened: one screening at a time. Upload it again when this result shows.");
      return;
    }
    const form = new FormData();
    form.append("image", file, file.name);
    window.dermaTiming?.start("upload", event.timeStamp);
    if (window.dermaPreview) { // drawn shrunk by preview.js, never decoded full size here
      shotImg.hidden = true;
      window.dermaPreview.showFile(file, "Analysing " + file.name);
    } else {
      uploadUrl = URL.createObjectURL(file);
      showShot(uploadUrl, "Analysing " + file.name);
    }
    submit(form, "Analysing upload…");
  });

  // ------------------------------------------------------------- coming back (reload, Back from Details)
  async function findByRequest(requestId, waitMs) {
    const until = performance.now() + waitMs;
    while (true) {
      try {
        const r = await fetch("/api/screenings?request_id=" + encodeURIComponent(requestId), { cache: "no-store" });
        if (r.ok) {
          const found = (await r.json()).screenings[0];
          if (found) return found;
        }
      } catch (e) { /* retry */ }
      if (performance.now() > until) return null;
      await new Promise((res) => setTimeout(res, 300));
    }
  }

  async function restore() {
    const pending = store.get(KEY.pending);
    if (pending) {
      busy("Finishing the last screening…");
      const rec = await findByRequest(pending, 15000);
      store.del(KEY.pending);
      if (rec) { showRecord(rec); return; }
      showError("The last capture was interrupted and not saved. Capture again.");
      return;
    }
    const next = store.get(KEY.next);
    if (next) {
      const rec = await findByRequest(next, 0); // a tap whose answer the page never saw
      if (rec) { showRecord(rec); return; }
    }
    const shown = store.get(KEY.shown);
    if (shown && !screen.dataset.corrects) {
      try {
        const r = await fetch("/api/screenings/" + encodeURIComponent(shown), { cache: "no-store" });
        if (r.ok) { showRecord(await r.json()); guardUntil = 0; return; }
      } catch (e) { /* fall through */ }
    }
    ready();
    nextRequestId();
  }

  $("bar-threshold").style.left = (parseFloat(screen.dataset.threshold) * 100).toFixed(1) + "%";
  refreshStats();
  restore();
  setInterval(pollPreview, 500);
  setInterval(refreshStats, 5000);
  document.addEventListener("visibilitychange", () => { if (!document.hidden) { pollPreview(); refreshStats(); } });
})();
