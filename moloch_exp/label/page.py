"""The labelling page (one static HTML file; all data comes from the server's JSON API).

    python -m moloch_exp.label serve RUN_DIR      # serves it at http://127.0.0.1:8765/

One item at a time: the question, the anchor and the output. Answer by click or keyboard: y / n /
u choose yes, no or unsure, Enter saves and moves to the next unlabelled item (in the note box too;
Shift+Enter there is a new line), ← → step through items. The name is kept in the address
(``?labeller=``) and in the browser's storage, so reopening the page resumes where it stopped.
Text is inserted with ``textContent`` only (an output holding HTML is shown, never run).
"""

PAGE = r"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>Labelling</title>
<style>
:root{--fg:#1d232b;--muted:#5b6673;--line:#d8dde3;--bg:#f5f7f9;--accent:#2457a6;--yes:#b42318;--no:#1f7a3a;--unsure:#8a6d00}
*{box-sizing:border-box}body{margin:0;font:16px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:var(--fg);background:var(--bg)}
header{background:#fff;border-bottom:1px solid var(--line);padding:.6rem 1.5rem;display:flex;gap:1.5rem;align-items:center;flex-wrap:wrap}
header h1{font-size:1.1rem;margin:0}#who{color:var(--muted)}#who a{color:var(--accent);margin-left:.4rem;cursor:pointer}
.progress{flex:1;min-width:220px;display:flex;align-items:center;gap:.7rem}
.bar{flex:1;height:.55rem;background:#e4e8ec;border-radius:1rem;overflow:hidden}.bar>div{height:100%;background:var(--accent);width:0}
main{max-width:1200px;margin:1.2rem auto;padding:0 1.5rem}
.card{background:#fff;border:1px solid var(--line);border-radius:.6rem;padding:1.2rem 1.4rem;margin-bottom:1rem}
#question{font-size:1.2rem;font-weight:600;margin:.2rem 0 0}.label{font-size:.78rem;letter-spacing:.06em;text-transform:uppercase;color:var(--muted);margin:0 0 .35rem}
.texts{display:grid;grid-template-columns:1fr 1fr;gap:1rem}@media(max-width:820px){.texts{grid-template-columns:1fr}}
.texts .card{margin:0}.text{white-space:pre-wrap;overflow-wrap:anywhere;max-height:55vh;overflow:auto}
.answers{display:flex;gap:.7rem;flex-wrap:wrap;align-items:center}
button{font:inherit;border:1px solid var(--line);background:#fff;border-radius:.45rem;padding:.5rem 1.1rem;cursor:pointer}
button:focus-visible{outline:3px solid #9db8e6}button:disabled{opacity:.5;cursor:default}
.choice{min-width:8.5rem;font-weight:600}.choice kbd{font-weight:400}
#btn-yes.on{background:var(--yes);border-color:var(--yes);color:#fff}#btn-no.on{background:var(--no);border-color:var(--no);color:#fff}
#btn-unsure.on{background:var(--unsure);border-color:var(--unsure);color:#fff}
#save{background:var(--accent);border-color:var(--accent);color:#fff;font-weight:600}
textarea{width:100%;font:inherit;border:1px solid var(--line);border-radius:.45rem;padding:.5rem;min-height:3.2rem;margin:.8rem 0}
kbd{font:.8em ui-monospace,monospace;border:1px solid #c5ccd4;border-bottom-width:2px;border-radius:.25rem;padding:0 .3rem;background:#f7f8fa;color:var(--fg)}
.nav{display:flex;gap:.6rem;align-items:center;justify-content:space-between;flex-wrap:wrap}
#status{color:var(--muted);min-height:1.5em}#status.err{color:var(--yes)}.saved{color:var(--no);font-weight:600}
#done{border-color:var(--no);background:#eef8f1}.hidden{display:none}.help{color:var(--muted);font-size:.9rem}
#name-card{max-width:32rem;margin:3rem auto}#name-card input{font:inherit;padding:.5rem;border:1px solid var(--line);border-radius:.45rem;width:100%;margin:.6rem 0}
</style></head>
<body>
<header><h1>Labelling</h1><span id="who"></span>
<div class="progress"><div class="bar"><div id="bar"></div></div><span id="progress-text"></span></div></header>
<main>
<section id="name-card" class="card hidden"><p class="label">Who is labelling?</p>
<p>Several people can label the same items; each answers under their own name.</p>
<form id="name-form"><input id="labeller-name" autocomplete="name" placeholder="Your name" maxlength="64" required>
<button id="start" type="submit">Start labelling</button></form></section>
<section id="work" class="hidden">
<div id="done" class="card hidden"><b>All items are labelled. Thank you!</b> You can still revisit any item with
<kbd>←</kbd> <kbd>→</kbd> and change an answer.</div>
<div class="card"><p class="label">Question <span id="position"></span></p><p id="question"></p></div>
<div class="texts"><div class="card"><p class="label" id="anchor-heading"></p><div id="anchor" class="text"></div></div>
<div class="card"><p class="label" id="output-heading"></p><div id="output" class="text"></div></div></div>
<div class="card" style="margin-top:1rem">
<div class="answers">
<button class="choice" id="btn-yes" data-answer="yes">Yes <kbd>y</kbd></button>
<button class="choice" id="btn-no" data-answer="no">No <kbd>n</kbd></button>
<button class="choice" id="btn-unsure" data-answer="unsure">Unsure <kbd>u</kbd></button>
<span id="saved-mark"></span></div>
<textarea id="note" placeholder="Note (optional): what decided it"></textarea>
<div class="nav"><div><button id="prev">← Previous</button> <button id="next">Next →</button></div>
<span id="status" role="status"></span>
<button id="save">Save and next <kbd style="background:transparent;color:#fff">Enter</kbd></button></div>
<p class="help">Choose with <kbd>y</kbd> <kbd>n</kbd> <kbd>u</kbd> or a click, then save with <kbd>Enter</kbd>
(also from the note; <kbd>Shift</kbd>+<kbd>Enter</kbd> starts a new line there). Every answer is stored the moment
it is saved; closing this page loses nothing.</p></div>
</section></main>
<script>
"use strict";
const $ = (id) => document.getElementById(id);
let labeller = new URLSearchParams(location.search).get("labeller") || localStorage.getItem("labeller") || "";
let cur = null, choice = null, busy = false;

async function api(path, opts) {
  const r = await fetch(path, opts);
  const body = await r.json();
  if (!r.ok) throw new Error(body.error || ("HTTP " + r.status));
  return body;
}
const qs = (o) => new URLSearchParams(o).toString();
function status(text, err) { $("status").textContent = text; $("status").className = err ? "err" : ""; }
function progress(done, total) {
  $("progress-text").textContent = done + " of " + total + " labelled";
  $("bar").style.width = (total ? 100 * done / total : 0) + "%";
  $("done").classList.toggle("hidden", done < total);
}
function choose(a) {
  choice = a;
  for (const b of document.querySelectorAll(".choice")) b.classList.toggle("on", b.dataset.answer === a);
}
function render() {
  const it = cur.item;
  $("position").textContent = "· item " + (cur.pos + 1) + " of " + cur.total;
  $("question").textContent = it.question;
  $("anchor-heading").textContent = it.anchor_heading;
  $("anchor").textContent = it.anchor_text;
  $("output-heading").textContent = it.output_heading;
  $("output").textContent = it.output;
  $("note").value = cur.answer ? cur.answer.note : "";
  $("saved-mark").textContent = cur.answer ? "saved: " + cur.answer.answer : "";
  $("saved-mark").className = cur.answer ? "saved" : "";
  choose(cur.answer ? cur.answer.answer : null);
  $("prev").disabled = cur.pos === 0;
  $("next").disabled = cur.pos === cur.total - 1;
  progress(cur.done, cur.total);
  $("anchor").scrollTop = 0; $("output").scrollTop = 0;
  if (document.activeElement === $("note")) $("note").blur();  // y / n / u choose again on the next item
}
async function load(pos) {
  try { cur = await api("/api/item?" + qs({labeller, pos})); render(); status(""); }
  catch (e) { status("Could not load the item: " + e.message, true); }
}
async function save() {
  if (busy || !cur) return;
  if (!choice) { status("Choose yes, no or unsure first.", true); return; }
  busy = true;
  try {
    const r = await api("/api/answer", {method: "POST", headers: {"Content-Type": "application/json"},
      body: JSON.stringify({labeller, item_id: cur.item.item_id, answer: choice, note: $("note").value})});
    if (r.next === null) { cur.answer = {answer: choice, note: $("note").value}; cur.done = r.done; render();
                           status("Saved. All items are labelled."); }
    else { await load(r.next); status("Saved."); }  // progress shows once the next item is on screen
  } catch (e) { status("Not saved: " + e.message + " (try again)", true); }
  finally { busy = false; }
}
async function start() {
  $("who").innerHTML = "";
  $("who").append("Labeller: ", Object.assign(document.createElement("b"), {textContent: labeller}),
                  Object.assign(document.createElement("a"), {textContent: "change", id: "change-name",
                    onclick: () => { localStorage.removeItem("labeller"); location.search = ""; }}));
  $("name-card").classList.add("hidden"); $("work").classList.remove("hidden");
  try {
    const s = await api("/api/state?" + qs({labeller}));
    progress(s.done, s.total);
    await load(s.first_open === null ? 0 : s.first_open);
  } catch (e) { status("Could not reach the server: " + e.message, true); }
}
$("name-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  labeller = $("labeller-name").value.trim();
  if (!labeller) return;
  localStorage.setItem("labeller", labeller);
  history.replaceState(null, "", "?" + qs({labeller}));
  start();
});
for (const b of document.querySelectorAll(".choice")) b.addEventListener("click", () => choose(b.dataset.answer));
$("save").addEventListener("click", save);
$("prev").addEventListener("click", () => cur && cur.pos > 0 && load(cur.pos - 1));
$("next").addEventListener("click", () => cur && cur.pos < cur.total - 1 && load(cur.pos + 1));
document.addEventListener("keydown", (ev) => {
  if (!cur || ev.ctrlKey || ev.metaKey || ev.altKey) return;
  if (busy) { ev.preventDefault(); return; }  // a key while saving would land on the item being replaced
  if (ev.target === $("note")) {
    if (ev.key === "Enter" && !ev.shiftKey) { ev.preventDefault(); save(); }
    else if (ev.key === "Escape") $("note").blur();
    return;
  }
  if (ev.target.tagName === "INPUT") return;
  const k = ev.key.toLowerCase();
  if (k === "y" || k === "n" || k === "u") { ev.preventDefault(); choose({y: "yes", n: "no", u: "unsure"}[k]); }
  else if (ev.key === "Enter") { ev.preventDefault(); save(); }
  else if (ev.key === "ArrowLeft") $("prev").click();
  else if (ev.key === "ArrowRight") $("next").click();
});
if (labeller) { history.replaceState(null, "", "?" + qs({labeller})); start(); }
else $("name-card").classList.remove("hidden");
</script></body></html>
"""
