// Vacsine console: live updates of the events page (server-sent events) and approve/deny
// without a page reload. The HTML it inserts is rendered and escaped by the server.
"use strict";
(function () {
  const live = document.querySelector("[data-live]");
  const state = document.getElementById("live-state");
  const say = (t) => { if (state) state.textContent = t; };
  if (live && window.EventSource) {
    const es = new EventSource(live.dataset.live);
    es.addEventListener("open", () => say("live updates: on"));
    es.addEventListener("live", (e) => {
      live.innerHTML = e.data;
      live.dataset.updates = String(Number(live.dataset.updates || "0") + 1);
    });
    es.addEventListener("ended", () => { es.close(); say("session ended: log in again"); });
    es.addEventListener("error", () => say("live updates: reconnecting…"));
  }
  // Approve / deny: posted in the background (the form and its CSRF token as they are); the
  // live stream shows the new state.
  document.addEventListener("submit", async (e) => {
    const form = e.target;
    if (!(form instanceof HTMLFormElement) || !form.classList.contains("settle")) return;
    e.preventDefault();
    const body = new URLSearchParams(new FormData(form));
    if (e.submitter && e.submitter.name) body.set(e.submitter.name, e.submitter.value);
    form.querySelectorAll("button").forEach((b) => { b.disabled = true; });
    try {
      const r = await fetch(form.action, {
        method: "POST", body, credentials: "same-origin",
        headers: { "x-console-fetch": "1" },
      });
      if (!r.ok) {
        const doc = new DOMParser().parseFromString(await r.text(), "text/html");
        const why = doc.getElementById("refusal");
        say("refused (" + r.status + "): " + (why ? why.textContent : r.statusText));
        form.querySelectorAll("button").forEach((b) => { b.disabled = false; });
      }
    } catch (err) {
      say("could not send: " + err);
      form.querySelectorAll("button").forEach((b) => { b.disabled = false; });
    }
  });
})();
