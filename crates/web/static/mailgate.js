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
  // The test page: fetch the step list fragment until it says it is done.
  function poll(box) {
    fetch(box.getAttribute("data-poll"), { credentials: "same-origin" })
      .then(function (r) { return r.text(); })
      .then(function (html) {
        box.innerHTML = html;
        if (!box.querySelector("[data-done]")) setTimeout(function () { poll(box); }, 400);
      });
  }
  document.addEventListener("DOMContentLoaded", function () {
    var box = document.querySelector("[data-poll]");
    if (box && !box.querySelector("[data-done]")) poll(box);
  });
})();
// The authorization callback: the code and state leave the address bar and the history.
if (window.location.pathname === "/oauth/callback" && window.location.search && window.history.replaceState) {
  window.history.replaceState(null, "", "/oauth/callback");
}
