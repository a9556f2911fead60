// The few behaviours htmx does not cover. Loaded after htmx; no inline
// script anywhere (the Content-Security-Policy forbids it).
(function () {
  // Action answers (started, refused, ...) go to the flash area even when
  // they are errors: htmx does not swap 4xx/5xx answers by default.
  document.addEventListener("htmx:beforeSwap", function (e) {
    var target = e.detail.target;
    if (e.detail.xhr.status >= 400 && target && target.id === "flash") {
      e.detail.shouldSwap = true;
      e.detail.isError = false;
    }
  });
  // A confirm step for actions that stop work (hx-confirm uses window.confirm,
  // which is fine; nothing to add here). Mark the page as live-connected so
  // the header dot can show whether updates arrive.
  document.addEventListener("htmx:sseOpen", function () {
    document.body.classList.add("live-on");
  });
  // A live refresh of the schedules never wipes a note being typed.
  document.addEventListener("htmx:beforeRequest", function (e) {
    var el = e.detail.elt;
    var active = document.activeElement;
    if (el && el.id === "schedule-cards" && active && el.contains(active) && active.value) {
      e.preventDefault();
    }
  });
  document.addEventListener("htmx:sseError", function () {
    document.body.classList.remove("live-on");
  });
})();
