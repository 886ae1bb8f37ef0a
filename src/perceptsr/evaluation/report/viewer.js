// perceptsr comparison viewer: one shared view state (zoom + image point at the viewport centre) drives every
// panel, so all panels always show the same pixels; switching images or models keeps it (HandyViewer-style).
"use strict";
(function () {
  const data = JSON.parse(document.getElementById("report-data").textContent);
  const panels = data.panels;            // [{id: "hr", label}, {id: <model id>, label}, ...]
  const $ = (sel) => document.querySelector(sel);
  const MIN_ZOOM = 1 / 32, MAX_ZOOM = 64;
  const state = {
    image: 0, panel: panels.length > 1 ? 1 : 0, view: "grid",
    zoom: 1, cx: 0, cy: 0, fitted: false,
    wipeA: panels.length > 1 ? 1 : 0, wipeB: 0, wipe: 0.5,
  };

  // ---- formatting -------------------------------------------------------------------------------------
  function value(v) {
    if (v === null || v === undefined) return NaN;
    if (v === "inf") return Infinity;
    if (v === "-inf") return -Infinity;
    return Number(v);
  }
  function fmt(col, v) {
    if (Number.isNaN(v)) return "–";
    if (!Number.isFinite(v)) return v > 0 ? "∞" : "-∞";
    return v.toFixed(col.decimals);
  }
  function bestOf(col, values) {
    const vals = values.filter((v) => !Number.isNaN(v));
    if (vals.length < 2) return null;
    return col.higher_is_better ? Math.max(...vals) : Math.min(...vals);
  }
  function best(col, image) {
    return bestOf(col, panels.slice(1).map((p) => value((image.metrics[p.id] || {})[col.key])));
  }
  function caption(el, index) {
    const image = data.images[state.image], panel = panels[index];
    el.textContent = "";
    const name = document.createElement("span");
    name.className = "name";
    name.textContent = `[${index + 1}] ${panel.label}`;
    el.appendChild(name);
    const metrics = image.metrics[panel.id] || {};
    const cols = index === 0 ? data.columns.filter((c) => c.key === "niqe") : data.columns;
    for (const col of cols) {
      const v = value(metrics[col.key]);
      const span = document.createElement("span");
      span.className = "m";
      span.title = col.convention;
      span.append(col.header + " ");
      const num = document.createElement(index > 0 && v === best(col, image) ? "b" : "span");
      num.textContent = fmt(col, v);
      span.appendChild(num);
      el.appendChild(span);
    }
  }

  // ---- building the panels ----------------------------------------------------------------------------
  const grid = $("#grid");
  panels.forEach((panel, index) => {
    const fig = document.createElement("figure");
    fig.className = "panel";
    fig.dataset.panel = String(index);
    fig.innerHTML = '<div class="viewport"><img alt="" draggable="false"></div><figcaption></figcaption>';
    fig.querySelector("figcaption").addEventListener("click", () => selectPanel(index));
    grid.appendChild(fig);
  });
  for (const sel of [$("#wipe-a"), $("#wipe-b")]) {
    panels.forEach((panel, index) => sel.add(new Option(`[${index + 1}] ${panel.label}`, String(index))));
  }
  const imageSelect = $("#image-select");
  data.images.forEach((image, index) => imageSelect.add(new Option(`${image.dataset} / ${image.name}`, String(index))));
  for (const link of data.links) {
    const a = document.createElement("a");
    a.href = link.href;
    a.textContent = link.text;
    $("#links").appendChild(a);
  }
  buildScores();

  // ---- the scores view: mean per dataset, the protocol once, the conventions behind a toggle ----------
  function buildScores() {
    $("#protocol").textContent = `Protocol: ${data.protocol} ↑ higher is better, ↓ lower is better; bold = best.`;
    for (const line of data.conventions) {
      const li = document.createElement("li");
      li.textContent = line;
      $("#conventions ul").appendChild(li);
    }
    for (const table of data.means) {
      const heading = document.createElement("h2");
      heading.textContent = `${table.dataset} (x${data.scale}, ${table.count} image${table.count === 1 ? "" : "s"})`;
      const el = document.createElement("table");
      el.className = "means";
      el.dataset.dataset = table.dataset;
      const head = el.createTHead().insertRow();
      head.appendChild(Object.assign(document.createElement("th"), { textContent: "model" }));
      for (const col of data.columns) {
        const th = document.createElement("th");
        th.textContent = `${col.header} ${col.higher_is_better ? "↑" : "↓"}`;
        th.title = col.convention;
        head.appendChild(th);
      }
      const body = el.createTBody();
      const bests = data.columns.map((col) => bestOf(col, table.rows.map((r) => value(r.mean[col.key]))));
      for (const row of table.rows) {
        const tr = body.insertRow();
        tr.title = "show this model (single view)";
        tr.addEventListener("click", () => { state.panel = row.panel; setView("single"); });
        tr.insertCell().textContent = `[${row.panel + 1}] ${row.label}`;
        data.columns.forEach((col, i) => {
          const v = value(row.mean[col.key]);
          const cell = tr.insertCell();
          const num = document.createElement(v === bests[i] ? "b" : "span");
          num.textContent = fmt(col, v);
          cell.appendChild(num);
        });
      }
      $("#means").append(heading, el);
      const niqe = value(table.hr_niqe);
      if (!Number.isNaN(niqe)) {
        const note = document.createElement("p");
        note.className = "means-note";
        note.textContent = `HR (ground truth) NIQE, for reference: ${niqe.toFixed(3)}.`;
        $("#means").appendChild(note);
      }
    }
  }

  function visibleViewports() {
    return Array.from(document.querySelectorAll(`#${state.view} .viewport`));
  }
  const showsImages = () => state.view !== "scores";

  // ---- geometry ---------------------------------------------------------------------------------------
  // Heights come from CSS flex (the views fill the window between header and footer; a caption takes its natural
  // height and the viewport the rest), so captions are always inside the window. Only the grid's columns and the
  // grid captions' common height are set here: equal captions keep every grid viewport the same size.
  function layout() {
    const n = panels.length;
    const cols = n <= 4 ? n : Math.ceil(n / Math.ceil(n / 4));
    grid.style.gridTemplateColumns = `repeat(${cols}, minmax(0, 1fr))`;
    grid.style.gridTemplateRows = `repeat(${Math.ceil(n / cols)}, minmax(0, 1fr))`;
  }
  function equalCaptions() {
    const captions = Array.from(grid.querySelectorAll("figcaption"));
    captions.forEach((c) => { c.style.height = ""; });
    const tallest = Math.ceil(Math.max(...captions.map((c) => c.getBoundingClientRect().height)));
    captions.forEach((c) => { c.style.height = `${tallest}px`; });
  }
  function size() {
    const vp = visibleViewports()[0];
    return [vp.clientWidth, vp.clientHeight];
  }
  function fit() {
    if (!showsImages()) { apply(); return; }
    apply();  // captions of this image first: they set the viewport size that the image is fitted to
    const image = data.images[state.image];
    const [w, h] = size();
    state.zoom = Math.min(w / image.width, h / image.height);
    state.cx = image.width / 2;
    state.cy = image.height / 2;
    state.fitted = true;
    apply();
  }
  function clampCenter() {
    const image = data.images[state.image];
    state.cx = Math.min(Math.max(state.cx, 0), image.width);
    state.cy = Math.min(Math.max(state.cy, 0), image.height);
  }
  function zoomAt(px, py, factor) {
    if (!showsImages()) return;
    const [w, h] = size();
    const ix = state.cx + (px - w / 2) / state.zoom, iy = state.cy + (py - h / 2) / state.zoom;
    state.zoom = Math.min(MAX_ZOOM, Math.max(MIN_ZOOM, state.zoom * factor));
    state.cx = ix - (px - w / 2) / state.zoom;
    state.cy = iy - (py - h / 2) / state.zoom;
    state.fitted = false;
    clampCenter();
    apply();
  }
  function zoomBy(factor) {
    if (!showsImages()) return;
    const [w, h] = size();
    zoomAt(w / 2, h / 2, factor);
  }
  function pan(dx, dy) {
    if (!showsImages()) return;
    state.cx -= dx / state.zoom;
    state.cy -= dy / state.zoom;
    state.fitted = false;
    clampCenter();
    apply();
  }

  // ---- drawing ----------------------------------------------------------------------------------------
  function setSrc(img, panelIndex) {
    const image = data.images[state.image];
    const src = image.src[panels[panelIndex].id];
    if (img.getAttribute("src") !== src) img.setAttribute("src", src);
    img.width = image.width;
    img.height = image.height;
  }
  function apply() {
    const image = data.images[state.image];
    document.querySelectorAll("#view-buttons button").forEach((b) => b.classList.toggle("active", b.dataset.view === state.view));
    document.title = `${image.dataset} / ${image.name} — ${data.title}`;
    if (!showsImages()) return;
    document.body.classList.toggle("magnified", state.zoom > 1);
    $("#zoom-level").textContent = `${Math.round(state.zoom * 100)}%`;
    $("#image-count").textContent = `${state.image + 1} / ${data.images.length}`;
    imageSelect.value = String(state.image);
    if (state.view === "grid") {
      document.querySelectorAll("#grid .panel").forEach((fig, index) => {
        setSrc(fig.querySelector("img"), index);
        caption(fig.querySelector("figcaption"), index);
        fig.classList.toggle("selected", index === state.panel);
      });
    } else if (state.view === "single") {
      setSrc($("#single img"), state.panel);
      caption($("#single figcaption"), state.panel);
    } else {
      setSrc($("#wipe .layer-a img"), state.wipeA);
      setSrc($("#wipe .layer-b img"), state.wipeB);
      $("#wipe .layer-a").style.clipPath = `inset(0 ${((1 - state.wipe) * 100).toFixed(2)}% 0 0)`;
      $("#wipe .wipe-line").style.left = `${(state.wipe * 100).toFixed(2)}%`;
      $("#wipe-a").value = String(state.wipeA);
      $("#wipe-b").value = String(state.wipeB);
      $("#wipe-slider").value = String(Math.round(state.wipe * 1000));
      caption($("#wipe .cap-a"), state.wipeA);
      caption($("#wipe .cap-b"), state.wipeB);
    }
    if (state.view === "grid") equalCaptions();
    // captions first: their height sets the viewport's, which the transform is centred in
    const [w, h] = size();
    const tx = (w / 2 - state.cx * state.zoom).toFixed(2), ty = (h / 2 - state.cy * state.zoom).toFixed(2);
    const transform = `translate(${tx}px, ${ty}px) scale(${state.zoom.toFixed(5)})`;
    for (const vp of visibleViewports()) {
      for (const img of vp.querySelectorAll("img")) img.style.transform = transform;
    }
  }
  function preload(index) {
    const image = data.images[index];
    if (image) for (const panel of panels) new Image().src = image.src[panel.id];
  }

  // ---- actions ----------------------------------------------------------------------------------------
  function setImage(index) {
    const n = data.images.length;
    state.image = ((index % n) + n) % n;
    if (state.fitted) fit(); else { clampCenter(); apply(); }
    preload((state.image + 1) % n);
  }
  function selectPanel(index) {
    const n = panels.length;
    index = ((index % n) + n) % n;
    state.panel = index;
    if (state.view === "wipe") {
      if (index === state.wipeB) state.wipeB = state.wipeA;
      state.wipeA = index;
    }
    apply();
  }
  function setView(view) {
    state.view = view;
    for (const id of ["grid", "single", "wipe", "scores"]) document.getElementById(id).hidden = id !== view;
    if (view === "wipe" && state.wipeA === state.wipeB) state.wipeA = state.panel === state.wipeB ? (state.wipeB + 1) % panels.length : state.panel;
    if (state.fitted) fit(); else apply();
  }
  function setWipe(fraction) {
    state.wipe = Math.min(1, Math.max(0, fraction));
    apply();
  }

  // ---- input ------------------------------------------------------------------------------------------
  for (const vp of document.querySelectorAll(".viewport")) {
    vp.addEventListener("wheel", (e) => {
      e.preventDefault();
      const r = vp.getBoundingClientRect();
      const step = e.deltaMode === 1 ? e.deltaY * 40 : e.deltaY;
      zoomAt(e.clientX - r.left, e.clientY - r.top, Math.exp(-Math.max(-400, Math.min(400, step)) * 0.0025));
    }, { passive: false });
    let last = null;
    vp.addEventListener("pointerdown", (e) => {
      if (e.button !== 0) return;
      last = [e.clientX, e.clientY];
      vp.setPointerCapture(e.pointerId);
      vp.classList.add("dragging");
    });
    vp.addEventListener("pointermove", (e) => {
      if (!last) return;
      pan(e.clientX - last[0], e.clientY - last[1]);
      last = [e.clientX, e.clientY];
    });
    const end = () => { last = null; vp.classList.remove("dragging"); };
    vp.addEventListener("pointerup", end);
    vp.addEventListener("pointercancel", end);
  }
  $("#prev").addEventListener("click", () => setImage(state.image - 1));
  $("#next").addEventListener("click", () => setImage(state.image + 1));
  imageSelect.addEventListener("change", () => { setImage(Number(imageSelect.value)); imageSelect.blur(); });
  document.querySelectorAll("#view-buttons button").forEach((b) => b.addEventListener("click", () => setView(b.dataset.view)));
  $("#zoom-in").addEventListener("click", () => zoomBy(1.25));
  $("#zoom-out").addEventListener("click", () => zoomBy(0.8));
  $("#zoom-fit").addEventListener("click", fit);
  $("#zoom-one").addEventListener("click", () => zoomBy(1 / state.zoom));
  $("#wipe-slider").addEventListener("input", (e) => setWipe(Number(e.target.value) / 1000));
  $("#wipe-slider").addEventListener("change", (e) => e.target.blur());
  $("#wipe-a").addEventListener("change", (e) => { state.wipeA = Number(e.target.value); state.panel = state.wipeA; apply(); e.target.blur(); });
  $("#wipe-b").addEventListener("change", (e) => { state.wipeB = Number(e.target.value); apply(); e.target.blur(); });

  const keys = {
    ArrowRight: () => setImage(state.image + 1), ArrowLeft: () => setImage(state.image - 1),
    ArrowDown: () => selectPanel(state.panel + 1), ArrowUp: () => selectPanel(state.panel - 1),
    g: () => setView("grid"), s: () => setView("single"), w: () => setView("wipe"), t: () => setView("scores"),
    Enter: () => setView("single"),
    "+": () => zoomBy(1.25), "=": () => zoomBy(1.25), "-": () => zoomBy(0.8), f: fit, r: () => zoomBy(1 / state.zoom),
    "[": () => setWipe(state.wipe - 0.05), "]": () => setWipe(state.wipe + 0.05),
    x: () => { [state.wipeA, state.wipeB] = [state.wipeB, state.wipeA]; state.panel = state.wipeA; apply(); },
  };
  window.addEventListener("keydown", (e) => {
    if (e.ctrlKey || e.metaKey || e.altKey || e.target.tagName === "SELECT") return;
    const digit = /^[1-9]$/.test(e.key) ? Number(e.key) - 1 : -1;
    const action = digit >= 0 ? (digit < panels.length ? () => selectPanel(digit) : null) : keys[e.key];
    if (!action) return;
    e.preventDefault();
    action();
  }, true);
  window.addEventListener("resize", () => { layout(); if (state.fitted) fit(); else apply(); });

  layout();
  fit();
  preload(1 % data.images.length);
  // for scripts and tests: the state and the actions
  window.perceptsrViewer = { data, state, setImage, selectPanel, setView, setWipe, zoomBy, fit, pan };
})();
