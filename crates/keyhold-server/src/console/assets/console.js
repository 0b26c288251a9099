// keyhold console: progressive enhancements only. Every page works without this script.
// - Key fields (input[data-region]) are checked as you type: whitespace, an alias instead
//   of a key, a key of another region, a malformed ARN or local key id.
// - Buttons with data-copy copy the text of the element they name.
// - An element with data-refresh="N" is refreshed from the server every N seconds.
// - A form with data-autosubmit (the sign-in link's page) is submitted once, at load.
"use strict";

function checkKey(value, region, mode) {
  if (value === "") return ["", ""];
  if (value !== value.trim()) return ["bad", "Remove the spaces or line breaks before or after the key."];
  if (/\s/.test(value)) return ["bad", "A key has no spaces inside it."];
  if (mode === "local") {
    if (/^lk-[0-9a-f]{32}$/.test(value)) return ["ok", "A local key id. Attach it to check it live."];
    return ["bad", "A local key id is lk- followed by 32 hexadecimal characters."];
  }
  const m = /^arn:(aws[a-z-]*):kms:([a-z0-9-]+):(\d{12}):(key|alias)\/(.+)$/.exec(value);
  if (!m) {
    if (value.startsWith("alias/")) return ["bad", "This is an alias name: paste the key's full ARN (arn:aws:kms:" + region + ":ACCOUNT:key/KEY-ID)."];
    return ["bad", "Not a KMS key ARN: it looks like arn:aws:kms:" + region + ":123456789012:key/KEY-ID."];
  }
  if (m[4] === "alias") return ["bad", "This is an alias, which can be pointed at another key at any time: paste the ARN of the key itself (…:key/KEY-ID)."];
  if (m[2] !== region) return ["bad", "This key is in " + m[2] + ", but this field is for " + region + ": create or pick a key in " + region + "."];
  return ["ok", "A key ARN in " + region + ". Attach it to check it live with KMS."];
}

function wireKeyFields() {
  document.querySelectorAll("input[data-region]").forEach(function (input) {
    const msgId = (input.getAttribute("aria-describedby") || "").split(" ").filter(function (id) {
      return id.indexOf("msg") >= 0;
    })[0];
    const msg = msgId ? document.getElementById(msgId) : null;
    const check = function () {
      const r = checkKey(input.value, input.dataset.region, input.dataset.mode);
      if (msg) {
        msg.textContent = r[1];
        msg.className = "msg " + r[0];
      }
      if (r[0] === "bad") input.setAttribute("aria-invalid", "true");
      else input.removeAttribute("aria-invalid");
    };
    input.addEventListener("input", check);
    check();
  });
}

function wireCopy() {
  document.querySelectorAll("button[data-copy]").forEach(function (b) {
    b.addEventListener("click", function () {
      const el = document.getElementById(b.dataset.copy);
      if (!el || !navigator.clipboard) return;
      navigator.clipboard.writeText(el.textContent).then(function () {
        const label = b.textContent;
        b.textContent = "Copied";
        setTimeout(function () { b.textContent = label; }, 1500);
      });
    });
  });
}

function wireRefresh() {
  document.querySelectorAll("[data-refresh]").forEach(function (el) {
    const every = Math.max(2, parseInt(el.dataset.refresh, 10) || 10) * 1000;
    setInterval(function () {
      if (document.activeElement && el.contains(document.activeElement)) return;
      fetch(location.href, { credentials: "same-origin", headers: { Accept: "text/html" } })
        .then(function (r) { return r.ok ? r.text() : null; })
        .then(function (text) {
          if (!text) return;
          const doc = new DOMParser().parseFromString(text, "text/html");
          const fresh = doc.getElementById(el.id);
          if (fresh) el.replaceChildren.apply(el, Array.from(fresh.childNodes));
        })
        .catch(function () {});
    }, every);
  });
}

function autosubmit() {
  const form = document.querySelector("form[data-autosubmit]");
  if (form) form.submit();
}

document.addEventListener("DOMContentLoaded", function () {
  autosubmit();
  wireKeyFields();
  wireCopy();
  wireRefresh();
});
