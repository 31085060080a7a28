// DermaEdge touch UI. Plain JS, no dependencies, no inline scripts (the CSP forbids them).
"use strict";

(function () {
  const csrf = document.querySelector('meta[name="csrf-token"]')?.content || "";
  const screen = document.getElementById("screen");
  if (!screen) return; // history / follow-up pages need no script

  const $ = (id) => document.getElementById(id);
  const previewImg = $("preview");
  const previewEmpty = $("preview-empty");
  const previewBox = $("preview-box");
  const captureBtn = $("capture");
  const uploadInput = $("upload");
  const operator = $("operator");
  const lesionRef = $("lesion_ref");
  const result = $("result");
  let busy = false;
  let previewUrl = null;
  let cameraState = screen.dataset.camera;

  // The operator name survives reloads on this device (it is not patient data).
  operator.value = localStorage.getItem("dermaedge.operator") || "";
  operator.addEventListener("change", () => localStorage.setItem("dermaedge.operator", operator.value.trim()));

  const fmt = (ms) => (ms === undefined || ms === null ? "–" : ms < 10 ? ms.toFixed(1) : Math.round(ms).toString());
  const pct = (p) => (p * 100).toFixed(p >= 0.995 || p < 0.005 ? 0 : 1) + "%";

  // ------------------------------------------------------------- live preview (polled JPEG)
  let previewInFlight = false;
  async function pollPreview() {
    if (document.hidden || cameraState === "none" || previewInFlight) return;
    previewInFlight = true;
    try {
      const r = await fetch("/preview.jpg", { cache: "no-store" });
      if (r.ok) {
        const blob = await r.blob();
        const url = URL.createObjectURL(blob);
        previewImg.src = url;
        previewImg.hidden = false;
        previewEmpty.hidden = true;
        if (previewUrl) URL.revokeObjectURL(previewUrl);
        previewUrl = url;
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

  // ------------------------------------------------------------- stats + camera status
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
    captureBtn.disabled = busy || cam.state !== "live";
    if (cam.state === "none") {
      previewImg.hidden = true;
      previewEmpty.hidden = false;
    }
  }

  function setRolling(latency) {
    for (const row of document.querySelectorAll("#latency tbody tr")) {
      const s = latency[row.dataset.stage];
      for (const k of ["p50", "p90", "p99"]) row.querySelector("." + k).textContent = s && s.count ? fmt(s[k]) : "–";
    }
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
      setRolling(s.latency_ms);
      setModel(s.model);
      const n = s.counts.total || 0;
      $("count-text").textContent = n + " screening" + (n === 1 ? "" : "s") + " stored";
    } catch (e) { /* the next poll retries */ }
  }

  // ------------------------------------------------------------- result card
  function showBusy(label) {
    busy = true;
    document.body.classList.add("is-busy");
    captureBtn.disabled = true;
    result.dataset.state = "busy";
    $("decision-icon").textContent = "";
    $("decision").textContent = label;
    $("decision-sub").textContent = "Preprocessing and classifying on this device.";
    $("retake").hidden = true;
  }

  function done() {
    busy = false;
    document.body.classList.remove("is-busy");
    captureBtn.disabled = cameraState !== "live";
  }

  function showError(message) {
    result.dataset.state = "error";
    $("decision-icon").textContent = "!";
    $("decision").textContent = "Could not screen";
    $("decision-sub").textContent = message;
    $("bar-fill").style.width = "0";
    $("prob-text").textContent = "Malignant probability —";
    $("result-detail").hidden = true;
    $("result-follow").hidden = true;
  }

  function showRecord(rec) {
    const malignant = rec.decision === "malignant";
    result.dataset.state = malignant ? "malignant" : "benign";
    $("decision-icon").textContent = malignant ? "!" : "✓";
    $("decision").textContent = malignant ? "Suspicious: refer" : "Low suspicion";
    const when = new Date(rec.timestamp).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", hourCycle: "h23" });
    $("decision-sub").textContent = (malignant
      ? "Classified malignant (≥ threshold)"
      : "Classified benign (below threshold)") + " · " + when;
    $("bar-fill").style.width = Math.max(1, rec.malignant_probability * 100).toFixed(1) + "%";
    $("bar-threshold").style.left = (rec.threshold * 100).toFixed(1) + "%";
    $("prob-text").textContent = "Malignant probability " + pct(rec.malignant_probability);
    $("threshold-text").textContent = "threshold " + pct(rec.threshold);
    const retake = $("retake");
    retake.hidden = !rec.please_retake;
    $("retake-text").textContent = (rec.quality.hints || []).join("; ") + ".";
    retake.title = (rec.quality.messages || []).join(" ");
    $("result-detail").hidden = false;
    $("result-detail").href = "/screenings/" + encodeURIComponent(rec.id);
    const follow = $("result-follow");
    follow.hidden = !rec.follow_up_url;
    if (rec.follow_up_url) follow.href = rec.follow_up_url;
    for (const row of document.querySelectorAll("#latency tbody tr")) {
      row.querySelector(".this").textContent = fmt(rec.timings_ms[row.dataset.stage]);
    }
  }

  async function submit(form, label) {
    if (busy) return;
    showBusy(label);
    form.append("operator", operator.value.trim());
    form.append("lesion_ref", lesionRef.value.trim());
    if (screen.dataset.corrects) form.append("corrects", screen.dataset.corrects);
    try {
      const r = await fetch("/api/screenings", { method: "POST", body: form, headers: { "X-CSRF-Token": csrf } });
      const body = await r.json().catch(() => ({ error: "unexpected reply from the device (" + r.status + ")" }));
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
      showError("Lost contact with the device app. Check that it is running.");
    } finally {
      done();
      refreshStats();
    }
  }

  captureBtn.addEventListener("click", () => {
    previewBox.classList.remove("is-flash");
    void previewBox.offsetWidth; // restart the flash animation
    previewBox.classList.add("is-flash");
    submit(new FormData(), "Analysing…");
  });

  uploadInput.addEventListener("change", () => {
    const file = uploadInput.files[0];
    if (!file) return;
    const form = new FormData();
    form.append("image", file, file.name);
    uploadInput.value = "";
    submit(form, "Analysing upload…");
  });

  $("bar-threshold").style.left = (parseFloat(screen.dataset.threshold) * 100).toFixed(1) + "%";
  refreshStats();
  pollPreview();
  setInterval(pollPreview, 500);
  setInterval(refreshStats, 5000);
  document.addEventListener("visibilitychange", () => { if (!document.hidden) { pollPreview(); refreshStats(); } });
})();
