// The demo page's theme switch, as Docusaurus does it: `data-theme` on <html>, remembered in
// localStorage under "theme", the reader's system preference until they choose. Loaded in
// <head> without defer so the page never paints in the wrong theme.
(function () {
  "use strict";
  var root = document.documentElement;
  var stored = null;
  try { stored = window.localStorage.getItem("theme"); } catch (e) { stored = null; }
  var prefersDark = window.matchMedia && window.matchMedia("(prefers-color-scheme: dark)").matches;
  root.setAttribute("data-theme", stored === "dark" || stored === "light" ? stored : (prefersDark ? "dark" : "light"));
  document.addEventListener("DOMContentLoaded", function () {
    var toggle = document.getElementById("theme-toggle");
    if (!toggle) return;
    var sync = function () {
      toggle.setAttribute("aria-pressed", root.getAttribute("data-theme") === "dark" ? "true" : "false");
    };
    sync();
    toggle.addEventListener("click", function () {
      var next = root.getAttribute("data-theme") === "dark" ? "light" : "dark";
      root.setAttribute("data-theme", next);
      try { window.localStorage.setItem("theme", next); } catch (e) { /* private mode */ }
      sync();
    });
  });
})();
