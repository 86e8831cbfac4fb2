// The match viewer of report.html (moloch_exp/report/html.py puts it inline; plain JS, no build, works offline).
// Reads the blocks moloch_exp/report/embed.py writes: #mv-index (JSON: table, sort, filter; above this script,
// so the first rows are drawn while the browser still reads the rest), #mv-search (gzipped JSON in base64:
// anchors' fields and outputs; unpacked once the page has loaded) and #mv-detail-<k> (the same: reasoning and
// votes of anchors k·chunk…; unpacked when one of their matches is opened).
// Draws only the rows in view. Every piece of data goes in through textContent, never as HTML.
(function () {
  "use strict";
  const ROW_H = 28, OVERSCAN = 12;
  const byId = (id) => document.getElementById(id);
  function el(tag, cls, text, attrs) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined && text !== null) e.textContent = String(text);
    if (attrs) for (const k in attrs) e.setAttribute(k, attrs[k]);
    return e;
  }

  const I = JSON.parse(byId("mv-index").textContent);
  const loaded = new Promise((ok) => (document.readyState === "loading" ? document.addEventListener("DOMContentLoaded", ok) : ok()));
  async function unpack(id) {
    await loaded;
    const b64 = byId(id).textContent.trim();
    const bytes = Uint8Array.fromBase64 ? Uint8Array.fromBase64(b64) : Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
    return JSON.parse(await new Response(new Blob([bytes]).stream().pipeThrough(new DecompressionStream("gzip"))).text());
  }
  let S = null, searching = null;  // S: {fields, outputs: per method, per anchor [message, extraction]}
  const withSearch = () => (searching = searching || unpack("mv-search").then((s) => {
    S = s;
    document.body.dataset.mvText = String(performance.now());
    return s;
  }));
  const blocks = new Map();  // k → promise of {thoughts, judged, votes} of anchors k·chunk …
  function withBlock(k) {
    if (!blocks.has(k)) blocks.set(k, unpack("mv-detail-" + k));
    return blocks.get(k);
  }

  const M = I.matches, N = M.pair.length;
  const pairName = (i) => I.methods[I.pairs[M.pair[i]][0]] + " vs " + I.methods[I.pairs[M.pair[i]][1]];
  // winner: the pair's method index with more valid votes; -1 a tie, -2 no valid vote
  const winner = new Int16Array(N), margin = new Float64Array(N);
  for (let i = 0; i < N; i++) {
    const a = M.a[i], b = M.b[i], pr = I.pairs[M.pair[i]];
    winner[i] = a + b === 0 ? -2 : a === b ? -1 : pr[b > a ? 1 : 0];
    margin[i] = a + b === 0 ? NaN : Math.abs(b - a) / (a + b);
  }
  const winnerName = (w) => (w >= 0 ? I.methods[w] : w === -1 ? "tie" : "no valid vote");
  const LABEL_TEXT = { y: "yes", n: "no", i: "invalid", f: "failed", s: "skipped", "-": "not judged" };
  const LABEL_RANK = { y: 5, n: 4, i: 3, f: 2, s: 1, "-": 0 };
  function labelCode(p, m, i) {
    const pr = I.pairs[M.pair[i]];
    if (pr[0] !== m && pr[1] !== m) return "";  // this match does not show method m
    const s = I.labels[p] && I.labels[p][m];
    return s ? s[M.anchor[i]] : "-";
  }

  // ---- columns: label, CSS width, sort value, cell text and class
  const cols = [
    { key: "anchor", label: "anchor", w: "minmax(220px,1fr)", sort: (i) => I.titles[M.anchor[i]].toLowerCase(),
      cell: (i) => I.titles[M.anchor[i]], tip: (i) => I.ids[M.anchor[i]] + ": " + I.titles[M.anchor[i]] },
    { key: "pair", label: "pair", w: "118px", sort: (i) => M.pair[i], cell: pairName },
    { key: "winner", label: "winner", w: "96px", sort: (i) => winner[i], cell: (i) => winnerName(winner[i]),
      cls: (i) => (winner[i] < 0 ? "muted" : winner[i] === I.pairs[M.pair[i]][1] ? "side-b" : "side-a") },
    { key: "margin", label: "margin", w: "74px", num: true, sort: (i) => (isNaN(margin[i]) ? -1 : margin[i]),
      cell: (i) => (isNaN(margin[i]) ? "—" : margin[i].toFixed(2)), tip: () => "|b − a| / valid votes" },
    { key: "votes", label: "a–b", w: "58px", num: true, sort: (i) => M.b[i] - M.a[i], cell: (i) => M.a[i] + "–" + M.b[i],
      tip: () => "valid votes for the pair's first – second method" },
    { key: "invalid", label: "invalid", w: "62px", num: true, sort: (i) => M.invalid[i], cell: (i) => M.invalid[i] || "" },
    { key: "failed", label: "failed", w: "54px", num: true, sort: (i) => M.failed[i], cell: (i) => M.failed[i] || "" },
  ];
  I.probes.forEach((probe, p) => I.methods.forEach((method, m) => {
    if (!I.labels[p] || !I.labels[p][m]) return;
    cols.push({ key: "label-" + p + "-" + m, label: probe, sub: method, group: p, w: "76px",
      sort: (i) => { const c = labelCode(p, m, i); return c ? LABEL_RANK[c] : -1; },
      cell: (i) => { const c = labelCode(p, m, i); return c ? LABEL_TEXT[c] : ""; },
      cls: (i) => "lab-" + (labelCode(p, m, i) || "x"), tip: () => probe + " on " + method + "'s output (" + I.judges[0] + ")" });
  }));
  const gridCols = cols.map((c) => c.w).join(" ");

  // ---- state: filters, sort, the visible rows (data indices in display order), selection
  const state = { q: "", pair: "", winner: "", min: "", max: "", invalid: "", failed: "", labels: {},
                  sort: null, desc: false, sel: -1 };
  let rows = new Int32Array(0), refreshes = 0;
  let hay = null;  // lower-cased search text: per anchor, per method and anchor
  function searchText() {
    if (hay) return hay;
    hay = { anchor: S.fields.map((f, a) => (I.ids[a] + "\n" + f.map((kv) => kv[0] + ": " + kv[1]).join("\n")).toLowerCase()),
            out: S.outputs.map((byA) => byA.map((o) => (o && o[0] ? o[0].toLowerCase() : ""))) };
    return hay;
  }
  function keep(i) {
    const s = state;
    if (s.pair !== "" && M.pair[i] !== +s.pair) return false;
    if (s.winner !== "" && winner[i] !== +s.winner) return false;
    if (s.min !== "" && !(margin[i] >= +s.min)) return false;
    if (s.max !== "" && !(margin[i] <= +s.max)) return false;
    if (s.invalid !== "" && (s.invalid === "some") !== (M.invalid[i] > 0)) return false;
    if (s.failed !== "" && (s.failed === "some") !== (M.failed[i] > 0)) return false;
    for (const k in s.labels) {
      const [p, m] = k.split("-").map(Number);
      if (s.labels[k] !== "" && labelCode(p, m, i) !== s.labels[k]) return false;
    }
    if (s.q) {
      const h = searchText(), a = M.anchor[i], pr = I.pairs[M.pair[i]];
      if (!h.anchor[a].includes(s.q) && !h.out[pr[0]][a].includes(s.q) && !h.out[pr[1]][a].includes(s.q)) return false;
    }
    return true;
  }
  function refresh() {
    const out = [];
    for (let i = 0; i < N; i++) if (keep(i)) out.push(i);
    if (state.sort !== null) {
      const c = cols[state.sort], key = new Map(out.map((i) => [i, c.sort(i)])), dir = state.desc ? -1 : 1;
      out.sort((x, y) => { const a = key.get(x), b = key.get(y); return a < b ? -dir : a > b ? dir : x - y; });
    }
    rows = Int32Array.from(out);
    byId("mv-count").textContent = rows.length.toLocaleString("en") + " of " + N.toLocaleString("en") + " matches";
    document.body.dataset.mvRefreshes = String(++refreshes);  // lets a test wait for a filter to apply
    byId("mv-spacer").style.height = rows.length * ROW_H + "px";
    cols.forEach((c, k) => { headCells[k].dataset.sort = state.sort === k ? (state.desc ? "desc" : "asc") : ""; });
    draw();
  }

  // ---- the table: a sticky header and the rows in view, inside one scrolling box
  const body = byId("mv-body"), head = byId("mv-head"), rowBox = byId("mv-rows");
  head.style.gridTemplateColumns = gridCols;
  // two header rows: a probe's name spans its methods' columns; the other columns span both rows
  const headCells = cols.map((c, k) => {
    const h = el("div", "mv-th" + (c.num ? " num" : ""), null, { title: "sort by " + c.label + (c.sub ? " · " + c.sub : "") });
    h.style.gridColumn = String(k + 1);
    h.style.gridRow = c.sub ? "2" : "1 / span 2";
    h.append(el("span", null, c.sub || c.label));
    h.addEventListener("click", () => {
      if (state.sort === k) state.desc = !state.desc;
      else { state.sort = k; state.desc = !!c.num || c.group !== undefined; }
      refresh();
    });
    head.append(h);
    return h;
  });
  I.probes.forEach((probe, p) => {
    const ks = cols.map((c, k) => (c.group === p ? k : -1)).filter((k) => k >= 0);
    if (!ks.length) return;
    const g = el("div", "mv-group", probe, { title: probe + " on each method's output, by " + I.judges[0] + " (yes: flagged)" });
    g.style.gridColumn = ks[0] + 1 + " / span " + ks.length;
    g.style.gridRow = "1";
    head.append(g);
  });
  function draw() {
    const top = Math.max(0, body.scrollTop - head.offsetHeight);
    const first = Math.max(0, Math.floor(top / ROW_H) - OVERSCAN);
    const last = Math.min(rows.length, Math.ceil((top + body.clientHeight) / ROW_H) + OVERSCAN);
    rowBox.style.top = first * ROW_H + "px";
    const frag = document.createDocumentFragment();
    for (let r = first; r < last; r++) {
      const i = rows[r], row = el("div", "mrow" + (i === state.sel ? " sel" : ""), null, { "data-i": i });
      row.style.gridTemplateColumns = gridCols;
      for (const c of cols) {
        const cell = el("div", "c-" + c.key + (c.num ? " num" : "") + (c.cls ? " " + c.cls(i) : ""), c.cell(i));
        if (c.tip) cell.title = c.tip(i);
        row.append(cell);
      }
      frag.append(row);
    }
    rowBox.replaceChildren(frag);
  }
  let pending = false;
  body.addEventListener("scroll", () => {
    if (!pending) { pending = true; requestAnimationFrame(() => { pending = false; draw(); }); }
  });
  window.addEventListener("resize", () => draw());
  rowBox.addEventListener("click", (e) => {
    const row = e.target.closest(".mrow");
    if (row) select(+row.dataset.i);
  });
  body.addEventListener("keydown", (e) => {
    if (e.key !== "ArrowDown" && e.key !== "ArrowUp") return;
    e.preventDefault();
    const at = rows.indexOf(state.sel), next = Math.min(rows.length - 1, Math.max(0, at + (e.key === "ArrowDown" ? 1 : -1)));
    if (rows.length) {
      select(rows[next]);
      const y = next * ROW_H + head.offsetHeight;
      if (y < body.scrollTop + head.offsetHeight) body.scrollTop = y - head.offsetHeight;
      else if (y + ROW_H > body.scrollTop + body.clientHeight) body.scrollTop = y + ROW_H - body.clientHeight;
    }
  });

  // ---- controls
  const controls = byId("mv-controls");
  const mainRow = el("div", "mv-crow"), labelRow = el("div", "mv-crow");
  controls.append(mainRow, labelRow);
  function control(parent, label, input, key) {
    const l = el("label", null, label);
    l.append(input);
    input.id = "mv-f-" + key;
    parent.append(l);
    return input;
  }
  function choices(options) {
    const s = el("select");
    for (const [v, t] of options) s.append(el("option", null, t, { value: v }));
    return s;
  }
  const search = control(mainRow, "search anchors and outputs", el("input", null, null, { type: "search", placeholder: "words…", size: 28 }), "search");
  let timer = 0;
  search.addEventListener("input", () => {
    clearTimeout(timer);
    timer = setTimeout(() => withSearch().then(() => { state.q = search.value.trim().toLowerCase(); refresh(); }), 120);
  });
  const bind = (input, key) => input.addEventListener("change", () => { state[key] = input.value; refresh(); });
  bind(control(mainRow, "pair", choices([["", "all"], ...I.pairs.map((pr, p) => [p, I.methods[pr[0]] + " vs " + I.methods[pr[1]]])]), "pair"), "pair");
  bind(control(mainRow, "winner", choices([["", "any"], ...I.methods.map((m, k) => [k, m]), ["-1", "tie"], ["-2", "no valid vote"]]), "winner"), "winner");
  for (const [key, what] of [["min", "margin ≥"], ["max", "margin ≤"]]) {
    const inp = control(mainRow, what, el("input", null, null, { type: "number", min: 0, max: 1, step: 0.05, placeholder: "0–1" }), key);
    inp.addEventListener("input", () => { state[key] = inp.value; refresh(); });
  }
  for (const key of ["invalid", "failed"]) bind(control(mainRow, key + " votes", choices([["", "any"], ["some", "some"], ["none", "none"]]), key), key);
  const reset = el("button", null, "clear filters", { type: "button", id: "mv-reset" });
  reset.addEventListener("click", () => {
    controls.querySelectorAll("input,select").forEach((x) => { x.value = ""; });
    Object.assign(state, { q: "", pair: "", winner: "", min: "", max: "", invalid: "", failed: "" });
    for (const k in state.labels) state.labels[k] = "";
    refresh();
  });
  mainRow.append(reset, el("span", null, null, { id: "mv-count" }));
  const labelCols = cols.filter((c) => c.group !== undefined);
  if (labelCols.length) labelRow.append(el("span", "mv-clabel", "judge's labels (" + I.judges[0] + ")"));
  labelCols.forEach((c) => {
    const k = c.key.slice(6), s = control(labelRow, c.label + " · " + c.sub, choices([["", "any"], ...Object.entries(LABEL_TEXT)]), "label-" + k);
    state.labels[k] = "";
    s.addEventListener("change", () => { state.labels[k] = s.value; refresh(); });
  });

  // ---- the detail pane of one match
  const detail = byId("mv-detail");
  function badge(code, what) { return el("span", "badge lab-" + code, what + ": " + LABEL_TEXT[code]); }
  function side(i, s, blk) {
    const m = I.pairs[M.pair[i]][s], a = M.anchor[i], at = a % I.chunk, o = S.outputs[m][a], thought = blk.thoughts[m][at];
    const box = el("div", "side side-" + "ab"[s]);
    box.append(el("h4", null, I.methods[m] + (o ? " · extraction " + o[1] : " · no output")));
    box.append(el("div", "msg", o && o[0] !== null && o[0] !== undefined ? o[0] : "(no message)"));
    if (thought) {
      const d = el("details", "thought");
      d.append(el("summary", null, "the agent's reasoning"), el("div", "msg", thought));
      box.append(d);
    }
    I.probes.forEach((probe, p) => I.judges.forEach((judge, j) => {
      const per = blk.judged[j][p], got = per && per[m] && per[m][at];
      if (!got) return;
      const div = el("div", "judgment");
      div.append(badge(got[0], probe + " · " + judge));
      if (got[1]) div.append(el("div", "reason", got[1]));
      if (got[2]) div.append(el("div", "reason err", got[2]));
      box.append(div);
    }));
    return box;
  }
  function select(i) {
    state.sel = i;
    draw();
    const pr = I.pairs[M.pair[i]];
    history.replaceState(null, "", "#match=" + encodeURIComponent(I.methods[pr[0]] + "_vs_" + I.methods[pr[1]] + "/" + I.ids[M.anchor[i]]));
    if (!S || !blocks.has(Math.floor(M.anchor[i] / I.chunk))) {
      detail.replaceChildren(el("p", "muted", "reading the match…"));
      detail.hidden = false;
    }
    Promise.all([withSearch(), withBlock(Math.floor(M.anchor[i] / I.chunk))]).then(
      ([, blk]) => { if (state.sel === i) showDetail(i, blk); },
      (e) => detail.replaceChildren(el("p", "err", "could not read the match's text: " + e)));
  }
  function showDetail(i, blk) {
    const a = M.anchor[i], pr = I.pairs[M.pair[i]];
    const parts = [];
    parts.push(el("h3", null, I.ids[a] + " — " + I.titles[a]));
    parts.push(el("p", "meta", pairName(i) + " · winner " + winnerName(winner[i]) + " · votes " + M.a[i] + "–" + M.b[i]
      + " (margin " + (isNaN(margin[i]) ? "—" : margin[i].toFixed(2)) + ") · invalid " + M.invalid[i] + " · failed " + M.failed[i]));
    const anchor = el("details", "anchor");
    anchor.open = true;
    anchor.append(el("summary", null, "anchor"));
    const dl = el("dl");
    for (const [k, v] of S.fields[a]) dl.append(el("dt", null, k), el("dd", "msg", v));
    anchor.append(dl);
    parts.push(anchor);
    const sides = el("div", "sides");
    sides.append(side(i, 0, blk), side(i, 1, blk));
    parts.push(sides);
    const votes = blk.votes[i], table = el("table", "votes");
    const hr = el("tr");
    for (const h of ["voter", "shown as", "status", "vote", "thought"]) hr.append(el("th", null, h));
    const thead = el("thead");
    thead.append(hr);
    table.append(thead);
    const tb = el("tbody");
    for (const v of votes) {
      const [voter, order, status, choice, thought, error, raw] = v, tr = el("tr", "vote-" + status);
      const shown = order.split("").map((c, k) => String.fromCharCode(65 + k) + ": " + I.methods[pr[+c]]).join(", ");
      const vote = choice === null || choice === undefined ? "—" : I.methods[pr[choice]] + " (" + String.fromCharCode(65 + order.indexOf(String(choice))) + ")";
      tr.append(el("td", null, I.voters[voter]), el("td", null, shown),
                el("td", null, { o: "ok", i: "invalid", f: "failed" }[status] || status),
                el("td", choice === 0 ? "side-a" : choice === 1 ? "side-b" : "muted", vote));
      const th = el("td", "msg", thought || "");
      if (error) th.append(el("div", "err", error));
      if (raw) th.append(el("div", "raw", raw));
      tr.append(th);
      tb.append(tr);
    }
    table.append(tb);
    parts.push(el("h4", null, votes.length + " votes"), table);
    detail.replaceChildren(...parts);
    detail.hidden = false;
  }

  refresh();
  document.body.dataset.mvReady = String(performance.now());
  const m = /^#match=(.*)$/.exec(location.hash);
  if (m) {
    const want = decodeURIComponent(m[1]);
    for (let i = 0; i < N; i++) {
      const pr = I.pairs[M.pair[i]];
      if (I.methods[pr[0]] + "_vs_" + I.methods[pr[1]] + "/" + I.ids[M.anchor[i]] === want) { select(i); break; }
    }
  }
  loaded.then(() => setTimeout(withSearch, 0));
})();
