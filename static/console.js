// Console behaviour that the CSP keeps out of the pages (loaded on every page by base.html):
// ask before destructive submits, and send a form once, so a double click makes one row, not two.
document.addEventListener("submit", function (event) {
  var form = event.target;
  var post = form && form.getAttribute && (form.getAttribute("method") || "get").toLowerCase() === "post";
  // Already on its way (the second click of a double click): held back without asking a second time.
  if (post && form.getAttribute("data-sent") === "true") {
    event.preventDefault();
    return;
  }
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
  if (!post) {
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

// A form sent after the login ran out comes back filled after logging in again (base.html puts what was typed in
// #console-draft). It is only filled, never sent: the staff member checks it and sends it. The form is the one
// posting where the kept one did whose hidden fields (which action, the version of the record) still agree; a
// record changed meanwhile is not filled over, and the text stays to copy from the note above.
(function () {
  var holder = document.getElementById("console-draft");
  if (!holder) {
    return;
  }
  var draft;
  try {
    draft = JSON.parse(holder.textContent);
  } catch (e) {
    return;
  }
  var values = {};
  draft.fields.forEach(function (pair) {
    (values[pair[0]] = values[pair[0]] || []).push(pair[1]);
  });
  function controls(form, name) {
    var found = form.elements.namedItem(name);
    if (!found) {
      return [];
    }
    return found.tagName ? [found] : Array.prototype.slice.call(found);  // one control, or a RadioNodeList
  }
  var forms = document.querySelectorAll("form");
  // The note's kept values show a menu's choice or a ticked box as the page words them (政策通知, 全部用户), not
  // as the codes the form sent (policy, on).
  function wording(el, value) {
    if (el.tagName === "SELECT") {
      for (var k = 0; k < el.options.length; k++) {
        if (el.options[k].value === value) {
          return el.options[k].text.trim();
        }
      }
    } else if ((el.type === "checkbox" || el.type === "radio") && el.value === value && el.parentNode) {
      return "已勾选：" + el.parentNode.textContent.trim();
    }
    return null;
  }
  Array.prototype.forEach.call(document.querySelectorAll(".draft-value[data-name]"), function (kept) {
    var name = kept.getAttribute("data-name");
    for (var f = 0; f < forms.length; f++) {
      var form = forms[f];
      if (new URL(form.getAttribute("action") || window.location.href, window.location.href).pathname !== draft.action) {
        continue;
      }
      var found = controls(form, name);
      for (var c = 0; c < found.length; c++) {
        var words = wording(found[c], kept.textContent);
        if (words) {
          kept.textContent = words;
          return;
        }
      }
    }
  });
  var target = null;
  for (var i = 0; i < forms.length && !target; i++) {
    var form = forms[i];
    if ((form.getAttribute("method") || "get").toLowerCase() !== "post") {
      continue;
    }
    if (new URL(form.getAttribute("action") || window.location.href, window.location.href).pathname !== draft.action) {
      continue;
    }
    var agrees = true;
    Object.keys(values).forEach(function (name) {
      controls(form, name).forEach(function (el) {
        if (el.type === "hidden" && name !== "csrf_token" && values[name].indexOf(el.value) < 0) {
          agrees = false;
        }
      });
    });
    if (agrees) {
      target = form;
    }
  }
  if (!target) {
    // Nothing filled: the note must not say it was, and the text is shown unfolded, ready to copy.
    var lead = document.getElementById("draft-restored-lead");
    var kept = document.getElementById("draft-restored-values");
    if (lead) {
      lead.textContent = "这条记录在您重新登录前后已有变动（可能同事已经处理过），为免盖掉新的内容，没有把您填写的内容填回表单。" +
        "请先看看下方的最新情况，需要时从这里复制您填写的内容。";
    }
    if (kept) {
      kept.open = true;
    }
    return;
  }
  // Every control of the form: a box left unticked or a list with nothing chosen is not in a sent form at all,
  // and must come back unticked rather than as the page's default.
  var next = {};
  Array.prototype.forEach.call(target.elements, function (el) {
    var type = (el.type || "").toLowerCase();
    var typed = values[el.name] || [];
    if (!el.name || type === "hidden" || type === "file" || type === "password" || type === "submit" ||
        type === "button") {
      return;
    }
    if (type === "checkbox" || type === "radio") {
      el.checked = typed.indexOf(el.value) >= 0;
    } else if (el.tagName === "SELECT" && el.multiple) {
      for (var k = 0; k < el.options.length; k++) {
        el.options[k].selected = typed.indexOf(el.options[k].value) >= 0;
      }
    } else if (typed.length) {
      next[el.name] = next[el.name] || 0;
      if (next[el.name] < typed.length) {
        el.value = typed[next[el.name]++];
      }
    }
  });
  target.scrollIntoView();
})();
