// mailgate's small page script (/static/mailgate.js): copy buttons, confirmations before
// irreversible actions, and the live step list of "Test configuration". Every page works
// without it; it only saves clicks.
(function () {
  "use strict";
  // Copy: the clipboard API where the page is a secure context; elsewhere (plain http on a
  // LAN address) the text is selected so Ctrl-C / Cmd-C copies it.
  function copy(button) {
    var field = document.getElementById(button.getAttribute("data-copy"));
    if (!field) return;
    function selected() {
      field.focus();
      field.select();
      button.textContent = "Selected: press Ctrl-C";
    }
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(field.value).then(function () {
        button.textContent = "Copied";
      }, selected);
    } else {
      selected();
    }
  }
  document.addEventListener("click", function (event) {
    var button = event.target.closest && event.target.closest("[data-copy]");
    if (button) copy(button);
  });
  // Forms marked data-confirm ask first; the server asks again when the script is off.
  document.addEventListener("submit", function (event) {
    var message = event.target.getAttribute("data-confirm");
    if (message && !window.confirm(message)) event.preventDefault();
  });
  // The test page: fetch the step list fragment until it says it is done. A fetch that
  // fails (the server busy or restarting) is tried again a few times, more slowly, rather
  // than leaving the list frozen at "Running…"; then the page says to reload.
  var POLL_MS = 400, RETRY_MS = 1500, MAX_FAILURES = 20;
  function poll(box, failures) {
    fetch(box.getAttribute("data-poll"), { credentials: "same-origin" })
      .then(function (r) {
        if (!r.ok) throw new Error("HTTP " + r.status);
        return r.text();
      })
      .then(function (html) {
        box.innerHTML = html;
        if (!box.querySelector("[data-done]")) setTimeout(function () { poll(box, 0); }, POLL_MS);
      }, function () {
        if (failures < MAX_FAILURES) {
          setTimeout(function () { poll(box, failures + 1); }, RETRY_MS);
        } else {
          var note = document.createElement("p");
          note.className = "warn";
          note.id = "poll-lost";
          note.textContent = "The steps stopped updating: reload the page to see the result.";
          box.appendChild(note);
        }
      });
  }
  document.addEventListener("DOMContentLoaded", function () {
    var box = document.querySelector("[data-poll]");
    if (box && !box.querySelector("[data-done]")) poll(box, 0);
  });
})();
// The authorization callback: the code and state leave the address bar and the history.
if (window.location.pathname === "/oauth/callback" && window.location.search && window.history.replaceState) {
  window.history.replaceState(null, "", "/oauth/callback");
}
