/* The landing page's "describe your request" box: the pages that answer the request, best
 * first, ranked over the site's own search index (search/search_index.json: each page's title,
 * description and problem statement, written there by docs/hooks/search.py), and the
 * section(s) to read, from the keyword table in assets/data/classifier.json. The same
 * functions run in the browser and under Node in tests/test_landing_classifier.py.
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

  var STOP = (
    "a about after all also am an and any are as at be been before being but by can could " +
    "did do does doing don done during each even ever every for from get gets getting got had " +
    "has have having how i if in into is it its just me more most my no not now of on once " +
    "one only or other our out over same should so some still such than that the their them " +
    "then there these they this those through to too under until up use used using very was " +
    "way we were what when where which while who why will with without would you your"
  ).split(" ");

  function stem(token) {
    var rules = [/ies$/, /ing$/, /ed$/, /es$/, /s$/];
    for (var i = 0; i < rules.length; i++) {
      if (token.length > 4 && rules[i].test(token)) {
        return token.replace(rules[i], i === 0 ? "y" : "");
      }
    }
    return token;
  }

  /* Words of a text as the site's search splits them (the index's own separator), lower-cased,
   * stemmed, without stop words. */
  function words(text, separator) {
    return String(text)
      .replace(/<[^>]+>/g, " ")
      .split(separator)
      .map(function (t) { return stem(t.toLowerCase().replace(/[^a-z0-9]/g, "")); })
      .filter(function (t) { return t.length > 1 && STOP.indexOf(t) === -1; });
  }

  /* Pages of the search index that answer `text`, best first: [{location, title, score}].
   * Each page is its own entry (title, description, problem statement); a request word counts
   * once per page, weighted by how rare it is (idf), a word of the title three times, and a
   * request word may be the beginning of a page word ("serializ" finds "serializable"). */
  function rankPages(text, index, limit) {
    var separator = new RegExp(index.config.separator, "g");
    var pages = index.docs
      .filter(function (d) { return d.location.indexOf("#") === -1; })
      .map(function (d) {
        return { location: d.location, title: d.title.replace(/<[^>]+>/g, ""),
                 titleWords: words(d.title, separator),
                 textWords: words(d.text, separator) };
      });
    var query = words(text, separator).filter(function (w, i, all) {
      return all.indexOf(w) === i;
    });
    function has(list, w) {
      for (var i = 0; i < list.length; i++) {
        if (list[i] === w || (w.length > 3 && list[i].indexOf(w) === 0)) { return true; }
      }
      return false;
    }
    var n = pages.length;
    var scored = pages.map(function (page) { return { page: page, score: 0, hits: 0 }; });
    query.forEach(function (w) {
      var matches = scored.filter(function (s) {
        return has(s.page.titleWords, w) || has(s.page.textWords, w);
      });
      if (!matches.length) { return; }
      var idf = Math.log(1 + (n - matches.length + 0.5) / (matches.length + 0.5));
      matches.forEach(function (s) {
        s.score += idf * (has(s.page.titleWords, w) ? 3 : 1);
        s.hits += 1;
      });
    });
    return scored
      .filter(function (s) { return s.score > 0; })
      .sort(function (a, b) { return b.score - a.score || b.hits - a.hits; })
      .slice(0, limit || 5)
      .map(function (s) {
        return { location: s.page.location, title: s.page.title, score: s.score };
      });
  }

  if (typeof module !== "undefined" && module.exports) {
    module.exports = { classify: classify, rankPages: rankPages };
    return;
  }

  var scriptSrc = document.currentScript && document.currentScript.src;
  var tablePromise = null;
  var indexPromise = null;

  function searchIndex() {
    if (!indexPromise) {
      indexPromise = fetch(new URL("../../search/search_index.json", scriptSrc)).then(function (r) {
        return r.json();
      });
    }
    return indexPromise;
  }

  function table() {
    if (!tablePromise) {
      var url = new URL("../data/classifier.json", scriptSrc);
      tablePromise = fetch(url).then(function (r) {
        return r.json();
      });
    }
    return tablePromise;
  }

  function renderPages(box, pages, base) {
    var out = box.querySelector(".dce-pages");
    out.innerHTML = "";
    pages.forEach(function (item) {
      var li = document.createElement("li");
      var a = document.createElement("a");
      a.href = new URL(item.location, base).href;
      a.textContent = item.title;
      li.appendChild(a);
      out.appendChild(li);
    });
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
      var text = input.value;
      Promise.all([table(), searchIndex()]).then(function (loaded) {
        if (input.value !== text) {
          return;
        }
        renderPages(box, text.trim() ? rankPages(text, loaded[1], 5) : [], base);
        render(box, classify(text, loaded[0]), base);
        if (text.trim()) {
          box.dataset.answered = text;
        } else {
          delete box.dataset.answered;
        }
      });
    });
  }

  if (root.document$ && root.document$.subscribe) {
    root.document$.subscribe(init);
  } else {
    document.addEventListener("DOMContentLoaded", init);
  }
})(typeof window !== "undefined" ? window : globalThis);
