// The Create page's reference picture: the chosen file is shown before anything is sent (an object URL,
// which the page's CSP allows as img-src blob:), and a button clears it. Hand-written; no dependencies.
(function () {
  "use strict";
  function show(input) {
    var figure = document.getElementById(input.getAttribute("data-preview"));
    var image = figure.querySelector("img");
    var file = input.files && input.files[0];
    if (image.src) { URL.revokeObjectURL(image.src); image.removeAttribute("src"); }
    figure.hidden = !file;
    if (file) {
      image.src = URL.createObjectURL(file);
      figure.querySelector("figcaption").textContent = file.name;
    }
  }
  document.addEventListener("change", function (event) {
    if (event.target.matches("input[type=file][data-preview]")) { show(event.target); }
  });
  document.addEventListener("click", function (event) {
    var button = event.target.closest("button[data-clears]");
    if (!button) { return; }
    var input = document.getElementById(button.getAttribute("data-clears"));
    input.value = "";
    show(input);
    input.focus();
  });
}());
