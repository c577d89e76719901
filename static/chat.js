// Chat simulator: keep the newest message in view and the cursor in the text box.
(function () {
  var log = document.getElementById("chat-log");
  if (log) { log.scrollTop = log.scrollHeight; }
  var box = document.getElementById("chat-text");
  if (box) { box.focus(); }
})();
