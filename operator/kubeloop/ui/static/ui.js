// Kubeloop UI: live updates and the drift section. No framework, no build step.
// The server sends "change" events (Server-Sent Events fed by its Kubernetes watches);
// the page then fetches itself again and swaps <main>, keeping focus and scroll.
(function () {
  "use strict";
  var live = document.getElementById("live");
  var pending = null;

  function loadDrift(root) {
    var box = (root || document).querySelector("#drift[data-src]");
    if (!box) return;
    fetch(box.getAttribute("data-src"), { headers: { Accept: "text/html" } })
      .then(function (r) { return r.text(); })
      .then(function (html) { box.innerHTML = html; box.setAttribute("data-loaded", "1"); })
      .catch(function () { box.textContent = "The serving pods could not be asked."; });
  }

  function refresh() {
    pending = null;
    var focused = document.activeElement && document.activeElement.id;
    var drift = document.getElementById("drift");
    var keep = drift && drift.getAttribute("data-loaded") ? drift.innerHTML : null;
    fetch(location.href, { headers: { Accept: "text/html" } })
      .then(function (r) { return r.text(); })
      .then(function (html) {
        var doc = new DOMParser().parseFromString(html, "text/html");
        var next = doc.getElementById("main");
        var main = document.getElementById("main");
        if (!next || !main) return;
        var scroller = main.querySelector(".scroll");
        var top = scroller ? scroller.scrollTop : 0;
        main.innerHTML = next.innerHTML;
        var d2 = document.getElementById("drift");
        if (d2 && keep !== null) { d2.innerHTML = keep; d2.setAttribute("data-loaded", "1"); }
        var s2 = main.querySelector(".scroll");
        if (s2) s2.scrollTop = top;
        if (focused) { var f = document.getElementById(focused); if (f) f.focus(); }
        document.body.setAttribute("data-updated", String(Date.now()));
        if (live) live.textContent = "Updated " + new Date().toLocaleTimeString();
      });
  }

  if (window.EventSource) {
    var es = new EventSource("/events");
    es.addEventListener("change", function () {
      if (!pending) pending = setTimeout(refresh, 150);
    });
    es.addEventListener("open", function () { document.body.setAttribute("data-live", "1"); });
  }
  loadDrift();
  setInterval(function () {
    var d = document.getElementById("drift");
    if (d) { d.removeAttribute("data-loaded"); loadDrift(); }
  }, 30000);
})();
