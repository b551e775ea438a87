// Parry UI: live status for the jobs page (polling) and a running job's page (live events, else polling).
// Everything from the server goes into the page through textContent, never as HTML.
"use strict";

(function () {
  const TERMINAL = new Set(["succeeded", "failed", "cancelled"]);
  const POLL_MS = 2000;

  function percent(progress) {
    return progress && typeof progress.fraction === "number" ? Math.round(progress.fraction * 100) : null;
  }

  function progressText(job) {
    const p = job.progress;
    if (!p || TERMINAL.has(job.status)) return "";
    let text = p.stage || "";
    if (typeof p.eta_seconds === "number") text += " · ETA " + Math.round(p.eta_seconds) + " s";
    return text;
  }

  function cell(row, text, className) {
    const td = document.createElement("td");
    if (className) td.className = className;
    td.textContent = text;
    row.appendChild(td);
    return td;
  }

  function jobRow(job) {
    const row = document.createElement("tr");
    row.dataset.jobId = job.id;
    const link = document.createElement("a");
    link.href = job.url;
    link.textContent = job.id;
    cell(row, "").appendChild(link);
    cell(row, job.kind);
    cell(row, job.model);
    cell(row, job.dataset);
    const status = document.createElement("span");
    status.className = "status status-" + job.status;
    status.textContent = job.status;
    cell(row, "").appendChild(status);
    const progressCell = cell(row, "");
    const value = percent(job.progress);
    if (!TERMINAL.has(job.status)) {
      const bar = document.createElement("progress");
      bar.max = 100;
      if (value !== null) bar.value = value;
      progressCell.appendChild(bar);
      const note = document.createElement("span");
      note.className = "meta";
      note.textContent = " " + (value !== null ? value + "% " : "") + progressText(job);
      progressCell.appendChild(note);
    } else if (job.status === "failed" && job.error) {
      progressCell.textContent = job.error;
    }
    cell(row, job.created_at || "", "meta");
    return row;
  }

  async function fetchJson(url) {
    const response = await fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } });
    if (response.status === 401) {
      window.location.assign("/ui/login?next=" + encodeURIComponent(window.location.pathname));
      return null;
    }
    if (!response.ok) throw new Error("HTTP " + response.status);
    return response.json();
  }

  function pollList(table) {
    const body = table.querySelector("tbody");
    async function tick() {
      try {
        const page = await fetchJson(table.dataset.poll);
        if (page === null) return;
        const rows = page.items.map(jobRow);
        body.replaceChildren(...rows);
        const empty = document.getElementById("no-jobs");
        if (empty) empty.hidden = rows.length > 0;
        const live = document.getElementById("live");
        if (live) live.textContent = "updated " + new Date().toLocaleTimeString();
      } catch (err) {
        const live = document.getElementById("live");
        if (live) live.textContent = "cannot reach the server; retrying";
      }
      window.setTimeout(tick, POLL_MS);
    }
    window.setTimeout(tick, POLL_MS);
  }

  function showJob(box, job) {
    const bar = box.querySelector("progress");
    const value = percent(job.progress);
    if (bar && value !== null) bar.value = value;
    const status = box.querySelector(".status");
    if (status) {
      status.textContent = job.status;
      status.className = "status status-" + job.status;
    }
    const note = box.querySelector(".progress-note");
    if (note) note.textContent = (value !== null ? value + "% " : "") + progressText(job);
  }

  function pollJob(box) {
    box.dataset.live = "polling";
    async function tick() {
      try {
        const job = await fetchJson(box.dataset.poll);
        if (job === null) return;
        if (TERMINAL.has(job.status)) {
          window.location.reload();
          return;
        }
        showJob(box, job);
      } catch (err) {
        // A missed poll is retried; the page stays as it was.
      }
      window.setTimeout(tick, POLL_MS);
    }
    window.setTimeout(tick, POLL_MS);
  }

  // Live events (Server-Sent Events) while the server offers them; polling when it does not (or stops).
  function followJob(box) {
    if (!window.EventSource || !box.dataset.events) {
      pollJob(box);
      return;
    }
    const source = new EventSource(box.dataset.events);
    let ended = false;
    source.addEventListener("open", function () {
      box.dataset.live = "events";
    });
    function show(event) {
      const job = JSON.parse(event.data);
      if (!TERMINAL.has(job.status)) showJob(box, job);
    }
    source.addEventListener("status", show);
    source.addEventListener("progress", show);
    source.addEventListener("end", function () {
      ended = true;
      source.close();
      window.location.reload();
    });
    source.addEventListener("error", function () {
      // The browser reconnects by itself after a dropped stream; a refused one (CLOSED) is not retried.
      if (!ended && source.readyState === EventSource.CLOSED) pollJob(box);
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    const table = document.querySelector("table[data-poll]");
    if (table) pollList(table);
    const box = document.querySelector("[data-poll-job]");
    if (box) {
      box.dataset.poll = box.dataset.pollJob;
      box.dataset.events = box.dataset.pollJob + "/events";
      followJob(box);
    }
  });
})();
