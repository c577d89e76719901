// Console behaviour that the CSP keeps out of the pages (loaded on every page by base.html):
// ask before destructive submits, and send a form once, so a double click makes one row, not two.
document.addEventListener("submit", function (event) {
  var form = event.target;
  var message = form && form.getAttribute && form.getAttribute("data-confirm");
  // data-confirm-when="name=value": ask (data-confirm-when-message) only when the form's field has that value,
  // e.g. an editor whose status select is set to cancelled.
  var when = form && form.getAttribute && form.getAttribute("data-confirm-when");
  if (!message && when) {
    var eq = when.indexOf("=");
    var field = form.elements[when.slice(0, eq)];
    if (field && field.value === when.slice(eq + 1)) {
      message = form.getAttribute("data-confirm-when-message");
    }
  }
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
