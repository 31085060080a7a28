// Tap to result as the technician sees it, measured in the browser.
//
// app.js calls start(kind, event.timeStamp) on the Capture tap or when a file is chosen, and shown(rec)
// when the result is on screen. From the tap: "verdict" is the first frame painted with the decision
// text, "image" the first frame painted with the record's own image (its screen rendition) decoded;
// for an upload "local_image" is when the chosen file was first drawn (preview.js). The times go to
// the server (POST /api/timings) for the Performance page, and the last one stays in `last` (the
// browser benchmark reads it).
"use strict";

(function () {
  const csrf = document.querySelector('meta[name="csrf-token"]')?.content || "";
  let run = null;
  const painted = () => new Promise((done) => requestAnimationFrame(() => setTimeout(done, 0)));

  function send(r) {
    const body = { record_id: r.record_id, kind: r.kind, tap_to_verdict: r.verdict, tap_to_image: r.image };
    fetch("/api/timings", { method: "POST", headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf },
                            body: JSON.stringify(body) }).catch(() => { /* a lost report is only a lost sample */ });
    const line = document.getElementById("latency-line");
    if (line && !line.hidden && r.image !== null) line.textContent += " · on screen " + r.image.toFixed(0) + " ms";
  }

  function finish(r) {
    if (r.done || r.verdict === null || r.image === null) return;
    r.done = true;
    window.dermaTiming.last = r;
    window.dermaTiming.history.push(r);
    send(r);
  }

  async function imageDrawn(r, src) {
    const img = document.getElementById("shot");
    if (!img) return;
    try {
      if (!img.complete || !img.src.endsWith(src)) {
        await new Promise((ok, fail) => {
          img.addEventListener("load", ok, { once: true });
          img.addEventListener("error", fail, { once: true });
        });
      }
      await img.decode();
    } catch (e) { return; } // a broken image is never counted as drawn
    await painted();
    if (run !== r) return;
    r.image = performance.now() - r.t0;
    finish(r);
  }

  window.dermaTiming = {
    last: null,
    history: [],
    start(kind, t0) {
      run = { kind, t0: t0 || performance.now(), record_id: null, verdict: null, image: null, local_image: null, done: false };
    },
    localImageDrawn() {
      const r = run;
      if (r && r.local_image === null) painted().then(() => { r.local_image = performance.now() - r.t0; });
    },
    shown(rec) {
      const r = run;
      if (!r || r.record_id) return; // a restored result (reload, Back) was not tapped for
      r.record_id = rec.id;
      painted().then(() => { r.verdict = performance.now() - r.t0; finish(r); });
      imageDrawn(r, rec.screen_url);
    },
  };
})();
