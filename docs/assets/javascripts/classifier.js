/* The landing page's "describe your request" box: classify a request into the section(s)
 * to read, from the keyword table in assets/data/classifier.json. The same function runs in
 * the browser and under Node in tests/test_landing_classifier.py.
 */
(function (root) {
  "use strict";

  function normalise(text) {
    return " " + String(text).toLowerCase().replace(/[^a-z0-9_.\-]+/g, " ").trim() + " ";
  }

  /* Sections whose keywords occur in `text`, best first: [{slug, title, url, scope, hits}]. */
  function classify(text, table) {
    var haystack = normalise(text);
    var scored = [];
    table.sections.forEach(function (section, order) {
      var hits = section.keywords.filter(function (keyword) {
        return haystack.indexOf(normalise(keyword)) !== -1;
      });
      if (hits.length) {
        scored.push({ section: section, hits: hits, order: order });
      }
    });
    scored.sort(function (a, b) {
      return b.hits.length - a.hits.length || a.order - b.order;
    });
    return scored.map(function (s) {
      return {
        slug: s.section.slug,
        title: s.section.title,
        url: s.section.url,
        scope: s.section.scope,
        hits: s.hits,
      };
    });
  }

  if (typeof module !== "undefined" && module.exports) {
    module.exports = { classify: classify };
    return;
  }

  var scriptSrc = document.currentScript && document.currentScript.src;
  var tablePromise = null;

  function table() {
    if (!tablePromise) {
      var url = new URL("../data/classifier.json", scriptSrc);
      tablePromise = fetch(url).then(function (r) {
        return r.json();
      });
    }
    return tablePromise;
  }

  function render(box, list, base) {
    var input = box.querySelector("input");
    var out = box.querySelector(".dce-suggestions");
    out.innerHTML = "";
    if (!input.value.trim()) {
      return;
    }
    if (!list.length) {
      var none = document.createElement("li");
      none.textContent = "No section matched: follow the tree below, or start with the checklist.";
      out.appendChild(none);
      return;
    }
    list.forEach(function (item, i) {
      var li = document.createElement("li");
      var a = document.createElement("a");
      a.href = new URL(item.url, base).href;
      a.textContent = item.title;
      li.appendChild(a);
      li.appendChild(document.createTextNode(" — " + item.scope + " (matched: " + item.hits.join(", ") + ")"));
      out.appendChild(li);
    });
    if (list.length > 1) {
      var note = document.createElement("li");
      note.className = "dce-note";
      note.textContent = "Your request spans " + list.length + " sections: read each before you implement.";
      out.appendChild(note);
    }
  }

  function init() {
    var box = document.querySelector(".dce-classifier");
    if (!box || box.dataset.ready) {
      return;
    }
    box.dataset.ready = "1";
    var input = box.querySelector("input");
    var base = new URL("../../", scriptSrc);
    input.addEventListener("input", function () {
      table().then(function (t) {
        render(box, classify(input.value, t), base);
      });
    });
  }

  if (root.document$ && root.document$.subscribe) {
    root.document$.subscribe(init);
  } else {
    document.addEventListener("DOMContentLoaded", init);
  }
})(typeof window !== "undefined" ? window : globalThis);
