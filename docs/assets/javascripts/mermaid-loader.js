/* Serve mermaid from this site, and only to pages that draw a diagram.
 *
 * Material for MkDocs loads mermaid from a CDN unless `window.mermaid` is already defined.
 * This stand-in is that definition: it remembers Material's settings and, on the first
 * diagram, loads assets/vendor/mermaid/mermaid.min.js (which replaces window.mermaid) and
 * hands the diagram to the real library. No request leaves the site.
 */
(function () {
  "use strict";
  var src = new URL("../vendor/mermaid/mermaid.min.js", document.currentScript.src).href;
  var settings = {};
  var loading = null;

  function load() {
    if (!loading) {
      loading = new Promise(function (resolve, reject) {
        var script = document.createElement("script");
        script.src = src;
        script.onload = function () {
          window.mermaid.initialize(settings);
          resolve(window.mermaid);
        };
        script.onerror = reject;
        document.head.appendChild(script);
      });
    }
    return loading;
  }

  window.mermaid = {
    initialize: function (config) {
      settings = config;
    },
    render: function (id, text) {
      return load().then(function (mermaid) {
        return mermaid.render(id, text);
      });
    },
  };
})();
