// The live preview: what is seen is what is analysed.
//
// The server streams the capture loop's frames as MJPEG (/api/preview/stream), each part with an
// X-Frame-Id header. This script reads the stream with fetch (an <img> would hide the ids), draws the
// newest frame on the #live canvas and remembers the id of the frame on screen. Frames are drawn only
// while the Screen is "ready": the tap's frame stays frozen while it is analysed, and app.js sends
// `dermaPreview.shownId()` with Capture, so the server screens that very frame (or says it expired).
// About twice a second the guidance line says what the quality gate and scope check say about the
// newest frame. An upload is drawn here too, shrunk by the browser's decoder (a JPEG decoded at 1/2-1/8
// scale by ImageDecoder, else createImageBitmap with resize): a 12 MP original is never decoded full
// size for a 376x280 box.
"use strict";

(function () {
  const screen = document.getElementById("screen");
  if (!screen) return;
  const $ = (id) => document.getElementById(id);
  const canvas = $("live"), empty = $("preview-empty"), shot = $("shot"), guide = $("guidance");
  const caption = $("shot-caption");
  if (!canvas) return;
  const ctx = canvas.getContext("2d");
  const GUIDE_EVERY_MS = 500;
  const hasCamera = screen.dataset.camera !== "none";
  let shownId = 0;       // the live frame on the canvas now (0: none, or the canvas shows an upload)
  let drawn = false;     // the canvas holds something worth showing (a live frame since ready, or an upload)
  let controller = null; // the running stream's AbortController
  let retryTimer = null;
  let pending = null;    // the newest part not drawn yet: {id, jpeg}
  let drawing = false;
  const frameTimes = []; // when the last frames were drawn (the benchmark reads the fps)

  const state = () => screen.dataset.state;
  const live = () => hasCamera && state() === "ready" && !document.hidden;

  function layout() {
    const show = drawn && shot.hidden && state() !== "result";
    if (canvas.hidden === show) canvas.hidden = !show;
    if (show && !empty.hidden) empty.hidden = true;
    const g = live() && shownId > 0 && show;
    if (guide.hidden === g) guide.hidden = !g;
  }

  function say(text) {
    if (!drawn && empty.textContent !== text) empty.textContent = text;
  }

  // ------------------------------------------------------------- stream
  function stop() {
    if (controller) { controller.abort(); controller = null; }
  }

  function later(ms) {
    clearTimeout(retryTimer);
    retryTimer = setTimeout(() => { retryTimer = null; if (live()) start(); }, ms);
  }

  async function start() {
    if (controller || !live()) return;
    const mine = (controller = new AbortController());
    try {
      const r = await fetch("/api/preview/stream", { signal: mine.signal, cache: "no-store" });
      if (!r.ok) {
        const body = await r.json().catch(() => ({}));
        say(body.error || "Camera not ready");
        if (controller === mine) controller = null;
        later(r.status === 404 ? 10000 : 1000);
        return;
      }
      await read(r.body.getReader(), mine);
    } catch (e) {
      if (mine.signal.aborted) return;
      say("Lost contact with the device app…");
    }
    if (controller === mine) { controller = null; later(300); } // the stream ended (time limit, camera lost)
  }

  const CRLF2 = [13, 10, 13, 10];
  function find(buf, pat, from) {
    outer: for (let i = from; i <= buf.length - pat.length; i++) {
      for (let j = 0; j < pat.length; j++) if (buf[i + j] !== pat[j]) continue outer;
      return i;
    }
    return -1;
  }

  async function read(reader, mine) {
    let buf = new Uint8Array(0);
    const text = new TextDecoder();
    while (true) {
      const { value, done } = await reader.read();
      if (done || controller !== mine) return;
      const grown = new Uint8Array(buf.length + value.length);
      grown.set(buf);
      grown.set(value, buf.length);
      buf = grown;
      while (true) {
        const end = find(buf, CRLF2, 0);
        if (end < 0) break;
        const head = text.decode(buf.subarray(0, end));
        const length = /Content-Length:\s*(\d+)/i.exec(head);
        const id = /X-Frame-Id:\s*(\d+)/i.exec(head);
        if (!length || !id) { buf = buf.subarray(end + 4); continue; }
        const from = end + 4, to = from + parseInt(length[1], 10);
        if (buf.length < to + 2) break;
        pending = { id: parseInt(id[1], 10), jpeg: buf.slice(from, to) };
        buf = buf.subarray(to + 2);
        draw();
      }
    }
  }

  async function draw() {
    if (drawing || !pending) return;
    drawing = true;
    const part = pending;
    pending = null;
    try {
      const bitmap = await createImageBitmap(new Blob([part.jpeg], { type: "image/jpeg" }));
      if (live() && part.id > shownId) { // never draw over the frozen frame of a tap
        if (canvas.width !== bitmap.width) canvas.width = bitmap.width;
        if (canvas.height !== bitmap.height) canvas.height = bitmap.height;
        ctx.drawImage(bitmap, 0, 0);
        shownId = part.id;
        drawn = true;
        frameTimes.push(performance.now());
        if (frameTimes.length > 60) frameTimes.shift();
        layout();
      }
      bitmap.close();
    } catch (e) { /* a damaged part: the next one replaces it */ }
    drawing = false;
    if (pending) draw();
  }

  // ------------------------------------------------------------- guidance
  async function pollGuidance() {
    if (!live() || !shownId) return;
    try {
      const r = await fetch("/api/preview/guidance", { cache: "no-store" });
      if (!r.ok) return;
      const g = await r.json();
      if (!live()) return;
      guide.textContent = g.text;
      guide.dataset.ok = g.ok ? "yes" : "no";
      guide.dataset.frame = g.frame_id;
    } catch (e) { /* the next poll retries */ }
  }

  // ------------------------------------------------------------- an upload, drawn shrunk
  // A JPEG's size from its SOF header (the first bytes of the file), so the decoder can be asked for the
  // smallest 1/2, 1/4, 1/8 scale that still fills the box: a 12 MP photo is then decoded at 1/8, in the DCT.
  async function jpegSize(file) {
    const head = new Uint8Array(await file.slice(0, 262144).arrayBuffer());
    if (head[0] !== 0xff || head[1] !== 0xd8) return null;
    for (let i = 2; i + 9 < head.length;) {
      if (head[i] !== 0xff) return null;
      const type = head[i + 1];
      if (type === 0xff) { i += 1; continue; }
      const length = (head[i + 2] << 8) | head[i + 3];
      if (type >= 0xc0 && type <= 0xcf && type !== 0xc4 && type !== 0xc8 && type !== 0xcc) {
        return { h: (head[i + 5] << 8) | head[i + 6], w: (head[i + 7] << 8) | head[i + 8] };
      }
      i += 2 + length;
    }
    return null;
  }

  async function shrunk(file, want) {
    if (typeof ImageDecoder === "function" && file.type === "image/jpeg") { // a secure context (the kiosk's 127.0.0.1)
      const size = await jpegSize(file).catch(() => null);
      if (size && size.w && size.h) {
        let f = 8;
        while (f > 1 && (size.w / f < want || size.h / f < want * 0.75)) f /= 2;
        const decoder = new ImageDecoder({ data: file.stream(), type: "image/jpeg",
                                           desiredWidth: Math.ceil(size.w / f), desiredHeight: Math.ceil(size.h / f) });
        try { return (await decoder.decode()).image; } finally { decoder.close(); }
      }
    }
    return createImageBitmap(file, { resizeWidth: want, resizeQuality: "low" });
  }

  async function showFile(file, text) {
    drawn = false;
    shownId = 0;
    layout();
    const box = canvas.parentElement.getBoundingClientRect();
    const want = Math.max(1, Math.round(Math.max(box.width, box.height) * (window.devicePixelRatio || 1)));
    let picture;
    try {
      picture = await shrunk(file, want);
    } catch (e) { // a format the browser cannot decode (e.g. TIFF): say so until the server's rendition shows
      empty.textContent = text;
      empty.hidden = false;
      return false;
    }
    const w = picture.displayWidth || picture.width, h = picture.displayHeight || picture.height;
    if (state() === "result") { picture.close(); return false; } // the result came first
    canvas.width = w;
    canvas.height = h;
    ctx.drawImage(picture, 0, 0, w, h);
    picture.close();
    drawn = true;
    caption.textContent = text;
    caption.hidden = !text;
    layout();
    window.dermaTiming?.localImageDrawn();
    return true;
  }

  // ------------------------------------------------------------- wiring
  function sync() {
    const st = state();
    if (st === "ready" && lastState !== "ready") { drawn = false; shownId = 0; frameTimes.length = 0; } // never an old frame
    lastState = st;
    if (live()) start(); else stop();
    layout();
  }
  let lastState = null;
  new MutationObserver(sync).observe(screen, { attributes: true, attributeFilter: ["data-state"] });
  new MutationObserver(layout).observe(shot, { attributes: true, attributeFilter: ["hidden"] });
  new MutationObserver(layout).observe(empty, { attributes: true, attributeFilter: ["hidden"] });
  document.addEventListener("visibilitychange", sync);
  setInterval(pollGuidance, GUIDE_EVERY_MS);

  window.dermaPreview = {
    shownId: () => shownId,
    fps: () => {
      const n = frameTimes.length;
      return n < 2 ? 0 : ((n - 1) * 1000) / (frameTimes[n - 1] - frameTimes[0]);
    },
    frames: () => frameTimes.length,
    showFile,
  };
  sync();
})();
