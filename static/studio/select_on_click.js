// A secret shown once (a new share link or API token): one click selects it for copying.
(function () {
  "use strict";
  for (const input of document.querySelectorAll("input[data-select-on-click]")) {
    input.addEventListener("click", () => input.select());
  }
})();
