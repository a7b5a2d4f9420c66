// The comparison page: while the evaluation job is queued or running, poll data.json and reload
// the page once it is over; then let people hide the prompts every model solves equally often.
(function () {
  "use strict";
  const root = document.getElementById("comparison");
  const toggle = document.getElementById("only-differing");
  if (toggle) {
    toggle.addEventListener("change", () => {
      for (const section of document.querySelectorAll(".compare-prompt:not(.differs)")) section.hidden = toggle.checked;
    });
  }
  if (!["queued", "running"].includes(root.dataset.status)) return;

  async function poll() {
    const response = await fetch(root.dataset.url, { credentials: "same-origin" });
    const data = await response.json();
    const badge = document.getElementById("status");
    badge.textContent = data.status;
    badge.className = "status status-" + data.status;
    if (data.status === "finished" || data.status === "failed") {
      location.reload();
      return;
    }
    setTimeout(poll, 2000);
  }
  setTimeout(poll, 1000);
})();
