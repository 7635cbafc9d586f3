// handit view: a flame chart per process, thread and task, drawn on a canvas from columnar data.
// No framework and no network: the data (META, the inflated blob) is in the page.
'use strict';
(function () {
  const t_start = performance.now();
  const $ = (id) => document.getElementById(id);
  const META = JSON.parse($('meta').textContent);
  const RULER_H = 22, PROC_H = 20, HEAD_H = 18, ROW_H = 17, HTTP_H = 15, MIN_LABEL = 26;
  const F_RAISED = 1, F_INCOMPLETE = 2, F_ABANDONED = 4, F_SUSPENDABLE = 8;
  const SEP = '\x01';
  const api = { ready: false, error: null };
  window.handitViewer = api;

  // ---- formatting ---------------------------------------------------------------------
  function fmtNs(ns) {
    if (ns == null || !isFinite(ns)) return '-';
    const a = Math.abs(ns);
    if (a < 1e3) return ns.toFixed(0) + ' ns';
    const units = [['µs', 1e3], ['ms', 1e6], ['s', 1e9]];
    for (let k = 0; k < units.length; k++) {
      const v = ns / units[k][1];
      if (Math.abs(v) < 1000 || k === units.length - 1) return (Math.abs(v) < 100 ? v.toPrecision(3) : v.toFixed(0)) + ' ' + units[k][0];
    }
    return '';
  }
  // a ruler tick: in the unit of the step, with the decimals that tell ticks apart (369.02 ms, 369.04 ms)
  function fmtTick(t, step, magnitude) {
    const units = [['ns', 1], ['µs', 1e3], ['ms', 1e6], ['s', 1e9]];
    let k = 0;
    while (k < units.length - 1 && magnitude >= units[k + 1][1]) k++;
    const [unit, scale] = units[k], decimals = Math.max(0, Math.min(6, Math.ceil(-Math.log10(step / scale) - 1e-9)));
    return (t / scale).toFixed(decimals) + ' ' + unit;
  }
  const fmtInt = (n) => n.toLocaleString('en-US');
  function shorten(s, n) { s = String(s).replace(/\r/g, '\\r').replace(/\n/g, '\\n'); return s.length <= n ? s : s.slice(0, n - 1) + '…'; }
  function el(tag, attrs, ...kids) {
    const e = document.createElement(tag);
    if (attrs) for (const k in attrs) {
      if (k === 'class') e.className = attrs[k];
      else if (k === 'text') e.textContent = attrs[k];
      else if (k.startsWith('on')) e.addEventListener(k.slice(2), attrs[k]);
      else e.setAttribute(k, attrs[k]);
    }
    for (const k of kids) if (k != null) e.append(k);  // strings become text nodes: trace data is never parsed as HTML
    return e;
  }

  // ---- data ---------------------------------------------------------------------------
  async function inflate() {
    const text = $('blob').textContent.trim();
    let bytes;
    if (Uint8Array.fromBase64) bytes = Uint8Array.fromBase64(text);  // native where the browser has it (Chromium 140+)
    else {
      const bin = atob(text);
      bytes = new Uint8Array(bin.length);
      for (let i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
    }
    const stream = new Blob([bytes]).stream().pipeThrough(new DecompressionStream('deflate'));
    return new Response(stream).arrayBuffer();
  }

  function column(buf, spec, delta) {
    const [offset, n, type] = spec;
    if (type === 'u8') return new Uint8Array(buf, offset, n);
    if (type === 'u32') return new Uint32Array(buf, offset, n);
    if (type === 'i32') return new Int32Array(buf, offset, n);
    const words = new Int32Array(buf, offset, 2 * n), out = new Float64Array(n);  // int64 little-endian
    let acc = 0;
    for (let i = 0; i < n; i++) {
      const v = words[2 * i + 1] * 4294967296 + (words[2 * i] >>> 0);
      out[i] = delta ? (acc += v) : v;
    }
    return out;
  }

  function decode(buf) {
    const c = META.columns, D = { n: META.calls };
    D.t0 = column(buf, c.t0, true);
    for (const name of ['dur', 'own', 'susp']) D[name] = column(buf, c[name], false);
    for (const name of ['code', 'track', 'depth', 'parent', 'flags', 'args', 'ret']) D[name] = column(buf, c[name]);
    D.strings = JSON.parse(new TextDecoder().decode(new Uint8Array(buf, META.strings[0], META.strings[1])));
    return D;
  }

  // Rows: every (track, depth) pair is a row; its calls in start order, for binary search while drawing.
  function buildRows(D, tracks) {
    const nT = tracks.length, maxDepth = new Int32Array(nT).fill(-1), count = new Int32Array(nT);
    for (let i = 0; i < D.n; i++) {
      const t = D.track[i];
      count[t]++;
      if (D.depth[i] > maxDepth[t]) maxDepth[t] = D.depth[i];
    }
    let nRows = 0;
    tracks.forEach((tr, t) => { tr.calls = count[t]; tr.depth = maxDepth[t] + 1; tr.rowBase = nRows; nRows += tr.depth; });
    const start = new Int32Array(nRows + 1);
    for (let i = 0; i < D.n; i++) start[tracks[D.track[i]].rowBase + D.depth[i] + 1]++;
    for (let r = 0; r < nRows; r++) start[r + 1] += start[r];
    const fill = start.slice(0, nRows), idx = new Int32Array(D.n);
    for (let i = 0; i < D.n; i++) idx[fill[tracks[D.track[i]].rowBase + D.depth[i]]++] = i;
    const t0 = D.t0;
    for (let r = 0; r < nRows; r++) {  // calls end in order of their end: a row of nested calls is already sorted
      let sorted = true;
      for (let k = start[r] + 1; k < start[r + 1]; k++) if (t0[idx[k]] < t0[idx[k - 1]]) { sorted = false; break; }
      if (!sorted) {
        const part = Array.from(idx.subarray(start[r], start[r + 1])).sort((a, b) => t0[a] - t0[b]);
        idx.set(part, start[r]);
      }
    }
    // children lists from parent pointers, row by row: a parent's children on its own track are one row, in start order
    const first = new Int32Array(D.n).fill(-1), next = new Int32Array(D.n).fill(-1), last = new Int32Array(D.n).fill(-1);
    for (let k = 0; k < D.n; k++) {
      const i = idx[k], p = D.parent[i];
      if (p < 0) continue;
      if (last[p] < 0) first[p] = i; else next[last[p]] = i;
      last[p] = i;
    }
    D.rowStart = start; D.rowIdx = idx; D.firstChild = first; D.nextSibling = next; D.nRows = nRows;
  }

  // first position k in row r with t0[idx[k]] >= t
  function lowerBound(r, t) {
    let lo = D.rowStart[r], hi = D.rowStart[r + 1];
    const idx = D.rowIdx, t0 = D.t0;
    while (lo < hi) { const m = (lo + hi) >> 1; if (t0[idx[m]] < t) lo = m + 1; else hi = m; }
    return lo;
  }

  // ---- state --------------------------------------------------------------------------
  let D = null;
  const tracks = META.tracks.map((t, i) => Object.assign({ index: i, collapsed: false, http: [] }, t));
  const sessions = META.sessions;
  const sessionById = new Map(sessions.map((s) => [s.id, s]));
  const codes = META.codes;
  const http = META.http;
  http.forEach((h, i) => { h.index = i; if (tracks[h.track]) tracks[h.track].http.push(h); });
  const view = { t0: 0, t1: 1, scrollY: 0, session: '' };
  let selected = -1, selectedHttp = -1, matchCodes = null, matchList = null, matchPos = -1;
  let layout = [], groups = [], contentH = 0, dirty = true, themeColors = null;
  const processes = processTable(), collapsedPids = new Set();
  const canvas = $('canvas'), ctx = canvas.getContext('2d');
  let W = 0, H = 0, dpr = 1;
  const lastFrame = { rects: [], aggregated: [] };

  function pidOf(tr) { const s = sessionById.get(tr.session); return s && s.pid != null ? s.pid : null; }

  // one group per process: its header says which process it is, what started it and how much it did
  function processTable() {
    const byPid = new Map(), pidOfSession = new Map(sessions.map((s) => [s.id, s.pid != null ? s.pid : null]));
    for (const s of sessions) {
      const pid = s.pid != null ? s.pid : null;
      let p = byPid.get(pid);
      if (!p) byPid.set(pid, p = { pid, tag: s.tag, sessions: 0, threads: new Set(), calls: 0, parentPid: null });
      p.sessions++;
      const up = s.parent != null ? pidOfSession.get(s.parent) : undefined;
      if (up != null && up !== pid && p.parentPid == null) p.parentPid = up;
    }
    for (const tr of tracks) {
      const p = byPid.get(pidOf(tr));
      if (!p) continue;
      p.calls += tr.calls || 0;
      if (tr.kind === 'thread') p.threads.add(tr.thread);
    }
    return byPid;
  }

  function processLabel(pid) {
    const p = processes.get(pid) || { tag: null, sessions: 0, threads: new Set(), calls: 0, parentPid: null };
    const parts = [pid != null ? 'process ' + pid : 'process ?'];
    if (p.tag != null) parts.push(String(p.tag));
    if (p.parentPid != null) parts.push('child of ' + p.parentPid);
    parts.push(plural(p.sessions, 'session'), plural(p.threads.size, 'thread'), plural(p.calls, 'call'));
    return parts.join('  ·  ');
  }
  function plural(n, word) { return fmtInt(n) + ' ' + word + (n === 1 ? '' : 's'); }

  function trackLabel(tr) {
    const s = sessionById.get(tr.session) || {};
    let name = tr.name;
    if (tr.kind === 'thread' && /^thread \d+$/.test(name)) name = 'thread ' + tr.order;
    if (tr.kind === 'task') name = 'task ' + name;
    const proc = s.pid != null ? 'pid ' + s.pid : 'process ?';
    return proc + ' · ' + (s.tag != null ? s.tag : s.id.slice(0, 8)) + ' · ' + name;
  }

  function visibleTracks() {
    const order = tracks.filter((tr) => !view.session || tr.session === view.session);
    const sessIndex = new Map(sessions.map((s, i) => [s.id, i]));
    order.sort((a, b) => {
      const sa = sessionById.get(a.session) || {}, sb = sessionById.get(b.session) || {};
      return (sa.pid || 0) - (sb.pid || 0) || sessIndex.get(a.session) - sessIndex.get(b.session) || a.order - b.order;
    });
    return order;
  }

  function relayout() {
    layout = []; groups = [];
    let y = 0;
    for (const tr of visibleTracks()) {
      const pid = pidOf(tr);
      if (!groups.length || groups[groups.length - 1].pid !== pid) { groups.push({ pid, y }); y += PROC_H; }
      if (collapsedPids.has(pid)) continue;
      const item = { track: tr, y, httpY: -1, rowsY: 0, h: HEAD_H };
      y += HEAD_H;
      if (!tr.collapsed) {
        if (tr.http.length) { item.httpY = y; y += HTTP_H; }
        item.rowsY = y;
        y += tr.depth * ROW_H + 4;
      }
      item.h = y - item.y;
      layout.push(item);
    }
    contentH = y;
    clampScroll();
  }

  function timeRange() {
    let lo = Infinity, hi = -Infinity;
    const chosen = view.session ? sessions.filter((s) => s.id === view.session) : sessions;
    for (const s of chosen) {
      if (s.t0 != null) lo = Math.min(lo, s.t0);
      if (s.t1 != null) hi = Math.max(hi, s.t1);
    }
    for (const item of layout) {
      const tr = item.track;
      for (let d = 0; d < tr.depth; d++) {
        const r = tr.rowBase + d, a = D.rowStart[r], b = D.rowStart[r + 1];
        if (a < b) { lo = Math.min(lo, D.t0[D.rowIdx[a]]); const i = D.rowIdx[b - 1]; hi = Math.max(hi, D.t0[i] + D.dur[i]); }
        if (d === 0) for (let k = a; k < b; k++) { const i = D.rowIdx[k]; hi = Math.max(hi, D.t0[i] + D.dur[i]); }
      }
      for (const h of tr.http) { lo = Math.min(lo, h.t0); hi = Math.max(hi, h.t1 != null ? h.t1 : h.t0); }
    }
    if (!isFinite(lo)) { lo = 0; hi = 1; }
    if (hi <= lo) hi = lo + 1000;
    return [lo, hi];
  }

  function fit() {
    const [lo, hi] = timeRange(), pad = (hi - lo) * 0.01;
    view.t0 = lo - pad; view.t1 = hi + pad;
    redraw();
  }

  function clampScroll() {
    const max = Math.max(0, contentH - (H - RULER_H));
    view.scrollY = Math.min(Math.max(0, view.scrollY), max);
  }

  function redraw() { if (!dirty) { dirty = true; requestAnimationFrame(draw); } }

  // ---- colours ------------------------------------------------------------------------
  function readTheme() {
    const cs = getComputedStyle(document.documentElement), v = (n) => cs.getPropertyValue(n).trim();
    const L = v('--lightness'), S = v('--saturation');
    themeColors = {
      bg: v('--bg'), fg: v('--fg'), dim: v('--dim'), line: v('--line'), track: v('--track'), ruler: v('--ruler'),
      agg: v('--agg'), error: v('--error'), http: v('--http'), llm: v('--llm'), select: v('--select'), accent: v('--accent'),
      code: codes.map((c) => 'hsl(' + hue(c[1] + '.' + c[0]) + ',' + S + ',' + L + ')'),
      faded: codes.map((c) => 'hsla(' + hue(c[1] + '.' + c[0]) + ',' + S + ',' + L + ',0.22)'),
      text: L.startsWith('3') || L.startsWith('2') ? '#f2f4f8' : '#111827',
    };
  }
  function hue(s) { let h = 2166136261; for (let i = 0; i < s.length; i++) { h ^= s.charCodeAt(i); h = Math.imul(h, 16777619); } return (h >>> 0) % 360; }
  function setTheme(name) {
    document.documentElement.dataset.theme = name;
    try { localStorage.setItem('handit-view-theme', name); } catch (e) { /* a file page may have no storage */ }
    readTheme(); redraw();
  }

  // ---- drawing ------------------------------------------------------------------------
  const labelWidth = new Map();
  function fitLabel(text, w) {
    let full = labelWidth.get(text);
    if (full === undefined) { full = ctx.measureText(text).width; labelWidth.set(text, full); }
    if (full <= w) return text;
    const n = Math.floor(text.length * w / full) - 1;
    return n < 2 ? '' : text.slice(0, n) + '…';
  }

  function resize() {
    dpr = window.devicePixelRatio || 1;
    const r = canvas.getBoundingClientRect();
    W = Math.max(1, r.width); H = Math.max(1, r.height);
    canvas.width = Math.round(W * dpr); canvas.height = Math.round(H * dpr);
    clampScroll(); redraw();
  }

  function niceStep(span, px) {
    const raw = span / Math.max(1, px / 90), p = Math.pow(10, Math.floor(Math.log10(raw)));
    for (const m of [1, 2, 5, 10]) if (m * p >= raw) return m * p;
    return 10 * p;
  }

  function draw() {
    dirty = false;
    const C = themeColors, scale = W / (view.t1 - view.t0), vs = view.t0, ve = view.t1;
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.fillStyle = C.bg; ctx.fillRect(0, 0, W, H);
    ctx.font = '11px system-ui, -apple-system, "Segoe UI", Roboto, sans-serif';
    ctx.textBaseline = 'middle';
    const rects = new Array(tracks.length).fill(0), aggregated = new Array(tracks.length).fill(0);
    const top = RULER_H - view.scrollY;
    let selBox = null;
    ctx.font = 'bold 11px system-ui, -apple-system, "Segoe UI", Roboto, sans-serif';
    for (const g of groups) {
      const y0 = top + g.y;
      if (y0 > H || y0 + PROC_H < RULER_H) continue;
      ctx.fillStyle = C.ruler; ctx.fillRect(0, y0, W, PROC_H);
      ctx.fillStyle = C.line; ctx.fillRect(0, y0 + PROC_H - 1, W, 1);
      ctx.fillStyle = C.fg;
      ctx.fillText((collapsedPids.has(g.pid) ? '▸ ' : '▾ ') + processLabel(g.pid), 6, y0 + PROC_H / 2);
    }
    ctx.font = '11px system-ui, -apple-system, "Segoe UI", Roboto, sans-serif';
    for (const item of layout) {
      const y0 = top + item.y;
      if (y0 > H || y0 + item.h < RULER_H) continue;
      const tr = item.track;
      ctx.fillStyle = C.track; ctx.fillRect(0, y0, W, HEAD_H);
      ctx.fillStyle = C.fg;
      ctx.fillText((tr.collapsed ? '▸ ' : '▾ ') + trackLabel(tr) + '  ·  ' + fmtInt(tr.calls) + ' calls', 6, y0 + HEAD_H / 2);
      if (tr.collapsed) continue;
      if (item.httpY >= 0) {
        const hy = top + item.httpY;
        for (const h of tr.http) {
          const x0 = (h.t0 - vs) * scale, x1 = ((h.t1 != null ? h.t1 : h.t0) - vs) * scale;
          if (x1 < 0 || x0 > W) continue;
          const w = Math.max(2, x1 - x0);
          ctx.fillStyle = h.llm ? C.llm : C.http;
          ctx.fillRect(x0, hy + 1, w, HTTP_H - 2);
          if (h.index === selectedHttp) { ctx.strokeStyle = C.select; ctx.lineWidth = 2; ctx.strokeRect(x0, hy + 1, w, HTTP_H - 2); }
          if (w > MIN_LABEL) { ctx.fillStyle = '#fff'; ctx.fillText(fitLabel(httpLabel(h), w - 6), Math.max(x0, 0) + 3, hy + HTTP_H / 2); }
        }
      }
      for (let d = 0; d < tr.depth; d++) {
        const y = top + item.rowsY + d * ROW_H;
        if (y > H || y + ROW_H < RULER_H) continue;
        const r = tr.rowBase + d, end = D.rowStart[r + 1], idx = D.rowIdx, t0 = D.t0, dur = D.dur;
        let k = Math.max(D.rowStart[r], lowerBound(r, vs) - 1);
        while (k < end) {
          const i = idx[k], s = t0[i];
          if (s > ve) break;
          const x0 = (s - vs) * scale, x1 = (s + dur[i] - vs) * scale;
          if (x1 < 0) { k++; continue; }
          if (x1 - x0 >= 1) {
            const code = D.code[i];
            ctx.fillStyle = matchCodes && !matchCodes[code] ? C.faded[code] : C.code[code];
            const xa = Math.max(x0, -1), w = Math.min(x1, W + 1) - xa;
            ctx.fillRect(xa, y, w - (w > 3 ? 0.5 : 0), ROW_H - 1);
            if (D.flags[i] & F_RAISED) { ctx.fillStyle = C.error; ctx.fillRect(xa, y + ROW_H - 4, w, 3); }
            if (w > MIN_LABEL) {
              const label = fitLabel(codes[code][0], w - 6);
              if (label) { ctx.fillStyle = C.text; ctx.fillText(label, xa + 3, y + ROW_H / 2); }
            }
            if (i === selected) selBox = [xa, y, w, ROW_H - 1];
            rects[tr.index]++;
            k++;
          } else {
            // calls narrower than a pixel: one block for this pixel column, then jump past it
            const px = Math.floor(x0), tb = vs + (px + 1) / scale;
            let j = lowerBound(r, tb);
            if (j <= k) j = k + 1;
            let hit = false;
            if (matchCodes) for (let q = k; q < j && !hit; q++) hit = matchCodes[D.code[idx[q]]] === 1;
            ctx.fillStyle = hit ? C.accent : C.agg;
            ctx.fillRect(px, y, 1, ROW_H - 1);
            if (selected >= 0) for (let q = k; q < j; q++) if (idx[q] === selected) selBox = [px, y, 1, ROW_H - 1];
            aggregated[tr.index]++;
            const lastI = idx[j - 1];
            k = (j - 1 > k && (t0[lastI] + dur[lastI] - vs) * scale - px > 1) ? j - 1 : j;
          }
        }
      }
    }
    if (selBox) {
      ctx.strokeStyle = C.select; ctx.lineWidth = 2;
      ctx.strokeRect(selBox[0] - 1, selBox[1] - 1, Math.max(selBox[2], 2) + 2, selBox[3] + 2);
    }
    drawRuler(scale);
    lastFrame.rects = rects; lastFrame.aggregated = aggregated;
  }

  function drawRuler(scale) {
    const C = themeColors, span = view.t1 - view.t0, step = niceStep(span, W);
    ctx.fillStyle = C.ruler; ctx.fillRect(0, 0, W, RULER_H);
    ctx.strokeStyle = C.line; ctx.lineWidth = 1;
    ctx.beginPath(); ctx.moveTo(0, RULER_H - 0.5); ctx.lineTo(W, RULER_H - 0.5); ctx.stroke();
    ctx.fillStyle = C.dim;
    for (let t = Math.ceil(view.t0 / step) * step; t <= view.t1; t += step) {
      const x = Math.round((t - view.t0) * scale) + 0.5;
      ctx.beginPath(); ctx.moveTo(x, RULER_H - 6); ctx.lineTo(x, RULER_H); ctx.stroke();
      ctx.fillText(fmtTick(t, step, Math.max(Math.abs(view.t0), Math.abs(view.t1), step)), x + 3, RULER_H / 2);
    }
    const label = 'span ' + fmtNs(span), lw = ctx.measureText(label).width + 12;
    ctx.fillStyle = C.ruler; ctx.fillRect(W - lw, 0, lw, RULER_H - 1);
    ctx.fillStyle = C.fg; ctx.fillText(label, W - lw + 6, RULER_H / 2);
  }

  function httpLabel(h) {
    let s = (h.method || '?') + ' ' + (h.url || '') + ' → ' + (h.status || h.error || '…');
    if (h.llm && h.llm.model) s = h.llm.model + ' · ' + s;
    return s;
  }

  // ---- hit testing --------------------------------------------------------------------
  function hit(x, y) {
    const cy = y - RULER_H + view.scrollY;
    if (y < RULER_H) return { ruler: true };
    for (const g of groups) if (cy >= g.y && cy < g.y + PROC_H) return { process: g.pid };
    for (const item of layout) {
      if (cy < item.y || cy >= item.y + item.h) continue;
      const tr = item.track;
      if (cy < item.y + HEAD_H) return { header: tr };
      const t = view.t0 + x / W * (view.t1 - view.t0), slack = 3 * (view.t1 - view.t0) / W;
      if (item.httpY >= 0 && cy >= item.httpY && cy < item.httpY + HTTP_H) {
        for (const h of tr.http) if (t >= h.t0 - slack && t <= (h.t1 != null ? h.t1 : h.t0) + slack) return { http: h };
        return null;
      }
      const d = Math.floor((cy - item.rowsY) / ROW_H);
      if (d < 0 || d >= tr.depth) return null;
      // the latest-starting call holding t is the one drawn on top (interleaved generators may overlap on a row)
      const r = tr.rowBase + d, k = lowerBound(r, t + 1e-9) - 1;
      for (let q = k; q >= D.rowStart[r] && q > k - 16; q--) {
        const i = D.rowIdx[q];
        if (t <= D.t0[i] + D.dur[i]) return { call: i };
      }
      for (const q of [k, k + 1]) {  // a call narrower than the mouse's slack
        if (q < D.rowStart[r] || q >= D.rowStart[r + 1]) continue;
        const i = D.rowIdx[q];
        if (t >= D.t0[i] - slack && t <= D.t0[i] + D.dur[i] + slack) return { call: i };
      }
      return null;
    }
    return null;
  }

  // ---- view changes -------------------------------------------------------------------
  function zoom(factor, atX) {
    const span = view.t1 - view.t0, at = view.t0 + (atX == null ? W / 2 : atX) / W * span;
    const next = Math.max(span * factor, 50);
    view.t0 = at - (at - view.t0) * next / span; view.t1 = view.t0 + next;
    redraw();
  }
  function pan(fraction) { const d = (view.t1 - view.t0) * fraction; view.t0 += d; view.t1 += d; redraw(); }
  function zoomTo(a, b) {
    const pad = Math.max((b - a) * 0.15, 100);
    view.t0 = a - pad; view.t1 = b + pad; redraw();
  }
  function rowY(i) {
    for (const item of layout) if (item.track.index === D.track[i]) return item.track.collapsed ? -1 : item.rowsY + D.depth[i] * ROW_H;
    return -1;
  }
  function toggleProcess(pid) {
    if (collapsedPids.has(pid)) collapsedPids.delete(pid); else collapsedPids.add(pid);
    relayout(); redraw();
  }
  function reveal(i) {
    const tr = tracks[D.track[i]];
    if (view.session && tr.session !== view.session) setSession('');
    if (collapsedPids.delete(pidOf(tr))) relayout();
    if (tr.collapsed) { tr.collapsed = false; relayout(); }
    const y = rowY(i), vh = H - RULER_H;
    if (y >= 0 && (y < view.scrollY || y + ROW_H > view.scrollY + vh)) { view.scrollY = y - vh / 3; clampScroll(); }
    const s = D.t0[i], e = s + D.dur[i];
    if (e < view.t0 || s > view.t1) { const half = (view.t1 - view.t0) / 2, mid = (s + e) / 2; view.t0 = mid - half; view.t1 = mid + half; }
    redraw();
  }
  function select(i, opts) {
    selected = i; selectedHttp = -1;
    if (i >= 0) { if (!opts || opts.reveal !== false) reveal(i); showCall(i); }
    redraw();
  }
  function selectHttp(h) {
    selectedHttp = h.index; selected = -1;
    const tr = tracks[h.track];
    if (view.session && tr.session !== view.session) setSession('');
    zoomTo(h.t0, h.t1 != null ? h.t1 : h.t0 + 1);
    showHttp(h);
  }

  // ---- details ------------------------------------------------------------------------
  function callButton(i, text) {
    return el('button', { class: 'link mono', type: 'button', onclick: () => { select(i); canvas.focus(); } }, text || callTitle(i));
  }
  function callTitle(i) {
    const args = D.args[i] >= 0 ? argPairs(D.strings[D.args[i]]).map((p) => p[0] + '=' + shorten(p[1], 24)).join(', ') : '';
    return codes[D.code[i]][0] + '(' + shorten(args, 80) + ')  ' + fmtNs(D.dur[i]);
  }
  function argPairs(s) { const parts = s.split(SEP), out = []; for (let k = 0; k + 1 < parts.length; k += 2) out.push([parts[k], parts[k + 1]]); return out; }

  function kv(pairs) {
    const dl = el('dl', { class: 'kv' });
    for (const [k, v, cls] of pairs) { dl.append(el('dt', null, k), el('dd', cls ? { class: cls } : null, v)); }
    return dl;
  }

  function children(i) {
    const out = [];
    for (let c = D.firstChild[i]; c >= 0; c = D.nextSibling[c]) out.push(c);
    // children on other tracks (tasks, threads) come after those on the caller's own: merge them in by start
    if (out.length < 100000) out.sort((a, b) => D.t0[a] - D.t0[b]);
    return out;
  }

  function showCall(i) {
    const box = $('details'), c = codes[D.code[i]], tr = tracks[D.track[i]], s = sessionById.get(tr.session) || {};
    const f = D.flags[i], dur = D.dur[i];
    const parts = [el('h2', { class: 'mono' }, c[0]), el('div', { class: 'dim mono' }, c[1] + ' · ' + c[2] + ':' + c[3])];
    const notes = [];
    if (f & F_INCOMPLETE) notes.push('unfinished at session end');
    if (f & F_ABANDONED) notes.push('never resumed');
    if (f & F_SUSPENDABLE) notes.push('generator / coroutine');
    const pairs = [['Duration', fmtNs(dur)], ['Own time', fmtNs(D.own[i])]];
    if (D.susp[i]) pairs.push(['Suspended', fmtNs(D.susp[i])]);
    pairs.push(['Start', '+' + fmtNs(D.t0[i] - (s.t0 != null ? s.t0 : 0)) + ' into the session'],
      ['Track', trackLabel(tr)], ['Session', (s.tag != null ? s.tag + ' · ' : '') + s.id]);
    if (notes.length) pairs.push(['Notes', notes.join(', '), 'dim']);
    parts.push(kv(pairs));
    parts.push(el('h3', null, 'Arguments'));
    if (D.args[i] >= 0) parts.push(kv(argPairs(D.strings[D.args[i]]).map((p) => [p[0], p[1], 'mono'])));
    else parts.push(el('div', { class: 'dim' }, D.args[i] === -2 ? 'left out: the page\'s preview budget was spent' : 'none recorded'));
    if (f & F_RAISED) {
      parts.push(el('h3', null, 'Raised'), el('div', { class: 'error mono' }, D.ret[i] >= 0 ? D.strings[D.ret[i]] : 'an exception'));
    } else {
      parts.push(el('h3', null, 'Returned'));
      parts.push(D.ret[i] >= 0 ? el('div', { class: 'ok mono' }, D.strings[D.ret[i]]) : el('div', { class: 'dim' }, D.ret[i] === -2 ? 'left out (preview budget)' : 'no preview'));
    }
    const callers = [];
    for (let p = D.parent[i]; p >= 0 && callers.length < 40; p = D.parent[p]) callers.push(p);
    parts.push(el('h3', null, 'Callers' + (callers.length ? '' : ': none (a root call)')));
    if (callers.length) parts.push(el('ul', { class: 'links' }, ...callers.map((p) => el('li', null, callButton(p)))));
    const kids = children(i);
    parts.push(el('h3', null, 'Callees' + (kids.length ? ' (' + fmtInt(kids.length) + ')' : ': none')));
    if (kids.length) {
      const shown = kids.slice(0, 60);
      const list = el('ul', { class: 'links' }, ...shown.map((k) => el('li', null, callButton(k))));
      if (kids.length > shown.length) {
        const by = new Map();
        for (const k of kids.slice(shown.length)) by.set(D.code[k], (by.get(D.code[k]) || 0) + 1);
        const rest = [...by.entries()].sort((a, b) => b[1] - a[1]).slice(0, 6).map(([code, n]) => codes[code][0] + ' ×' + fmtInt(n));
        list.append(el('li', { class: 'dim' }, '… ' + fmtInt(kids.length - shown.length) + ' more: ' + rest.join(', ')));
      }
      parts.push(list);
    }
    box.replaceChildren(...parts);
  }

  function innermostAt(trackIndex, t) {
    const tr = tracks[trackIndex];
    let best = -1;
    for (let d = 0; d < tr.depth; d++) {
      const r = tr.rowBase + d, k = lowerBound(r, t + 1e-9) - 1;
      if (k < D.rowStart[r]) continue;
      const i = D.rowIdx[k];
      if (D.t0[i] <= t && t <= D.t0[i] + D.dur[i]) best = i;
    }
    return best;
  }

  function showHttp(h) {
    const pairs = [['Method', h.method || '?'], ['URL', h.url || '?', 'mono'],
      ['Status', h.status ? String(h.status) : (h.error ? '-' : 'no response recorded'), h.status >= 400 || h.error ? 'error' : 'ok'],
      ['Duration', fmtNs(h.dt != null ? h.dt : (h.t1 != null ? h.t1 - h.t0 : null))]];
    if (h.error) pairs.push(['Error', h.error, 'error']);
    if (h.bytes_out != null) pairs.push(['Sent', fmtInt(h.bytes_out) + ' B']);
    if (h.bytes_in != null) pairs.push(['Received', fmtInt(h.bytes_in) + ' B']);
    const parts = [el('h2', null, (h.llm ? 'LLM call' : 'HTTP call')), kv(pairs)];
    if (h.llm) {
      const L = h.llm, lp = [];
      for (const [k, label] of [['system', 'System'], ['operation', 'Operation'], ['model', 'Model'], ['response_model', 'Response model'],
        ['input_tokens', 'Input tokens'], ['output_tokens', 'Output tokens'], ['finish_reasons', 'Finish reasons'], ['streamed', 'Streamed']]) {
        if (L[k] != null) lp.push([label, Array.isArray(L[k]) ? L[k].join(', ') : String(L[k])]);
      }
      if (L.ttft_ns != null) lp.push(['Time to first token', fmtNs(L.ttft_ns)]);
      parts.push(el('h3', null, 'LLM'), kv(lp));
    }
    const inside = innermostAt(h.track, h.t0);
    if (inside >= 0) parts.push(el('h3', null, 'Made inside'), el('ul', { class: 'links' }, el('li', null, callButton(inside))));
    $('details').replaceChildren(...parts);
  }

  // ---- search -------------------------------------------------------------------------
  function search(q) {
    q = q.trim();
    matchList = null; matchPos = -1;
    if (!q) { matchCodes = null; $('matches').textContent = ''; redraw(); return 0; }
    let test;
    try { const re = new RegExp(q, 'i'); test = (s) => re.test(s); } catch (e) { const lq = q.toLowerCase(); test = (s) => s.toLowerCase().includes(lq); }
    matchCodes = new Uint8Array(codes.length);
    let nf = 0;
    codes.forEach((c, k) => { if (test(c[0]) || test(c[1] + '.' + c[0])) { matchCodes[k] = 1; nf++; } });
    let calls = 0;
    const inView = (i) => !view.session || tracks[D.track[i]].session === view.session;
    for (let i = 0; i < D.n; i++) if (matchCodes[D.code[i]] && inView(i)) calls++;
    $('matches').textContent = nf ? fmtInt(nf) + ' function' + (nf > 1 ? 's' : '') + ', ' + fmtInt(calls) + ' call' + (calls !== 1 ? 's' : '') + ' (N: next)' : 'no match';
    redraw();
    return calls;
  }
  function nextMatch(dir) {
    if (!matchCodes) return -1;
    if (!matchList) {
      const list = [];
      for (let i = 0; i < D.n; i++) if (matchCodes[D.code[i]] && (!view.session || tracks[D.track[i]].session === view.session)) list.push(i);
      list.sort((a, b) => D.t0[a] - D.t0[b]);
      matchList = list;
    }
    if (!matchList.length) return -1;
    matchPos = (matchPos + dir + matchList.length) % matchList.length;
    const i = matchList[matchPos];
    select(i);
    zoomTo(D.t0[i], D.t0[i] + D.dur[i]);
    return i;
  }

  // ---- panels -------------------------------------------------------------------------
  function showTab(name) {
    for (const t of ['tree', 'top', 'http', 'sessions']) {
      const on = t === name;
      $('tab-' + t).setAttribute('aria-selected', String(on));
      $('tab-' + t).tabIndex = on ? 0 : -1;
      $('pane-' + t).hidden = !on;
    }
    if (name === 'top') renderTop();
  }

  function treeNodeLine(n) {
    const line = el('span', null, el('span', { class: 'fn mono' }, n.func), '(',
      el('span', { class: 'args mono' }, shorten(n.args.map((a) => a[0] + '=' + shorten(a[1], 32)).join(', '), 120)), ')');
    if (n.exc) line.append(el('span', { class: 'error mono' }, ' ✗ ' + n.exc[0] + (n.exc[1] ? ': ' + shorten(n.exc[1], 80) : '')));
    else if (n.ret != null) line.append(el('span', { class: 'ret mono' }, ' → ' + shorten(n.ret, 60)));
    if (n.count) line.append(el('span', { class: 'count' }, '  ×' + fmtInt(n.count)));
    if (n.dt != null) line.append(el('span', { class: 'dim' }, '  ' + fmtNs(n.dt) + (n.count ? ' total' : '')));
    if (n.same) line.append(el('span', { class: 'dim' }, '  (' + fmtInt(n.same) + ' calls below, as above)'));
    if (n.thread) line.append(el('span', { class: 'dim' }, '  [' + n.thread + ']'));
    if (n.flag) line.append(el('span', { class: 'dim' }, '  (' + ({ open: 'no return recorded', incomplete: 'unfinished at session end', abandoned: 'never resumed' }[n.flag] || n.flag) + ')'));
    return line;
  }
  function treeNotes(p) {
    const out = [];
    if (p.others) {
      const calls = p.others.reduce((a, o) => a + o[1], 0), ns = p.others.reduce((a, o) => a + o[2], 0);
      const names = p.others.slice().sort((a, b) => b[1] - a[1]).slice(0, 4).map((o) => o[0] + ' ×' + fmtInt(o[1])).join(', ');
      out.push(el('div', { class: 'note' }, '… ' + fmtInt(calls) + ' more: ' + names + '  ' + fmtNs(ns)));
    }
    if (p.hidden) out.push(el('div', { class: 'note' }, '… ' + fmtInt(p.hidden) + ' deeper calls'));
    return out;
  }
  function treeNode(n) {
    const leaf = !n.children.length && !n.others && !n.hidden;
    const summary = el('summary', leaf ? { class: 'leaf' } : null, treeNodeLine(n));
    const d = el('details', null, summary);
    if (!leaf) {
      d.addEventListener('toggle', () => {  // children are made when first opened: the DOM stays small
        if (d.open && d.childNodes.length === 1) d.append(...n.children.map(treeNode), ...treeNotes(n));
      });
    }
    return d;
  }
  function renderTree() {
    const pane = $('pane-tree'), parts = [];
    for (const root of META.tree) {
      if (view.session && root.session !== view.session) continue;
      const d = el('details', { open: '' }, el('summary', null, el('strong', null, String(root.tag != null ? root.tag : 'session')), el('span', { class: 'dim' }, '  ' + root.session.slice(0, 8))));
      d.append(...root.children.map(treeNode), ...treeNotes(root));
      parts.push(d);
    }
    if (!parts.length) parts.push(el('p', { class: 'dim' }, 'No calls.'));
    pane.replaceChildren(el('p', { class: 'dim' }, 'Folded as handit show folds it: identical calls under one caller are one line with ×count.'), ...parts);
  }

  let topSort = 'total';
  const topCache = new Map();
  function topStats() {
    const key = view.session;
    if (topCache.has(key)) return topCache.get(key);
    const n = codes.length, calls = new Float64Array(n), total = new Float64Array(n), own = new Float64Array(n), raised = new Float64Array(n);
    for (let i = 0; i < D.n; i++) {
      if (view.session && tracks[D.track[i]].session !== view.session) continue;
      const c = D.code[i], tr = D.track[i];
      calls[c]++; own[c] += D.own[i];
      if (D.flags[i] & F_RAISED) raised[c]++;
      let nested = false;  // recursion: a call inside another of the same function is counted in total once
      for (let p = D.parent[i]; p >= 0 && D.track[p] === tr; p = D.parent[p]) if (D.code[p] === c) { nested = true; break; }
      if (!nested) total[c] += D.dur[i];
    }
    const rows = [];
    for (let c = 0; c < n; c++) if (calls[c]) rows.push({ code: c, calls: calls[c], total: total[c], own: own[c], raised: raised[c] });
    topCache.set(key, rows);
    return rows;
  }
  function renderTop() {
    const rows = topStats().slice().sort((a, b) => b[topSort] - a[topSort]).slice(0, 60);
    const head = (name, label) => el('th', { class: 'num' }, el('button', { type: 'button', 'aria-pressed': String(topSort === name), onclick: () => { topSort = name; renderTop(); } }, label));
    const table = el('table', null, el('thead', null, el('tr', null, el('th', null, 'function'), head('calls', 'calls'), head('total', 'total'), head('own', 'own'), head('raised', 'raised'))));
    const body = el('tbody');
    for (const r of rows) {
      const c = codes[r.code];
      const act = () => { const q = '^' + c[0].replace(/[.*+?^${}()|[\]\\]/g, '\\$&') + '$'; $('search').value = q; search(q); nextMatch(1); };
      body.append(el('tr', { tabindex: '0', title: c[1] + ' · ' + c[2] + ':' + c[3], onclick: act, onkeydown: (e) => { if (e.key === 'Enter') act(); } },
        el('td', { class: 'mono' }, shorten(c[0], 70)), el('td', { class: 'num' }, fmtInt(r.calls)), el('td', { class: 'num' }, fmtNs(r.total)),
        el('td', { class: 'num' }, fmtNs(r.own)), el('td', { class: 'num' + (r.raised ? ' error' : '') }, r.raised ? fmtInt(r.raised) : '')));
    }
    table.append(body);
    $('pane-top').replaceChildren(el('p', { class: 'dim' }, 'Total counts a recursive function once; own time is total minus suspended time and the calls it made. Click a row to find its calls.'), table);
  }

  function renderHttp() {
    const rows = http.filter((h) => !view.session || h.session === view.session);
    if (!rows.length) { $('pane-http').replaceChildren(el('p', { class: 'dim' }, 'No HTTP calls recorded.')); return; }
    const body = el('tbody');
    for (const h of rows) {
      const L = h.llm || {};
      const tokens = L.input_tokens != null || L.output_tokens != null ? (L.input_tokens != null ? L.input_tokens : '?') + ' → ' + (L.output_tokens != null ? L.output_tokens : '?') : '';
      const act = () => selectHttp(h);
      body.append(el('tr', { tabindex: '0', onclick: act, onkeydown: (e) => { if (e.key === 'Enter') act(); } },
        el('td', { class: 'num' }, fmtNs(h.t0)), el('td', null, h.method || '?'), el('td', { class: 'wrap mono' }, shorten(h.url || '', 90)),
        el('td', { class: h.status >= 400 || h.error ? 'error' : 'ok' }, h.status ? String(h.status) : (h.error ? shorten(h.error, 40) : '-')),
        el('td', { class: 'num' }, fmtNs(h.dt)), el('td', null, L.model || ''), el('td', { class: 'num' }, tokens)));
    }
    $('pane-http').replaceChildren(el('table', null, el('thead', null, el('tr', null, ...['start', 'method', 'URL', 'status', 'time', 'model', 'tokens in → out'].map((t) => el('th', null, t)))), body));
  }

  function renderSessions() {
    const body = el('tbody');
    for (const s of sessions) {
      const act = () => setSession(s.id);
      const attrs = Object.entries(s.attrs || {}).map(([k, v]) => k + '=' + v).join(', ');
      body.append(el('tr', { tabindex: '0', onclick: act, onkeydown: (e) => { if (e.key === 'Enter') act(); } },
        el('td', null, String(s.tag != null ? s.tag : '')), el('td', { class: 'mono' }, s.id.slice(0, 8)), el('td', { class: 'num' }, s.pid != null ? String(s.pid) : ''),
        el('td', { class: 'num' }, fmtNs(s.t0)), el('td', { class: 'num' }, s.t0 != null && s.t1 != null ? fmtNs(s.t1 - s.t0) : (s.incomplete ? 'cut' : '-')),
        el('td', { class: 'num' }, fmtInt(s.calls)), el('td', { class: 'num' + (s.dropped ? ' error' : '') }, s.dropped ? fmtInt(s.dropped) : ''),
        el('td', { class: 'wrap' }, (s.parent ? 'child of ' + s.parent.slice(0, 8) + ' ' : '') + attrs)));
    }
    $('pane-sessions').replaceChildren(el('table', null, el('thead', null, el('tr', null, ...['tag', 'id', 'pid', 'start', 'duration', 'calls', 'dropped', ''].map((t) => el('th', null, t)))), body));
  }

  function setSession(id) {
    view.session = id;
    $('session').value = id;
    relayout(); fit(); renderTree(); renderHttp();
    if (!$('pane-top').hidden) renderTop();
    if ($('search').value) search($('search').value);
  }

  // ---- input --------------------------------------------------------------------------
  function bindInput() {
    let drag = null;
    canvas.addEventListener('mousedown', (e) => { drag = { x: e.clientX, y: e.clientY, t0: view.t0, t1: view.t1, sy: view.scrollY, moved: false }; });
    window.addEventListener('mousemove', (e) => {
      if (drag) {
        const dx = e.clientX - drag.x, dy = e.clientY - drag.y;
        if (Math.abs(dx) + Math.abs(dy) > 3) { drag.moved = true; canvas.classList.add('dragging'); }
        if (drag.moved) {
          const dt = dx / W * (drag.t1 - drag.t0);
          view.t0 = drag.t0 - dt; view.t1 = drag.t1 - dt; view.scrollY = drag.sy - dy; clampScroll(); redraw();
        }
        return;
      }
      if (e.target === canvas) hover(e); else $('tooltip').hidden = true;
    });
    window.addEventListener('mouseup', (e) => {
      if (!drag) return;
      const moved = drag.moved;
      drag = null; canvas.classList.remove('dragging');
      if (moved || e.target !== canvas) return;
      const r = canvas.getBoundingClientRect(), h = hit(e.clientX - r.left, e.clientY - r.top);
      if (!h) return;
      if (h.call != null) select(h.call, { reveal: false });
      else if (h.http) { selectedHttp = h.http.index; selected = -1; showHttp(h.http); redraw(); }
      else if (h.header) { h.header.collapsed = !h.header.collapsed; relayout(); redraw(); }
      else if ('process' in h) { toggleProcess(h.process); }
    });
    canvas.addEventListener('dblclick', (e) => {
      const r = canvas.getBoundingClientRect(), h = hit(e.clientX - r.left, e.clientY - r.top);
      if (h && h.call != null) zoomTo(D.t0[h.call], D.t0[h.call] + D.dur[h.call]);
    });
    canvas.addEventListener('mouseleave', () => { $('tooltip').hidden = true; });
    canvas.addEventListener('wheel', (e) => {
      e.preventDefault();
      const r = canvas.getBoundingClientRect(), x = e.clientX - r.left, y = e.clientY - r.top;
      if (e.ctrlKey || e.metaKey || y < RULER_H) zoom(Math.pow(1.0018, e.deltaY), x);
      else if (e.shiftKey || Math.abs(e.deltaX) > Math.abs(e.deltaY)) pan((e.shiftKey ? e.deltaY : e.deltaX) / W);
      else { view.scrollY += e.deltaY; clampScroll(); redraw(); }
    }, { passive: false });
    document.addEventListener('keydown', onKey);
    $('search').addEventListener('input', (e) => search(e.target.value));
    $('search').addEventListener('keydown', (e) => {
      if (e.key === 'Enter') { e.preventDefault(); nextMatch(e.shiftKey ? -1 : 1); }
      else if (e.key === 'Escape') { e.target.value = ''; search(''); canvas.focus(); }
      e.stopPropagation();
    });
    $('session').addEventListener('change', (e) => setSession(e.target.value));
    $('fit').addEventListener('click', fit);
    $('theme').addEventListener('click', () => setTheme(document.documentElement.dataset.theme === 'dark' ? 'light' : 'dark'));
    $('help-button').addEventListener('click', () => { $('help').hidden = !$('help').hidden; });
    $('help-close').addEventListener('click', () => { $('help').hidden = true; canvas.focus(); });
    const tabNames = ['tree', 'top', 'http', 'sessions'];
    tabNames.forEach((t, k) => {
      $('tab-' + t).addEventListener('click', () => showTab(t));
      $('tab-' + t).addEventListener('keydown', (e) => {
        const m = e.key === 'ArrowRight' ? 1 : e.key === 'ArrowLeft' ? -1 : 0;
        if (m) { const n = tabNames[(k + m + tabNames.length) % tabNames.length]; showTab(n); $('tab-' + n).focus(); e.preventDefault(); e.stopPropagation(); }
      });
    });
    const split = $('splitter');
    let splitting = false;
    split.addEventListener('mousedown', (e) => { splitting = true; e.preventDefault(); });
    window.addEventListener('mousemove', (e) => { if (splitting) { $('timeline').style.height = Math.max(80, e.clientY - $('timeline').getBoundingClientRect().top) + 'px'; resize(); } });
    window.addEventListener('mouseup', () => { splitting = false; });
    split.addEventListener('keydown', (e) => {
      const d = e.key === 'ArrowUp' ? -30 : e.key === 'ArrowDown' ? 30 : 0;
      if (d) { $('timeline').style.height = Math.max(80, $('timeline').getBoundingClientRect().height + d) + 'px'; resize(); e.preventDefault(); }
    });
    window.addEventListener('resize', resize);
  }

  function hover(e) {
    const r = canvas.getBoundingClientRect(), x = e.clientX - r.left, y = e.clientY - r.top, h = hit(x, y), tip = $('tooltip');
    let text = null;
    if (h && h.call != null) {
      const i = h.call, args = D.args[i] >= 0 ? argPairs(D.strings[D.args[i]]).map((p) => p[0] + '=' + shorten(p[1], 40)).join(', ') : '';
      text = codes[D.code[i]][0] + '(' + shorten(args, 200) + ')\n' + fmtNs(D.dur[i]) + ' total · ' + fmtNs(D.own[i]) + ' own' + (D.flags[i] & F_RAISED && D.ret[i] >= 0 ? '\nraised ' + D.strings[D.ret[i]] : '');
    } else if (h && h.http) text = httpLabel(h.http) + '\n' + fmtNs(h.http.dt);
    if (!text) { tip.hidden = true; return; }
    tip.textContent = text; tip.hidden = false;
    tip.style.left = Math.min(x + 14, W - 320) + 'px'; tip.style.top = (y + 16) + 'px';
  }

  function onKey(e) {
    $('tooltip').hidden = true;
    const tag = e.target && e.target.tagName;
    if (tag === 'INPUT' || tag === 'SELECT' || e.ctrlKey || e.metaKey || e.altKey) return;
    const onCanvas = e.target === canvas || e.target === document.body;
    const k = e.key;
    let done = true;
    if (k === '/') { $('search').focus(); $('search').select(); }
    else if (k === '?') $('help').hidden = !$('help').hidden;
    else if (k === 'Escape') { if (!$('help').hidden) $('help').hidden = true; else { $('search').value = ''; search(''); select(-1); } }
    else if (k === 't' || k === 'T') setTheme(document.documentElement.dataset.theme === 'dark' ? 'light' : 'dark');
    else if (k === 'n') nextMatch(1);
    else if (k === 'N') nextMatch(-1);
    else if (!onCanvas) done = false;
    else if (k === 'w' || k === 'W' || k === '+' || k === '=') zoom(0.7, selected >= 0 ? (D.t0[selected] + D.dur[selected] / 2 - view.t0) / (view.t1 - view.t0) * W : null);
    else if (k === 's' || k === 'S' || k === '-') zoom(1 / 0.7);
    else if (k === 'a' || k === 'A') pan(e.shiftKey ? -0.5 : -0.15);
    else if (k === 'd' || k === 'D') pan(e.shiftKey ? 0.5 : 0.15);
    else if (k === '0') fit();
    else if ((k === 'Enter' || k === 'f' || k === 'F') && selected >= 0) zoomTo(D.t0[selected], D.t0[selected] + D.dur[selected]);
    else if (k === 'ArrowUp') { if (selected >= 0 && D.parent[selected] >= 0) select(D.parent[selected]); else if (selected < 0) { view.scrollY -= 40; clampScroll(); redraw(); } }
    else if (k === 'ArrowDown') { if (selected >= 0 && D.firstChild[selected] >= 0) select(D.firstChild[selected]); else if (selected < 0) { view.scrollY += 40; clampScroll(); redraw(); } }
    else if (k === 'ArrowLeft' || k === 'ArrowRight') {
      if (selected < 0) { selectFirstVisible(); } else {
        const r = tracks[D.track[selected]].rowBase + D.depth[selected];
        let q = lowerBound(r, D.t0[selected]);
        while (q < D.rowStart[r + 1] && D.rowIdx[q] !== selected) q++;
        q += k === 'ArrowLeft' ? -1 : 1;
        if (q >= D.rowStart[r] && q < D.rowStart[r + 1]) select(D.rowIdx[q]);
      }
    } else done = false;
    if (done) e.preventDefault();
  }

  function selectFirstVisible() {
    for (const item of layout) {
      const tr = item.track;
      if (tr.collapsed || !tr.depth) continue;
      const r = tr.rowBase, k = Math.max(D.rowStart[r], lowerBound(r, view.t0) - 1);
      if (k < D.rowStart[r + 1]) { select(D.rowIdx[k]); return; }
    }
  }

  // ---- start --------------------------------------------------------------------------
  function fillPickers() {
    const pick = $('session');
    pick.append(el('option', { value: '' }, 'All sessions (' + sessions.length + ')'));
    for (const s of sessions) {
      const dur = s.t0 != null && s.t1 != null ? fmtNs(s.t1 - s.t0) : '';
      pick.append(el('option', { value: s.id }, (s.tag != null ? s.tag : 'session') + ' · ' + s.id.slice(0, 8) + (s.pid != null ? ' · pid ' + s.pid : '') + ' · ' + fmtInt(s.calls) + ' calls' + (dur ? ' · ' + dur : '')));
    }
    $('file').textContent = META.title || '';
    $('file').title = META.title || '';
    const notes = [];
    if (META.previews_left_out) notes.push('Arguments and results of ' + fmtInt(META.previews_left_out) + ' calls were left out of this page (its preview budget; handit view --max-previews raises it).');
    const dropped = sessions.reduce((a, s) => a + (s.dropped || 0), 0);
    if (dropped) notes.push(fmtInt(dropped) + ' calls were dropped while recording (see the Sessions tab).');
    if (META.notes) notes.push(...META.notes);
    if (notes.length) { $('notice').textContent = notes.join(' '); $('notice').hidden = false; }
  }

  async function start() {
    let theme = null;
    try { theme = localStorage.getItem('handit-view-theme'); } catch (e) { /* no storage */ }
    document.documentElement.dataset.theme = theme || (matchMedia('(prefers-color-scheme: dark)').matches ? 'dark' : 'light');
    readTheme();
    const t_data = performance.now(), buf = await inflate(), t_inflated = performance.now();
    D = decode(buf);
    const t_decoded = performance.now();
    buildRows(D, tracks);
    api.timings = { inflate: t_inflated - t_data, decode: t_decoded - t_inflated, rows: performance.now() - t_decoded };
    fillPickers(); bindInput();
    relayout(); resize(); fit();
    renderTree(); renderHttp(); renderSessions();
    dirty = false; draw();
    Object.assign(api, {
      ready: true, loadMs: performance.now() - t_start, calls: D.n,
      processes: () => groups.map((g) => ({ pid: g.pid, label: processLabel(g.pid), collapsed: collapsedPids.has(g.pid), y: g.y })),
      toggleProcess: (pid) => { toggleProcess(pid); draw(); },
      tracks: () => tracks.map((t) => ({ label: trackLabel(t), session: t.session, kind: t.kind, name: t.name, thread: t.thread, task: t.task, calls: t.calls, depth: t.depth, http: t.http.length })),
      frame: () => { draw(); return { rects: lastFrame.rects.slice(), aggregated: lastFrame.aggregated.slice() }; },
      view: () => ({ t0: view.t0, t1: view.t1, scrollY: view.scrollY, session: view.session, selected, width: W, height: H }),
      findCalls: (func) => { const out = []; for (let i = 0; i < D.n; i++) if (codes[D.code[i]][0] === func) out.push(i); return out; },
      call: (i) => ({ func: codes[D.code[i]][0], t0: D.t0[i], dur: D.dur[i], own: D.own[i], depth: D.depth[i], track: D.track[i], parent: D.parent[i], args: D.args[i] >= 0 ? argPairs(D.strings[D.args[i]]) : null, ret: D.ret[i] >= 0 ? D.strings[D.ret[i]] : null, flags: D.flags[i] }),
      // where call i is drawn, in page coordinates (after showing it): for scripted clicks
      locate: (i) => {
        reveal(i); draw();
        const r = canvas.getBoundingClientRect(), scale = W / (view.t1 - view.t0);
        // the part of the call no later call on its row covers
        const row = tracks[D.track[i]].rowBase + D.depth[i];
        let q = lowerBound(row, D.t0[i]);
        while (q < D.rowStart[row + 1] && D.rowIdx[q] !== i) q++;
        const nextStart = q + 1 < D.rowStart[row + 1] ? D.t0[D.rowIdx[q + 1]] : Infinity;
        const end = Math.min(D.t0[i] + D.dur[i], nextStart);
        const x0 = Math.max(0, (D.t0[i] - view.t0) * scale), x1 = Math.min(W, (end - view.t0) * scale);
        return { x: r.left + (x0 + x1) / 2, y: r.top + RULER_H - view.scrollY + rowY(i) + ROW_H / 2 };
      },
      zoomTo: (a, b) => { zoomTo(a, b); draw(); }, fit: () => { fit(); draw(); }, select, search, nextMatch, setSession, setTheme, showTab,
    });
  }

  start().catch((err) => {
    api.error = String(err && err.stack || err);
    const box = $('details');
    if (box) box.replaceChildren(el('p', { class: 'error' }, 'This page could not be shown: ' + String(err)));
    throw err;
  });
})();
