// The run page's control buttons: send the command without leaving the live page (so the charts keep
// growing), say what the studio answered (a refusal says why), and list the command; run.js fills in
// its outcome when the engine applies it. Without this script the forms post and redirect as usual.
(function () {
  "use strict";
  const controls = document.getElementById("controls");
  const message = document.getElementById("control-message");
  if (!controls || !message) return;

  function say(text, ok) {
    message.textContent = text;
    message.className = ok ? "message-success" : "message-error";
    message.hidden = false;
  }

  function listCommand(command) {
    let list = document.getElementById("commands");
    if (!list) {
      list = document.createElement("ul");
      list.id = "commands";
      list.className = "events";
      message.after(list);
    }
    const li = document.createElement("li");
    li.dataset.command = command.id;
    li.textContent = command.label + " by " + command.requested_by + " · ";
    const outcome = document.createElement("span");
    outcome.className = "outcome";
    const applied = window.studioRun ? window.studioRun.applied[command.id] : undefined;
    outcome.textContent = applied === undefined ? command.outcome : "applied at step " + applied;
    li.appendChild(outcome);
    list.insertBefore(li, list.firstChild);
  }

  async function send(form) {
    const token = form.querySelector("input[name=csrfmiddlewaretoken]").value;
    const response = await fetch(form.action, {
      method: "POST", credentials: "same-origin", headers: { Accept: "application/json", "X-CSRFToken": token },
    });
    const data = await response.json().catch(() => ({ error: "The studio answered " + response.status + "." }));
    if (!response.ok) {
      say(data.error, false);
      return;
    }
    if (data.command) listCommand(data.command);
    say(data.message, true);
  }

  for (const form of controls.querySelectorAll("form")) {
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      send(form);
    });
  }
})();
