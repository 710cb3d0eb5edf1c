// learndock web UI: copy buttons, confirmations, live verification progress.
// A static file (the Content-Security-Policy allows no inline script).
"use strict";
(function () {
  function onReady(fn) {
    if (document.readyState !== "loading") fn(); else document.addEventListener("DOMContentLoaded", fn);
  }

  function setupCopy() {
    document.querySelectorAll("button[data-copy]").forEach(function (btn) {
      btn.addEventListener("click", function () {
        var text = btn.getAttribute("data-copy");
        var done = function () { btn.textContent = "Copied"; setTimeout(function () { btn.textContent = "Copy"; }, 1500); };
        if (navigator.clipboard && window.isSecureContext) {
          navigator.clipboard.writeText(text).then(done, function () { btn.textContent = "Select and copy"; });
        } else {
          var area = document.createElement("textarea");
          area.value = text; document.body.appendChild(area); area.select();
          try { document.execCommand("copy"); done(); } catch (e) { btn.textContent = "Select and copy"; }
          document.body.removeChild(area);
        }
      });
    });
  }

  function setupConfirm() {
    document.querySelectorAll("form[data-confirm]").forEach(function (form) {
      form.addEventListener("submit", function (ev) {
        if (!window.confirm(form.getAttribute("data-confirm"))) ev.preventDefault();
      });
    });
  }

  // Renders text with textContent only: check messages are untrusted.
  function renderChecks(report) {
    var box = document.createElement("div");
    var checks = (report && report.checks) || [];
    if (!checks.length) {
      var p = document.createElement("p"); p.className = "muted"; p.textContent = "No checks recorded yet.";
      box.appendChild(p); return box;
    }
    var ol = document.createElement("ol"); ol.className = "checks";
    checks.forEach(function (c) {
      var li = document.createElement("li"); li.className = c.ok ? "ok" : "bad";
      var strong = document.createElement("strong");
      strong.textContent = (c.ok ? "✔ " : "✘ ") + c.name; li.appendChild(strong);
      if (c.message) { var pre = document.createElement("pre"); pre.textContent = c.message; li.appendChild(pre); }
      ol.appendChild(li);
    });
    box.appendChild(ol); return box;
  }

  function setupProgress() {
    var root = document.getElementById("progress");
    if (!root) return;
    var url = root.getAttribute("data-status-url");
    var number = parseInt(root.getAttribute("data-version"), 10);
    var stateEl = document.getElementById("state");
    var logEl = document.getElementById("log");
    var steps = { queued: root.querySelector('[data-step="queued"]'), verifying: root.querySelector('[data-step="verifying"]'), end: root.querySelector('[data-step="end"]') };
    var last = null;
    function show(v) {
      var s = v.state;
      steps.queued.className = s === "queued" ? "now" : "done";
      steps.verifying.className = s === "queued" ? "" : (s === "verifying" ? "now" : "done");
      var final = s === "published" || s === "rejected" || s === "failed";
      steps.end.className = final ? "now " + s : "";
      steps.end.textContent = final ? s : "published / rejected";
      if (s !== last) {
        var span = document.createElement("span"); span.className = "state state-" + s; span.textContent = s;
        stateEl.replaceChildren(span);
        logEl.replaceChildren(renderChecks(v.report));
        last = s;
      }
      return final;
    }
    function poll() {
      fetch(url, { credentials: "same-origin", headers: { "Accept": "application/json" } })
        .then(function (r) { return r.ok ? r.json() : null; })
        .then(function (st) {
          var v = st && st.versions.filter(function (x) { return x.number === number; })[0];
          if (!v || !show(v)) setTimeout(poll, 700);
        }, function () { setTimeout(poll, 2000); });
    }
    poll();
  }

  onReady(function () { setupCopy(); setupConfirm(); setupProgress(); });
})();
