// Console: live progress of a notice's fan-out (polls the progress JSON; no inline script under the CSP).
(function () {
  "use strict";
  var box = document.getElementById("progress");
  if (!box || box.getAttribute("data-finished") === "true") { return; }
  var url = box.getAttribute("data-url");

  function set(name, value) {
    var el = box.querySelector('[data-field="' + name + '"]');
    if (el) { el.textContent = String(value); }
  }

  function render(p) {
    set("status_label", p.status_label);
    set("inbox", p.inbox);
    set("subscribe_done", p.subscribe_done);
    set("subscribe_total", p.subscribe_total);
    set("percent", p.percent);
    if (p.delivery) {
      Object.keys(p.delivery).forEach(function (k) { set(k, p.delivery[k]); });
    }
    var bar = box.querySelector('[data-field="bar"]');
    if (bar) { bar.value = p.percent; }
    Object.keys(p.subscribe).forEach(function (k) {
      var cell = box.querySelector('[data-count="' + k + '"]');
      if (cell) { cell.textContent = String(p.subscribe[k]); }
    });
    ["failures", "waiting", "skipped_reasons"].forEach(function (name) {
      var body = box.querySelector('[data-field="' + name + '"]');
      if (!body || !p[name]) { return; }
      body.textContent = "";
      p[name].forEach(function (f) {
        var tr = document.createElement("tr");
        [f.errcode, f.detail, f.count].forEach(function (v) {
          var td = document.createElement("td");
          td.textContent = String(v);
          tr.appendChild(td);
        });
        body.appendChild(tr);
      });
    });
    // A stopped notice is over once the chunk in flight at the stop is written down (it counts as reached).
    return p.finished || (p.stopped && !p.subscribe.sending);
  }

  function poll() {
    fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (r) { return r.json(); })
      .then(function (p) {
        if (render(p)) { window.location.reload(); } else { window.setTimeout(poll, 2000); }
      })
      .catch(function () { window.setTimeout(poll, 5000); });
  }

  window.setTimeout(poll, 1000);
})();
