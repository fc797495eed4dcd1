/* The review desk's keys, hand-written (no dependencies): j / k move to the next / previous held item,
   a approves it, r moves to its rejection note (Enter sends the rejection, Escape comes back). */
(function () {
  "use strict";
  var current = 0;

  function items() {
    return Array.prototype.slice.call(document.querySelectorAll("[data-review-item]"));
  }

  function select(index) {
    var list = items();
    if (!list.length) { return; }
    current = Math.max(0, Math.min(index, list.length - 1));
    list.forEach(function (item, i) { item.toggleAttribute("aria-current", i === current); });
    list[current].focus();
    list[current].scrollIntoView({ block: "nearest" });
  }

  document.addEventListener("keydown", function (event) {
    if (event.ctrlKey || event.metaKey || event.altKey) { return; }
    var typing = event.target.closest && event.target.closest("input, textarea, select");
    if (typing) {
      if (event.key === "Escape") { select(current); }
      return;
    }
    var list = items();
    if (!list.length) { return; }
    var item = list[current];
    if (event.key === "j") { select(current + 1); }
    else if (event.key === "k") { select(current - 1); }
    else if (event.key === "a") { item.querySelector("form.approve").requestSubmit(); }
    else if (event.key === "r") { item.querySelector("form.reject input[name=note]").focus(); }
    else { return; }
    event.preventDefault();
  });

  document.addEventListener("DOMContentLoaded", function () {
    var list = items();
    var invalid = document.querySelector("[data-review-item] [aria-invalid=true]");
    if (invalid) { current = list.indexOf(invalid.closest("[data-review-item]")); invalid.focus(); }
    else { select(0); }
  });
}());
