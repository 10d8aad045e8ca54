// Sluice portal: every change goes through the REST API with the
// session's CSRF token; the answer is shown in #result.
"use strict";

const csrf = document.querySelector('meta[name="csrf"]').content;
const result = () => document.getElementById("result");

function say(text, ok) {
  const r = result();
  r.textContent = text;
  r.className = ok ? "ok" : "failed";
}

// A request with the session's CSRF token: a JSON body, or `raw` (a file,
// streamed) sent as application/octet-stream.
function send(method, url, body, raw) {
  const headers = { "X-CSRF-Token": csrf };
  if (raw !== undefined) headers["Content-Type"] = "application/octet-stream";
  else if (body !== undefined) headers["Content-Type"] = "application/json";
  return fetch(url, {
    method,
    headers,
    credentials: "same-origin",
    body: raw !== undefined ? raw : body === undefined ? undefined : JSON.stringify(body),
  });
}

async function read(answer) {
  const text = await answer.text();
  let json = null;
  try { json = JSON.parse(text); } catch (_) { /* empty */ }
  return { ok: answer.ok, status: answer.status, text, json };
}

async function api(method, url, body, raw) {
  return read(await send(method, url, body, raw));
}

function failure(a) {
  return a.json && a.json.error ? `${a.json.error.code}: ${a.json.error.message}` : `HTTP ${a.status}`;
}

function selected() {
  return [...document.querySelectorAll('input[name="id"]:checked')].map((c) => Number(c.value));
}

// A bulk action's answer is NDJSON, one line per entry as it is acted on:
// read it as it streams, so a long action shows its progress.
async function bulk(button) {
  const ids = selected();
  if (ids.length === 0) { say("Select entries first.", false); return; }
  const dry = button.dataset.dry === "true";
  const op = button.dataset.op;
  const answer = await send("POST", `/api/v1/suspended/${op}`, { ids, dry_run: dry });
  if (!answer.ok) { say(failure(await read(answer)), false); return; }
  say("", true);
  const progress = document.createElement("progress");
  progress.id = "bulk-progress";
  progress.max = ids.length;
  progress.value = 0;
  const counter = document.createElement("span");
  counter.id = "bulk-count";
  const list = document.createElement("ul");
  list.id = "bulk-lines";
  result().append(progress, counter, list);
  let summary = "";
  let seen = 0;
  const show = (l) => {
    const li = document.createElement("li");
    if (l.event === "entry") {
      seen += 1;
      progress.value = seen;
      counter.textContent = ` ${seen} of ${ids.length}`;
      li.textContent = l.would
        ? `#${l.id}: would ${l.would} (${l.entry.reason})`
        : `#${l.id}: ${l.outcome.outcome}${l.outcome.reason ? " — " + l.outcome.reason : ""}`;
    } else if (l.event === "summary" && l.dry_run) summary = `Dry run: ${l.matched} would be ${op}d; nothing changed.`;
    else if (l.event === "summary") summary = `${l.summary.done} ${op}d, ${l.summary.failed} failed, ${l.summary.skipped} skipped.`;
    else if (l.event === "error") li.textContent = `stopped: ${l.code}: ${l.reason}`;
    if (li.textContent) list.appendChild(li);
  };
  const reader = answer.body.pipeThrough(new TextDecoderStream()).getReader();
  let pending = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    pending += value;
    const lines = pending.split("\n");
    pending = lines.pop();
    for (const line of lines) if (line.trim()) show(JSON.parse(line));
  }
  if (pending.trim()) show(JSON.parse(pending));
  const line = document.createElement("p");
  line.id = "bulk-summary";
  line.textContent = summary || "The action stopped before its end.";
  result().insertBefore(line, progress);
  // The outcome stays on the page until the operator has read it (a
  // reload of its own would take it away); the list is refreshed on demand.
  if (!dry) {
    const again = document.createElement("p");
    const link = document.createElement("a");
    link.id = "bulk-refresh";
    link.href = location.href;
    link.textContent = "Show the list as it is now";
    again.append(link);
    result().insertBefore(again, progress);
  }
}

document.addEventListener("click", async (event) => {
  const button = event.target.closest("[data-action]");
  if (!button) return;
  event.preventDefault();
  button.disabled = true;
  try {
    if (button.dataset.action === "bulk") { await bulk(button); return; }
    const method = button.dataset.action === "delete" ? "DELETE" : "POST";
    const a = await api(method, button.dataset.url);
    if (!a.ok) { say(failure(a), false); return; }
    say(a.json && a.json.outcome ? `Done: ${a.json.outcome}.` : "Done.", true);
    setTimeout(() => { location.href = button.dataset.then || location.href; }, 800);
  } finally {
    button.disabled = false;
  }
});

document.addEventListener("change", (event) => {
  if (event.target.matches("[data-select-all]")) {
    for (const c of document.querySelectorAll('input[name="id"]')) c.checked = event.target.checked;
  }
});

document.addEventListener("submit", async (event) => {
  const form = event.target;
  if (form.id !== "resubmit") return;
  event.preventDefault();
  const lines = (name) => form.elements[name].value.split("\n").map((l) => l.trim()).filter((l) => l);
  const file = form.elements.body && form.elements.body.files[0];
  let a;
  if (file) {
    // A new body: streamed as the request's body, the edit in the query.
    const query = new URLSearchParams();
    for (const l of lines("set")) query.append("set", l);
    for (const l of lines("remove")) query.append("remove", l);
    a = await api("POST", `${form.dataset.url}?${query}`, undefined, file);
  } else {
    a = await api("POST", form.dataset.url, { set: lines("set"), remove: lines("remove") });
  }
  if (!a.ok) { say(failure(a), false); return; }
  say(`Resubmitted as message ${a.json.message_id}.`, true);
  const link = document.createElement("a");
  link.id = "resubmitted";
  link.href = `/messages/${a.json.message_id}`;
  link.textContent = " Follow it.";
  result().appendChild(link);
});
