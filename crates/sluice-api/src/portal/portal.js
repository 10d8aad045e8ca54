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

async function api(method, url, body) {
  const headers = { "X-CSRF-Token": csrf };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const answer = await fetch(url, {
    method,
    headers,
    credentials: "same-origin",
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await answer.text();
  let json = null;
  try { json = JSON.parse(text); } catch (_) { /* NDJSON or empty */ }
  return { ok: answer.ok, status: answer.status, text, json };
}

function failure(a) {
  return a.json && a.json.error ? `${a.json.error.code}: ${a.json.error.message}` : `HTTP ${a.status}`;
}

function selected() {
  return [...document.querySelectorAll('input[name="id"]:checked')].map((c) => Number(c.value));
}

async function bulk(button) {
  const ids = selected();
  if (ids.length === 0) { say("Select entries first.", false); return; }
  const dry = button.dataset.dry === "true";
  const op = button.dataset.op;
  const a = await api("POST", `/api/v1/suspended/${op}`, { ids, dry_run: dry });
  if (!a.ok) { say(failure(a), false); return; }
  const lines = a.text.trim().split("\n").map((l) => JSON.parse(l));
  const list = document.createElement("ul");
  list.id = "bulk-lines";
  let summary = "";
  for (const l of lines) {
    const li = document.createElement("li");
    if (l.event === "entry" && l.would) li.textContent = `#${l.id}: would ${l.would} (${l.entry.reason})`;
    else if (l.event === "entry") li.textContent = `#${l.id}: ${l.outcome.outcome}${l.outcome.reason ? " — " + l.outcome.reason : ""}`;
    else if (l.event === "summary" && l.dry_run) summary = `Dry run: ${l.matched} would be ${op}d; nothing changed.`;
    else if (l.event === "summary") summary = `${l.summary.done} ${op}d, ${l.summary.failed} failed, ${l.summary.skipped} skipped.`;
    else if (l.event === "error") li.textContent = `stopped: ${l.code}: ${l.reason}`;
    else continue;
    if (li.textContent) list.appendChild(li);
  }
  say(summary, true);
  result().appendChild(list);
  if (!dry) setTimeout(() => location.reload(), 1500);
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
  const a = await api("POST", form.dataset.url, { set: lines("set"), remove: lines("remove") });
  if (!a.ok) { say(failure(a), false); return; }
  say(`Resubmitted as message ${a.json.message_id}.`, true);
  const link = document.createElement("a");
  link.id = "resubmitted";
  link.href = `/messages/${a.json.message_id}`;
  link.textContent = " Follow it.";
  result().appendChild(link);
});
