// The only script of the portal: a countdown to the code's expiry.
(function () {
  var el = document.getElementById("countdown");
  if (!el) { return; }
  var end = parseInt(el.getAttribute("data-expires"), 10) * 1000;
  function tick() {
    var left = Math.max(0, Math.round((end - Date.now()) / 1000));
    el.textContent = left > 0 ? Math.floor(left / 60) + ":" + ("0" + (left % 60)).slice(-2) : "expired";
    if (left > 0) { setTimeout(tick, 1000); }
  }
  tick();
}());
