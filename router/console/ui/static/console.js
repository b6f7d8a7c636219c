/* The router console's only script (the Content-Security-Policy allows no inline one).
 *
 * - CSRF: every request htmx sends carries `x-csrf-token`, the session's token, read
 *   from <meta name="csrf-token"> or, when the page has none, from GET /api/session; an
 *   unsafe request waits for it.
 * - Buttons and forms with data-result call the admin API (JSON) and show its answer in
 *   the element data-result names, as text (never as HTML).
 * - The login form posts {"key"} or {"password"} to /api/login.
 * - The Keys page's forms go to /api/keys as JSON (the key-json extension); a new key is
 *   shown once, from the answer, and never kept anywhere by the page.
 * - The logs page's live area follows GET /api/events (Server-Sent Events).
 */
(function () {
  "use strict";

  var LOGIN = "/ui/login";
  var SAFE = { GET: true, HEAD: true, OPTIONS: true };
  var csrf = "";
  var csrfPromise = null;

  function meta(name) {
    var element = document.querySelector('meta[name="' + name + '"]');
    return element ? element.getAttribute("content") || "" : "";
  }

  function loginUrl() {
    var here = window.location.pathname + window.location.search;
    return LOGIN + "?next=" + encodeURIComponent(here.indexOf("/ui/") === 0 ? here : "/ui/");
  }

  function loadCsrf() {
    if (csrf) return Promise.resolve(csrf);
    if (!csrfPromise) {
      csrfPromise = fetch("/api/session", { credentials: "same-origin", cache: "no-store" })
        .then(function (response) {
          if (response.status === 401) {
            window.location.assign(loginUrl());
            return "";
          }
          return response.ok ? response.json() : {};
        })
        .then(function (body) {
          csrf = (body && body.csrf) || "";
          return csrf;
        })
        .catch(function () {
          csrfPromise = null;
          return "";
        });
    }
    return csrfPromise;
  }

  csrf = meta("csrf-token");
  var onLogin = window.location.pathname === LOGIN;

  // ---- rendering an API answer as text

  function element(tag, className, text) {
    var node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function parse(text) {
    try {
      return JSON.parse(text);
    } catch (e) {
      return null;
    }
  }

  function errorLines(status, body) {
    var message = body && body.error ? body.error.message || body.error : null;
    var diagnostics = body && Array.isArray(body.diagnostics) ? body.diagnostics : [];
    if (typeof message === "string" && diagnostics.length) {
      message = message.replace(": " + diagnostics[0], ""); // listed below
    }
    var lines = ["HTTP " + status + (message ? ": " + message : "")];
    if (status === 404 && !message) lines[0] += ": not available on this server";
    diagnostics.forEach(function (line) {
      if (line !== message) lines.push(line);
    });
    return lines;
  }

  function healthLines(body) {
    var lines = [];
    Object.keys(body.providers || {}).forEach(function (pool) {
      (body.providers[pool].instances || []).forEach(function (r) {
        var text = pool + "/" + r.id + ": ";
        if (r.skipped) text += "skipped (" + r.skipped + ")";
        else if (r.ok) text += "ok, " + r.model + ", HTTP " + r.status + ", " + r.latency_ms + " ms";
        else text += "failed" + (r.status ? ", HTTP " + r.status : "") + ": " + (r.error || "");
        lines.push(text);
      });
      if (!(body.providers[pool].instances || []).length) lines.push(pool + ": no instances");
    });
    return lines;
  }

  function successLines(kind, body) {
    if (kind === "health-check" && body) return healthLines(body);
    if (kind === "reset" && body) return ["health reset: " + (body.reset || []).join(", ")];
    if (kind === "key" && body && body.name) {
      return [body.name + ": " + body.state];
    }
    if (kind === "config" && body) {
      var lines = ["saved " + (body.written || []).join(", ")];
      if (body.reloaded) lines[0] += "; reloaded, generation " + body.generation;
      else if (body.error) lines = lines.concat(["reload failed:"], body.error);
      return lines;
    }
    return ["done" + (body ? ": " + JSON.stringify(body) : "")];
  }

  function showResult(target, label, ok, lines) {
    if (!target) return;
    target.textContent = "";
    target.classList.remove("ok", "bad");
    target.classList.add(ok ? "ok" : "bad");
    var head = element("p", "result-head", (label ? label + ": " : "") + (ok ? "ok" : "failed"));
    target.appendChild(head);
    var list = element("ul", ok ? "result-lines" : "diagnostics");
    lines.forEach(function (line) {
      list.appendChild(element("li", "", line));
    });
    target.appendChild(list);
  }

  function showNewKey(target, body) {
    target.textContent = "";
    target.classList.remove("bad");
    target.classList.add("ok");
    target.appendChild(element("p", "result-head", "New key " + body.name + ":"));
    target.appendChild(element("code", "new-key", body.key));
    target.appendChild(
      element("p", "notice", "Copy it now: only its hash is stored, so it cannot be shown again.")
    );
  }

  // a key form's fields as the JSON body of POST or PATCH /api/keys: everything on
  // create; on edit (data-edit) only what was changed, a cleared limit as null (removed)
  function keyDocument(form) {
    var editing = form.hasAttribute("data-edit");
    var body = {};
    function changed(input) {
      return !editing || input.value !== input.defaultValue;
    }
    function list(text) {
      var items = text.split(/[\s,]+/).filter(Boolean);
      return items.length ? items : null;
    }
    var name = form.elements.namedItem("name");
    if (name && !editing) body.name = name.value.trim();
    var models = form.elements.namedItem("models");
    if (models && changed(models)) body.models = list(models.value);
    var boxes = Array.prototype.slice.call(form.querySelectorAll('input[name="providers"]'));
    var ticked = boxes.some(function (box) {
      return box.checked !== box.defaultChecked;
    });
    if (boxes.length && (!editing || ticked)) {
      var pools = boxes
        .filter(function (box) {
          return box.checked;
        })
        .map(function (box) {
          return box.value;
        });
      body.providers = pools.length ? pools : null;
    }
    var limits = {};
    form.querySelectorAll("input[data-limit]").forEach(function (input) {
      if (!changed(input)) return;
      var text = input.value.trim();
      var number = Number(text);
      if (text) limits[input.getAttribute("data-limit")] = isFinite(number) ? number : text;
      else if (editing) limits[input.getAttribute("data-limit")] = null;
    });
    if (Object.keys(limits).length) body.limits = limits;
    var expires = form.elements.namedItem("expires");
    if (expires && changed(expires)) body.expires = expires.value || null;
    return body;
  }

  // ---- htmx

  if (window.htmx) {
    // the config editor's form as the JSON body POST /api/config takes
    htmx.defineExtension("config-json", {
      onEvent: function (name, evt) {
        if (name === "htmx:configRequest") {
          evt.detail.headers["Content-Type"] = "application/json";
        }
      },
      encodeParameters: function (xhr, parameters) {
        xhr.overrideMimeType("text/json");
        var files = {};
        files[parameters.get("file")] = parameters.get("text");
        return JSON.stringify({ files: files });
      },
    });

    htmx.defineExtension("key-json", {
      onEvent: function (name, evt) {
        if (name === "htmx:configRequest") {
          evt.detail.headers["Content-Type"] = "application/json";
        }
      },
      encodeParameters: function (xhr, parameters, form) {
        xhr.overrideMimeType("text/json");
        return JSON.stringify(keyDocument(form));
      },
    });

    document.addEventListener("htmx:confirm", function (evt) {
      var verb = (evt.detail.verb || "get").toUpperCase();
      if (csrf || SAFE[verb]) return;
      evt.preventDefault(); // send once the token is known
      loadCsrf().then(function () {
        // issueRequest(true) skips htmx's own hx-confirm question: ask it here
        if (evt.detail.question && !window.confirm(evt.detail.question)) return;
        evt.detail.issueRequest(true);
      });
    });

    document.addEventListener("htmx:configRequest", function (evt) {
      if (csrf) evt.detail.headers["x-csrf-token"] = csrf;
    });

    // answers of the admin API: shown as text where data-result says, never swapped in
    document.addEventListener("htmx:beforeSwap", function (evt) {
      var source = evt.detail.requestConfig ? evt.detail.requestConfig.elt : evt.detail.elt;
      var status = evt.detail.xhr.status;
      if (status === 401 && !evt.detail.xhr.getResponseHeader("hx-redirect")) {
        evt.detail.shouldSwap = false;
        evt.detail.isError = false;
        window.location.assign(loginUrl());
        return;
      }
      if (source && source.hasAttribute("data-signout")) {
        evt.detail.shouldSwap = false;
        evt.detail.isError = false;
        window.location.assign(LOGIN);
        return;
      }
      if (!source || !source.hasAttribute("data-result")) return;
      evt.detail.shouldSwap = false;
      evt.detail.isError = false; // shown below, not an error of the page
      var body = parse(evt.detail.xhr.responseText);
      var ok = status >= 200 && status < 300;
      var kind = source.getAttribute("data-kind");
      var lines = ok ? successLines(kind, body) : errorLines(status, body);
      if (ok && kind === "health-check" && body && body.ok === false) ok = false;
      var target = document.querySelector(source.getAttribute("data-result"));
      if (ok && kind === "key-create" && body && body.key) {
        showNewKey(target, body);
        if (source.reset) source.reset();
      } else {
        showResult(target, source.getAttribute("data-label"), ok, lines);
      }
      var refresh = source.getAttribute("data-refresh");
      if (refresh && document.querySelector(refresh)) htmx.trigger(refresh, "refresh");
    });

    // a request that never got an answer (server down, network)
    document.addEventListener("htmx:sendError", function (evt) {
      var source = evt.detail.requestConfig ? evt.detail.requestConfig.elt : evt.detail.elt;
      if (source && source.hasAttribute("data-result")) {
        var target = document.querySelector(source.getAttribute("data-result"));
        showResult(target, source.getAttribute("data-label"), false, ["no answer from the server"]);
      }
    });
  }

  // ---- login

  function setupLogin() {
    var form = document.getElementById("login-form");
    if (!form) return;
    var result = document.getElementById("login-result");
    form.addEventListener("submit", function (evt) {
      evt.preventDefault();
      var kind = form.querySelector('input[name="kind"]:checked');
      var body = {};
      body[kind ? kind.value : "key"] = form.elements.secret.value;
      result.textContent = "signing in…";
      fetch("/api/login", {
        method: "POST",
        credentials: "same-origin",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify(body),
      })
        .then(function (response) {
          if (response.ok) {
            return response.json().then(function (answer) {
              csrf = (answer && answer.csrf) || "";
              var next = form.getAttribute("data-next") || "/ui/";
              window.location.assign(next.indexOf("/ui/") === 0 ? next : "/ui/");
            });
          }
          var text;
          if (response.status === 429) {
            var wait = response.headers.get("retry-after");
            text = "Too many failed attempts: try again" + (wait ? " in " + wait + " s" : " later") + ".";
          } else if (response.status === 401) {
            text = "Wrong admin key or password.";
          } else if (response.status === 404) {
            text = "Signing in is not available on this server.";
          } else {
            text = "Sign-in failed (HTTP " + response.status + ").";
          }
          result.textContent = text;
          form.elements.secret.select();
        })
        .catch(function () {
          result.textContent = "No answer from the server.";
        });
    });
  }

  // ---- live events (logs page)

  function describe(kind, data) {
    if (!data || typeof data !== "object") return kind;
    if (kind === "request") {
      var parts = [data.status, data.model, data.pool && data.pool + (data.instance ? "/" + data.instance : "")];
      if (typeof data.duration_ms === "number") parts.push(Math.round(data.duration_ms) + " ms");
      return parts.filter(Boolean).join(" · ");
    }
    return JSON.stringify(data);
  }

  function setupLive() {
    var live = document.getElementById("live");
    if (!live) return;
    var status = document.getElementById("live-status");
    var list = document.getElementById("live-list");
    var url = live.getAttribute("data-events");
    if (!url || !window.EventSource) {
      status.textContent = "live events unavailable";
      return;
    }
    var source = new EventSource(url);
    function add(kind, raw) {
      var data = parse(raw);
      var item = element("li", "event event-" + kind);
      item.appendChild(element("time", "", new Date().toISOString().slice(11, 19)));
      item.appendChild(element("span", "event-kind", kind));
      item.appendChild(element("span", "event-text", describe(kind, data)));
      list.insertBefore(item, list.firstChild);
      while (list.children.length > 50) list.removeChild(list.lastChild);
    }
    source.onopen = function () {
      status.textContent = "live";
    };
    ["request", "health", "reload", "override", "config", "key"].forEach(function (kind) {
      source.addEventListener(kind, function (evt) {
        add(kind, evt.data);
      });
    });
    source.onmessage = function (evt) {
      add("message", evt.data);
    };
    source.onerror = function () {
      if (source.readyState === EventSource.CLOSED) {
        status.textContent = "live events unavailable";
      } else {
        status.textContent = "reconnecting…";
      }
    };
    window.addEventListener("pagehide", function () {
      source.close();
    });
  }

  // ---- Google sign-in (providers page): start it, open Google's page, follow it

  function setupOAuth() {
    var target = document.getElementById("oauth-status");
    if (!target) return;
    var polling = null;

    function show(label, state, lines, link) {
      target.textContent = "";
      target.classList.remove("ok", "bad");
      if (state === "done") target.classList.add("ok");
      if (state === "failed") target.classList.add("bad");
      var head = element("p", "result-head", label + ": ");
      head.appendChild(element("span", "oauth-state", state));
      target.appendChild(head);
      var list = element("ul", state === "failed" ? "diagnostics" : "result-lines");
      (lines || []).forEach(function (line) {
        list.appendChild(element("li", "", line));
      });
      if (link) {
        var item = element("li", "", "no window opened? ");
        var anchor = element("a", "", "open Google's sign-in page");
        anchor.href = link;
        anchor.target = "_blank";
        anchor.rel = "noopener noreferrer";
        item.appendChild(anchor);
        list.appendChild(item);
      }
      if (list.children.length) target.appendChild(list);
    }

    function refreshProviders() {
      if (!window.htmx || !document.querySelector("#providers")) return;
      htmx.trigger("#providers", "refresh");
    }

    function stop() {
      if (polling) clearInterval(polling);
      polling = null;
    }

    function follow(label, state, link) {
      stop();
      var asking = false;
      polling = setInterval(function () {
        if (asking) return;
        asking = true;
        fetch("/api/oauth/" + encodeURIComponent(state), {
          credentials: "same-origin",
          cache: "no-store",
        })
          .then(function (response) {
            return response.text().then(function (text) {
              var body = parse(text) || {};
              if (!response.ok) {
                stop();
                show(label, "failed", errorLines(response.status, body));
                return;
              }
              if (body.status === "done") {
                stop();
                show(label, "done", ["credentials saved; the instance is configured"]);
                refreshProviders(); // again once every worker has reloaded
                setTimeout(refreshProviders, 1000);
                setTimeout(refreshProviders, 3000);
              } else if (body.status === "failed") {
                stop();
                show(label, "failed", [body.error || "the sign-in failed"]);
              } else {
                show(label, "pending", ["waiting for Google's sign-in to finish"], link);
              }
            });
          })
          .catch(function () {
            show(label, "pending", ["no answer from the server; retrying"], link);
          })
          .then(function () {
            asking = false;
          });
      }, 1000);
    }

    document.addEventListener("click", function (evt) {
      var button = evt.target && evt.target.closest ? evt.target.closest("button.oauth-sign-in") : null;
      if (!button) return;
      evt.preventDefault();
      var label = button.getAttribute("data-label") || "sign-in";
      // opened now, while the click counts as the user's: a popup blocker allows it
      var popup = window.open("about:blank", "_blank");
      stop();
      show(label, "starting", []);
      loadCsrf()
        .then(function (token) {
          var headers = { "Content-Type": "application/json" };
          if (token) headers["x-csrf-token"] = token;
          var body = {};
          if (button.getAttribute("data-instance")) body.instance = button.getAttribute("data-instance");
          return fetch(button.getAttribute("data-oauth-url"), {
            method: "POST",
            credentials: "same-origin",
            headers: headers,
            body: JSON.stringify(body),
          });
        })
        .then(function (response) {
          return response.text().then(function (text) {
            var body = parse(text);
            if (!response.ok || !body || !body.auth_url) {
              if (popup) popup.close();
              show(label, "failed", errorLines(response.status, body));
              return;
            }
            if (popup && !popup.closed) popup.location.href = body.auth_url;
            show(label, "pending", ["waiting for Google's sign-in to finish"], body.auth_url);
            follow(label, body.state, body.auth_url);
          });
        })
        .catch(function () {
          if (popup) popup.close();
          show(label, "failed", ["no answer from the server"]);
        });
    });
  }

  function start() {
    setupLogin();
    setupLive();
    setupOAuth();
    if (!onLogin && !csrf) loadCsrf();
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
