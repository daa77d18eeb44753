// roomkey dashboard: live updates over server-sent events. No libraries.
(function () {
  "use strict";
  var main = document.getElementById("main");
  var status = document.getElementById("live-status");
  if (!main || !window.EventSource || !status) { return; }
  var pending = false;
  var busy = false;

  function refresh() {
    if (main.getAttribute("data-live") !== "1") { return; }
    if (busy) { pending = true; return; }
    busy = true;
    // Keep open <details> open across refreshes.
    var open = Array.prototype.map.call(main.querySelectorAll("details[open]"), function (d) {
      return d.querySelector("summary") ? d.querySelector("summary").textContent : "";
    });
    fetch(window.location.href, { headers: { "X-Partial": "1" }, credentials: "same-origin" })
      .then(function (r) { return r.ok ? r.text() : Promise.reject(r.status); })
      .then(function (html) {
        main.innerHTML = html;
        Array.prototype.forEach.call(main.querySelectorAll("details"), function (d) {
          var s = d.querySelector("summary");
          if (s && open.indexOf(s.textContent) >= 0) { d.open = true; }
        });
        document.dispatchEvent(new CustomEvent("roomkey:refreshed"));
      })
      .catch(function () {})
      .then(function () {
        busy = false;
        if (pending) { pending = false; refresh(); }
      });
  }

  var source = new EventSource("/live");
  source.addEventListener("open", function () { status.classList.add("on"); });
  source.addEventListener("error", function () { status.classList.remove("on"); });
  source.addEventListener("change", refresh);
})();
