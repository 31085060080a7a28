// DermaEdge touch UI: the Screen page. Plain JS, no dependencies, no inline scripts (the CSP forbids them);
// placeHeatmap() comes from heatmap.js (loaded first). A small state machine (data-state on #screen):
//   ready  -> live preview, Capture enabled while the camera is live (else the card says why, and Upload)
//   busy   -> the image being analysed frozen on the left, the old result cleared, a second upload refused
//   result -> the stored record's own image beside its result until New screening (or Retake). Capture's
//             slot then holds an inert "Result shown" block and New screening sits in Upload's slot, so a
//             second tap where Capture was lands on nothing; a "refer" also needs "Referral noted" first.
// Every capture/upload carries a request_id made here (a repeated POST gets the first record back). The
// id of the *next* screening is saved in sessionStorage long before the tap; on load the page asks the
// server for it and shows a result it had not shown yet. Back from Details finds the shown result the same way.
"use strict";

(function () {
  const csrf = document.querySelector('meta[name="csrf-token"]')?.content || "";
  const screen = document.getElementById("screen");
  if (!screen) return; // the other pages need no more script

  const $ = (id) => document.getElementById(id);
  const ui = JSON.parse(screen.dataset.ui);
  const noVerdict = new Set(ui.noVerdict);
  const shotImg = $("shot");
  const previewEmpty = $("preview-empty");
  const shotBox = $("shot-box");
  const captureBtn = $("capture");
  const nextBtn = $("next");
  const uploadInput = $("upload");
  const operator = $("operator");
  const lesionRef = $("lesion_ref");
  const result = $("result");
  const KEY = { next: "dermaedge.next_request", pending: "dermaedge.pending", shown: "dermaedge.shown",
    lesion: "dermaedge.lesion_ref", ack: "dermaedge.referral_noted" };
  const TAP_GUARD_MS = 800; // taps this soon after a capture tap or a result belong to that screening
  const RECENT_CHIPS = 6;
  let uploadUrl = null;
  let cameraState = screen.dataset.camera;
  let cameraView = null;
  let guardUntil = 0;
  let shownRecord = null;

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

  // ------------------------------------------------------------- operator + lesion reference
  // The operator survives reloads on this device (not patient data). The lesion reference belongs to the
  // screening on screen: kept over a reload or Back, cleared by New screening; recent ones are chips.
  // A correction takes the corrected record's reference (the server files it there too): shown, locked.
  operator.value = localStorage.getItem("dermaedge.operator") || "";
  operator.addEventListener("change", () => localStorage.setItem("dermaedge.operator", operator.value.trim()));
  const locked = () => lesionRef.dataset.locked === "1";
  if (!locked()) lesionRef.value = store.get(KEY.lesion) || "";
  lesionRef.addEventListener("input", () => store.set(KEY.lesion, lesionRef.value));
  const recent = $("recent");

  function pickChip(ref) {
    if (locked()) return;
    lesionRef.value = ref;
    store.set(KEY.lesion, ref);
  }
  function addChip(ref) { // the reference just screened goes first, one tap away for the next lesion
    if (!ref) return;
    const old = [...recent.querySelectorAll(".chip-pick")].find((c) => c.dataset.ref === ref);
    const chip = old || document.createElement("button");
    if (!old) {
      chip.type = "button";
      chip.className = "chip chip-pick";
      chip.dataset.ref = ref;
      const text = document.createElement("span");
      text.className = "chip-text";
      text.textContent = ref;
      chip.append(text);
      chip.addEventListener("click", () => pickChip(ref));
    }
    recent.prepend(chip);
    [...recent.querySelectorAll(".chip-pick")].slice(RECENT_CHIPS).forEach((c) => c.remove());
    recent.hidden = locked();
  }
  for (const chip of recent.querySelectorAll(".chip-pick")) chip.addEventListener("click", () => pickChip(chip.dataset.ref));

  function unlockLesion() {
    if (!locked()) return;
    delete lesionRef.dataset.locked;
    lesionRef.readOnly = false;
    lesionRef.removeAttribute("aria-readonly");
  }

  function notice(text) {
    const n = $("notice");
    n.textContent = text || "";
    n.hidden = !text;
  }

  // ------------------------------------------------------------- left panel: preview or the analysed image
  function showPreview() { // preview.js draws the live frames over the "starting" line
    shotImg.hidden = true;
    $("shot-caption").hidden = true;
    previewEmpty.hidden = false;
  }

  function showShot(src, caption) {
    shotImg.src = src;
    shotImg.hidden = false;
    previewEmpty.hidden = true;
    $("shot-caption").textContent = caption;
    $("shot-caption").hidden = !caption;
  }

  // ------------------------------------------------------------- camera status + count
  function setCamera(cam, view) {
    const changed = cam.state !== cameraState;
    cameraState = cam.state;
    cameraView = view;
    $("camera-status").className = "pill pill-" + cam.state;
    $("camera-text").textContent = view.words;
    $("camera-short").textContent = view.short;
    updateButtons();
    if (state() === "ready" && (changed || cam.state === "reconnecting")) readyCard();
  }

  // The model in force can change while the page is open (`edge-app model install` / rollback).
  function setModel(m) {
    if (!m || !$("model-version")) return;
    $("model-version").textContent = m.model_version;
    $("model-sha").textContent = (m.model_sha256 || "").slice(0, 8);
    $("model-card-part").hidden = !m.model_card_url;
    $("model-fallback").hidden = !m.fallback;
    $("model-fallback-text").textContent = m.fallback || "";
  }

  let statsInFlight = null;
  function refreshStats() {
    if (!statsInFlight) statsInFlight = fetchStats().finally(() => { statsInFlight = null; });
    return statsInFlight;
  }
  async function fetchStats() {
    try {
      const r = await fetch("/api/stats", { cache: "no-store" });
      if (!r.ok) return;
      const s = await r.json();
      setCamera(s.camera, s.camera_view);
      setModel(s.model);
      const count = $("count-text");
      if (count) { count.textContent = (s.counts.total || 0) + " stored"; count.hidden = false; }
    } catch (e) { /* the next poll retries */ }
  }

  // ------------------------------------------------------------- states
  const needsAck = () => shownRecord && shownRecord.decision === "malignant" && store.get(KEY.ack) !== shownRecord.id;

  function updateButtons() {
    const st = state();
    const live = cameraState === "live";
    captureBtn.hidden = st === "result";
    $("result-placeholder").hidden = st !== "result";
    $("upload-label").hidden = st === "result";
    nextBtn.hidden = st !== "result";
    nextBtn.disabled = st === "result" && needsAck();
    captureBtn.disabled = st !== "ready" || !live;
    $("capture-text").textContent = st === "busy" ? "Analysing…" : "Capture";
    $("upload-label").classList.toggle("is-disabled", st === "busy");
    $("upload-label").classList.toggle("btn-primary", !live);
    $("upload-label").classList.toggle("btn-secondary", live);
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
    hideHeatmap(!!rec.heatmap_url);
  }

  function showHeatmap() {
    if (!heatmap.getAttribute("src")) heatmap.src = heatmap.dataset.src;
    const place = () => placeHeatmap(heatmap, shotImg, heatmapBox);
    if (!place()) shotImg.addEventListener("load", place, { once: true });
    heatmap.hidden = false;
    $("heatmap-meaning").hidden = false;
    $("shot-caption").hidden = true; // the meaning takes the caption's place
    $("heatmap-toggle").setAttribute("aria-pressed", "true");
    $("heatmap-toggle").textContent = "Hide heatmap";
  }

  $("heatmap-toggle").addEventListener("click", () => {
    if (heatmap.hidden) { showHeatmap(); return; }
    hideHeatmap(true);
    $("shot-caption").hidden = !$("shot-caption").textContent;
  });
  window.addEventListener("resize", () => { if (!heatmap.hidden && heatmapBox) placeHeatmap(heatmap, shotImg, heatmapBox); });

  function clearResult(stateName, title, sub) {
    hideHeatmap(false);
    result.dataset.state = stateName;
    $("decision-icon").textContent = "";
    $("decision").textContent = title;
    $("decision-sub").textContent = sub;
    for (const id of ["prob", "retake", "result-links", "latency-line", "camera-help", "refer-ack"]) $(id).hidden = true;
  }

  // The card while nothing is on screen: what to do next, and whether the camera can do it.
  function readyCard() {
    if (cameraState === "reconnecting") {
      const lost = !!(cameraView && cameraView.reason);
      clearResult("camera", lost ? "Camera not connected" : "Camera starting…",
        lost ? "Capture is off until the camera is back." : "Capture turns on when the camera sends pictures.");
      $("decision-icon").textContent = "!";
      $("camera-help-text").textContent = (cameraView && cameraView.help) || "";
      $("camera-reason").textContent = (cameraView && cameraView.reason) || "";
      $("camera-reason").hidden = !(cameraView && cameraView.reason);
      $("camera-help").hidden = false;
      previewEmpty.textContent = "No picture from the camera. Tap Upload to screen a photo.";
      return;
    }
    const upload = cameraState === "none";
    clearResult("empty", "Ready to screen", upload ? "Tap Upload to screen a photo of the lesion."
      : "Centre the lesion in the preview, then tap Capture.");
  }

  function ready() {
    store.del(KEY.shown);
    shownRecord = null;
    setState("ready");
    if (cameraState === "live") previewEmpty.textContent = "Starting live preview…";
    readyCard();
    showPreview();
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
    shownRecord = rec;
    setState("result");
    guardUntil = performance.now() + TAP_GUARD_MS;
    store.set(KEY.shown, rec.id);
    if (rec.request_id && rec.request_id === store.get(KEY.next)) store.set(KEY.next, newRequestId()); // used up
    const verdict = !noVerdict.has(rec.decision);
    const malignant = rec.decision === "malignant";
    result.dataset.state = verdict ? rec.decision : "none";
    $("camera-help").hidden = true;
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
      // Said once: the title names the reason, the box says what to do about it.
      const outOfScope = rec.decision === "out_of_scope";
      $("decision-sub").textContent = outOfScope ? "No call was made on this photo."
        : "No call was made: quality check failed.";
      $("prob").hidden = true;
      const lines = outOfScope ? [] : rec.quality.messages || [];
      $("retake-title").textContent = outOfScope ? ui.reasons[rec.decision] // says what a dermoscopy image looks like
        : "Fix this, then retake:";
      $("retake-list").replaceChildren(...lines.map((m) => {
        const li = document.createElement("li");
        li.textContent = m;
        return li;
      }));
      $("retake-list").hidden = !lines.length;
      $("retake").hidden = false;
    }
    $("refer-ack").hidden = !needsAck();
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
    if (rec.lesion_ref) { lesionRef.value = rec.lesion_ref; store.set(KEY.lesion, rec.lesion_ref); addChip(rec.lesion_ref); }
    updateButtons();
  }

  $("ack").addEventListener("click", () => {
    if (!shownRecord || performance.now() < guardUntil) return;
    store.set(KEY.ack, shownRecord.id);
    $("refer-ack").hidden = true;
    updateButtons();
  });

  // ------------------------------------------------------------- one request per intent
  async function submit(form, label, kind) {
    if (state() === "busy") return;
    const requestId = nextRequestId();
    busy(label);
    form.append("request_id", requestId);
    form.append("operator", operator.value.trim());
    form.append("lesion_ref", lesionRef.value.trim());
    if (screen.dataset.corrects) form.append("corrects", screen.dataset.corrects);
    store.set(KEY.pending, { id: requestId, kind: kind });
    try {
      const r = await fetch("/api/screenings", { method: "POST", body: form, headers: { "X-CSRF-Token": csrf } });
      const body = await r.json().catch(() => ({ error: "unexpected reply from the device (" + r.status + ")" }));
      store.del(KEY.pending);
      if (r.status === 403 && /CSRF/.test(body.error || "")) {
        showError("Session expired: reloading the page…");
        setTimeout(() => location.reload(), 1200);
      } else if (r.status === 503 && kind === "capture") {
        await refreshStats();
        if (cameraState !== "live") { ready(); notice("That capture was not taken: the camera is not connected."); }
        else showError("The camera did not answer in time. Tap Capture again, or Upload a photo.");
      } else if (!r.ok) {
        showError(plainError(body.error || "error " + r.status));
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

  // The server's message, starting with a capital; "cannot screen this file:" is said by the title already.
  function plainError(message) {
    const text = message.replace(/^cannot screen this (file|image): /, "");
    return text.charAt(0).toUpperCase() + text.slice(1) + (/[.!?]$/.test(text) ? "" : ".");
  }

  captureBtn.addEventListener("click", (event) => {
    if (state() !== "ready" || cameraState !== "live" || performance.now() < guardUntil) return;
    window.dermaTiming?.start("capture", event.timeStamp);
    const frameId = window.dermaPreview?.shownId(); // the frame on screen now is the one analysed
    guardUntil = performance.now() + TAP_GUARD_MS;
    shotBox.classList.remove("is-flash");
    void shotBox.offsetWidth; // restart the flash animation
    shotBox.classList.add("is-flash");
    const form = new FormData();
    if (frameId) form.append("frame_id", frameId);
    submit(form, "Analysing…", "capture");
  });

  function startNext() {
    if (state() !== "result" || performance.now() < guardUntil || needsAck()) return;
    unlockLesion(); // a new screening is a new lesion until the technician says otherwise
    lesionRef.value = "";
    store.del(KEY.lesion);
    recent.hidden = !recent.querySelector(".chip-pick");
    ready();
  }
  nextBtn.addEventListener("click", startNext);
  $("retake-btn").addEventListener("click", () => {
    if (performance.now() < guardUntil) return;
    if (cameraState !== "live") { uploadInput.click(); return; } // the same lesion: its reference stays
    ready();
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
    submit(form, "Analysing upload…", "upload");
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
      const upload = pending.kind === "upload";
      busy(upload ? "Finishing the last upload…" : "Finishing the last screening…");
      const rec = await findByRequest(pending.id || pending, 15000);
      store.del(KEY.pending);
      if (rec) { showRecord(rec); return; }
      showError(upload ? "The last upload was interrupted and not saved. Upload the photo again."
        : "The last capture was interrupted and not saved. Capture again.");
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
  setInterval(refreshStats, 2000);
  document.addEventListener("visibilitychange", () => { if (!document.hidden) refreshStats(); });
})();
