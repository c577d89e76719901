// Console behaviour that the CSP keeps out of the pages (loaded on every page by base.html):
// ask before destructive submits, and send a form once, so a double click makes one row, not two.
document.addEventListener("submit", function (event) {
  var form = event.target;
  var message = form && form.getAttribute && form.getAttribute("data-confirm");
  if (message && !window.confirm(message)) {
    event.preventDefault();
    return;
  }
  if ((form.getAttribute("method") || "get").toLowerCase() !== "post") {
    return;
  }
  if (form.getAttribute("data-sent") === "true") {
    event.preventDefault();
    return;
  }
  form.setAttribute("data-sent", "true");
});

// Back to a page kept in the browser's cache: its forms may be sent again.
window.addEventListener("pageshow", function () {
  var sent = document.querySelectorAll("form[data-sent]");
  for (var i = 0; i < sent.length; i++) {
    sent[i].removeAttribute("data-sent");
  }
});
