// The queue note of a queued run's page: while the run waits, ask runs/<id>/queue.json every few
// seconds why (its place, the run ahead, the busy workers) and say so; once a worker has taken the
// run up, hide the note and stop asking (the run page's own socket shows the run from then on).
(function () {
  "use strict";
  const note = document.getElementById("queue-status");
  if (!note) return;
  const reason = document.getElementById("queue-reason");
  const PERIOD_MS = 3000;

  async function poll() {
    let data;
    try {
      const response = await fetch(note.dataset.url, { credentials: "same-origin", headers: { Accept: "application/json" } });
      if (!response.ok) return; // signed out, or the run is gone: the note keeps its last word
      data = await response.json();
    } catch (error) {
      setTimeout(poll, PERIOD_MS * 2); // the studio is restarting: ask again later
      return;
    }
    if (data.queue === null) {
      note.hidden = true;
      return;
    }
    reason.textContent = data.queue.reason;
    note.dataset.position = String(data.queue.position);
    setTimeout(poll, PERIOD_MS);
  }
  setTimeout(poll, PERIOD_MS);
})();
