// Material's search box hands the query to lunr, where a word starting with "-" means "must not
// contain" and "--pool=gevent" is a parse error: no result at all. Users paste command lines
// ("celery worker -P gevent --concurrency 100"): their dashes belong to a flag, so they are
// dropped before the query reaches Material's search worker (message type 2: a query).
// Measured with the request list by tests/site/test_search.py.
(() => {
  const post = Worker.prototype.postMessage;
  Worker.prototype.postMessage = function (message, ...rest) {
    if (message && message.type === 2 && typeof message.data === "string") {
      message = { ...message, data: message.data.replace(/(^|\s)-+(?=\S)/g, "$1") };
    }
    return post.call(this, message, ...rest);
  };
})();
