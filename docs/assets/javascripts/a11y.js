/* Name two unnamed widgets of the theme for assistive technology (found by axe-core in
 * tests/site/test_browser.py): the search dialog and the instant-navigation progress bar. */
(function () {
  "use strict";
  function name() {
    var labels = { ".md-search": "Search", ".md-progress": "Page loading" };
    Object.keys(labels).forEach(function (selector) {
      document.querySelectorAll(selector).forEach(function (el) {
        if (!el.getAttribute("aria-label")) {
          el.setAttribute("aria-label", labels[selector]);
        }
      });
    });
  }
  name();
  if (window.document$ && window.document$.subscribe) {
    window.document$.subscribe(name);
  }
  new MutationObserver(name).observe(document.body, { childList: true });
})();
