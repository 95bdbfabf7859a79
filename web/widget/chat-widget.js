/*
 * Chat widget for a Docusaurus book: a floating button and a panel that asks the book's chat
 * service, with streamed answers, cited sources, "ask about this selection", feedback and a
 * conversation kept across reloads. No dependencies.
 *
 *   <script src="https://api.example/assets/chat-widget.js" defer
 *           data-api-url="https://api.example" data-title="Ask the book"></script>
 *
 * data-api-url   the service's base URL (default: where this script was loaded from)
 * data-title     the panel's title (default "Ask the book")
 * data-transport "ws", "sse" or "json" to use only that one (default: WebSocket, else
 *                server-sent events, else JSON)
 *
 * Answers are untrusted text: they are shown with textContent and DOM nodes only, never as
 * HTML, through a small renderer for paragraphs, lists, **bold**, `code` and [n] citations.
 */
(function () {
  "use strict";

  var script = document.currentScript;
  if (!script || window.__chatWidgetLoaded) return;
  window.__chatWidgetLoaded = true;

  var scriptUrl = new URL(script.src, document.baseURI);
  var apiAttr = script.getAttribute("data-api-url");
  // Without data-api-url, the service is where the script came from (…/assets/x.js).
  var apiBase = new URL(apiAttr || scriptUrl.href.replace(/\/assets\/[^/]*$/, "/"), document.baseURI);
  if (!/\/$/.test(apiBase.pathname)) apiBase.pathname += "/";
  var title = script.getAttribute("data-title") || "Ask the book";
  var forced = (script.getAttribute("data-transport") || "").toLowerCase();
  if (["ws", "sse", "json"].indexOf(forced) < 0) forced = "";
  var storageKey = "chat-widget:session:" + apiBase.href;
  var crossOrigin = apiBase.origin !== window.location.origin;
  var MAX_SELECTION = 8000;

  function api(path) {
    return new URL(path, apiBase).href;
  }

  // ---- storage ------------------------------------------------------------------------

  function loadSessionId() {
    try { return window.localStorage.getItem(storageKey); } catch (e) { return null; }
  }
  function saveSessionId(id) {
    try {
      if (id) window.localStorage.setItem(storageKey, id);
      else window.localStorage.removeItem(storageKey);
    } catch (e) { /* storage disabled: the conversation lasts as long as the page */ }
  }

  // ---- DOM helpers --------------------------------------------------------------------

  var uid = 0;
  function el(tag, attrs, children) {
    var node = document.createElement(tag);
    if (attrs) {
      Object.keys(attrs).forEach(function (key) {
        var value = attrs[key];
        if (value === null || value === undefined || value === false) return;
        if (key === "text") node.textContent = value;
        else if (key === "className") node.className = value;
        else node.setAttribute(key, value === true ? "" : String(value));
      });
    }
    (children || []).forEach(function (child) {
      if (child) node.appendChild(typeof child === "string" ? document.createTextNode(child) : child);
    });
    return node;
  }
  var SVG = "http://www.w3.org/2000/svg";
  var ICONS = {
    chat: "M20 2H4c-1.1 0-2 .9-2 2v18l4-4h14c1.1 0 2-.9 2-2V4c0-1.1-.9-2-2-2zm0 14H5.17L4 17.17V4h16v12zM7 9h10v2H7zm0-3h10v2H7zm0 6h7v2H7z",
    up: "M1 21h4V9H1v12zm22-11c0-1.1-.9-2-2-2h-6.31l.95-4.57.03-.32c0-.41-.17-.79-.44-1.06L14.17 1 7.59 7.59C7.22 7.95 7 8.45 7 9v10c0 1.1.9 2 2 2h9c.83 0 1.54-.5 1.84-1.22l3.02-7.05c.09-.23.14-.47.14-.73v-2z",
    down: "M15 3H6c-.83 0-1.54.5-1.84 1.22l-3.02 7.05c-.09.23-.14.47-.14.73v2c0 1.1.9 2 2 2h6.31l-.95 4.57-.03.32c0 .41.17.79.44 1.06L9.83 23l6.59-6.59c.36-.36.58-.86.58-1.41V5c0-1.1-.9-2-2-2zm4 0v12h4V3h-4z"
  };
  /** An icon drawn inline (no font or image to load); decorative, the button has the label. */
  function icon(name) {
    var svg = document.createElementNS(SVG, "svg");
    svg.setAttribute("viewBox", "0 0 24 24");
    svg.setAttribute("aria-hidden", "true");
    svg.setAttribute("focusable", "false");
    svg.setAttribute("class", "chat-widget__icon");
    var shape = document.createElementNS(SVG, "path");
    shape.setAttribute("d", ICONS[name]);
    shape.setAttribute("fill", "currentColor");
    svg.appendChild(shape);
    return svg;
  }
  function nextId(prefix) {
    uid += 1;
    return "chat-widget-" + prefix + "-" + uid;
  }

  /** A link target from an answer: http(s) only, so a source can never run script. */
  function safeHref(url) {
    try {
      var parsed = new URL(url, document.baseURI);
      return parsed.protocol === "http:" || parsed.protocol === "https:" ? parsed.href : null;
    } catch (e) {
      return null;
    }
  }

  // ---- the small markdown renderer ------------------------------------------------------

  /** Inline spans: **bold**, `code`, [n] citations linked to their source; the rest is text. */
  function renderInline(parent, text, sources) {
    var pattern = /(\*\*([^*]+)\*\*|`([^`]+)`|\[(\d{1,3})\])/g;
    var last = 0;
    var match;
    while ((match = pattern.exec(text)) !== null) {
      if (match.index > last) parent.appendChild(document.createTextNode(text.slice(last, match.index)));
      if (match[2] !== undefined) {
        parent.appendChild(el("strong", { text: match[2] }));
      } else if (match[3] !== undefined) {
        parent.appendChild(el("code", { text: match[3] }));
      } else {
        var n = Number(match[4]);
        var source = sourceByNumber(sources, n);
        var href = source && safeHref(source.url);
        if (href) {
          parent.appendChild(el("a", {
            className: "chat-widget__cite",
            href: href,
            title: source.title + (source.heading ? " › " + source.heading : ""),
            "aria-label": "Source " + n + ": " + source.title + (source.heading ? ", " + source.heading : ""),
            text: "[" + n + "]"
          }));
        } else {
          parent.appendChild(document.createTextNode(match[0]));
        }
      }
      last = pattern.lastIndex;
    }
    if (last < text.length) parent.appendChild(document.createTextNode(text.slice(last)));
  }

  function sourceByNumber(sources, n) {
    for (var i = 0; i < (sources || []).length; i += 1) {
      if (Number(sources[i].n) === n) return sources[i];
    }
    return null;
  }

  /** Blocks: blank-line separated paragraphs, "- "/"* " and "1. " lists. */
  function renderMarkdown(container, text, sources) {
    var fragment = document.createDocumentFragment();
    var blocks = String(text).replace(/\r\n?/g, "\n").split(/\n{2,}/);
    blocks.forEach(function (block) {
      var lines = block.split("\n").filter(function (line) { return line.trim() !== ""; });
      if (!lines.length) return;
      var bullet = /^\s*[-*]\s+/;
      var numbered = /^\s*\d{1,3}[.)]\s+/;
      var isList = function (re) { return lines.every(function (line) { return re.test(line); }); };
      if (isList(bullet) || isList(numbered)) {
        var ordered = !isList(bullet);
        var list = el(ordered ? "ol" : "ul");
        lines.forEach(function (line) {
          var item = el("li");
          renderInline(item, line.replace(ordered ? numbered : bullet, ""), sources);
          list.appendChild(item);
        });
        fragment.appendChild(list);
      } else {
        var p = el("p");
        renderInline(p, lines.join("\n"), sources);
        fragment.appendChild(p);
      }
    });
    container.textContent = "";
    container.appendChild(fragment);
  }

  // ---- the widget's DOM -----------------------------------------------------------------

  var titleId = nextId("title");
  var inputId = nextId("input");
  var panelId = nextId("panel");
  var root = el("div", { className: "chat-widget" });

  var launcher = el("button", {
    type: "button",
    className: "chat-widget__launcher",
    "aria-label": "Open chat: " + title,
    "aria-expanded": "false",
    "aria-controls": panelId,
    "aria-haspopup": "dialog"
  }, [icon("chat")]);

  var newChatButton = el("button", { type: "button", className: "chat-widget__header-button", text: "New chat", "aria-label": "Start a new chat" });
  var closeButton = el("button", { type: "button", className: "chat-widget__header-button chat-widget__close", "aria-label": "Close chat", text: "×" });
  var log = el("div", { className: "chat-widget__log", role: "log", "aria-live": "polite", "aria-relevant": "additions text", "aria-label": "Conversation", tabindex: "0" });
  var empty = el("p", { className: "chat-widget__empty", text: "Ask a question about the book. Select text on the page to ask about that passage." });
  log.appendChild(empty);
  var status = el("div", { className: "chat-widget__status", role: "status", "aria-live": "polite" });
  var selectionText = el("span", { className: "chat-widget__selection-text" });
  var selectionClear = el("button", { type: "button", className: "chat-widget__selection-clear", "aria-label": "Do not ask about the selection", text: "×" });
  var selectionBox = el("div", { className: "chat-widget__selection", hidden: true }, [
    el("span", { className: "chat-widget__selection-label", text: "About the selection: " }),
    selectionText,
    selectionClear
  ]);
  var input = el("textarea", { id: inputId, className: "chat-widget__input", rows: "2", maxlength: "4000", placeholder: "Ask a question…" });
  var sendButton = el("button", { type: "submit", className: "chat-widget__send", text: "Send" });
  var form = el("form", { className: "chat-widget__form" }, [
    el("label", { for: inputId, className: "chat-widget__visually-hidden", text: "Your question" }),
    input,
    sendButton
  ]);
  var panel = el("div", {
    id: panelId,
    className: "chat-widget__panel",
    role: "dialog",
    "aria-modal": "true",
    "aria-labelledby": titleId,
    hidden: true
  }, [
    el("div", { className: "chat-widget__header" }, [
      el("h2", { id: titleId, className: "chat-widget__title", text: title }),
      newChatButton,
      closeButton
    ]),
    log,
    status,
    selectionBox,
    form
  ]);
  var askSelection = el("button", {
    type: "button",
    className: "chat-widget__ask-selection",
    hidden: true,
    text: "Ask about this selection"
  });
  root.appendChild(panel);
  root.appendChild(launcher);

  // ---- state --------------------------------------------------------------------------

  var sessionId = loadSessionId();
  var historyLoaded = false;
  var pendingSelection = null;
  var busy = false;
  var lastAsk = null;
  var current = null; // the answer being received: {cancel}
  var wsUnsupported = false;
  var socket = null;
  var socketReady = null;
  var socketHandlers = {};
  var retryTimer = null;

  // ---- open, close, focus -------------------------------------------------------------

  function isOpen() { return !panel.hidden; }

  function open(focusTarget) {
    if (!isOpen()) {
      panel.hidden = false;
      root.classList.add("chat-widget--open");
      launcher.setAttribute("aria-expanded", "true");
      if (!historyLoaded) loadHistory();
    }
    (focusTarget || input).focus();
  }

  function close() {
    if (!isOpen()) return;
    panel.hidden = true;
    root.classList.remove("chat-widget--open");
    launcher.setAttribute("aria-expanded", "false");
    // Back to the button that opens it (also when "Ask about this selection" opened it: that
    // button is gone by now).
    launcher.focus();
  }

  function focusable() {
    return Array.prototype.filter.call(
      panel.querySelectorAll("a[href], button, textarea, input, [tabindex]:not([tabindex='-1'])"),
      function (node) { return !node.disabled && !node.hidden && node.getClientRects().length > 0; }
    );
  }

  panel.addEventListener("keydown", function (event) {
    if (event.key === "Escape") {
      event.preventDefault();
      close();
      return;
    }
    if (event.key !== "Tab") return;
    var nodes = focusable();
    if (!nodes.length) return;
    var first = nodes[0];
    var last = nodes[nodes.length - 1];
    if (event.shiftKey && (document.activeElement === first || !panel.contains(document.activeElement))) {
      event.preventDefault();
      last.focus();
    } else if (!event.shiftKey && document.activeElement === last) {
      event.preventDefault();
      first.focus();
    }
  });

  launcher.addEventListener("click", function () {
    if (isOpen()) close();
    else open();
  });
  closeButton.addEventListener("click", close);

  // ---- status and errors --------------------------------------------------------------

  function setStatus(text, kind, retry) {
    if (retryTimer) { window.clearInterval(retryTimer); retryTimer = null; }
    status.textContent = "";
    status.className = "chat-widget__status" + (kind ? " chat-widget__status--" + kind : "");
    if (!text) return;
    status.appendChild(el("span", { text: text }));
    if (retry) {
      var button = el("button", { type: "button", className: "chat-widget__retry", text: "Try again" });
      button.addEventListener("click", function () {
        setStatus("");
        if (lastAsk) ask(lastAsk.query, lastAsk.selection, true);
      });
      if (retry.waitSecs > 0) {
        var left = Math.ceil(retry.waitSecs);
        button.disabled = true;
        button.textContent = "Try again in " + left + " s";
        retryTimer = window.setInterval(function () {
          left -= 1;
          if (left <= 0) {
            window.clearInterval(retryTimer);
            retryTimer = null;
            button.disabled = false;
            button.textContent = "Try again";
          } else {
            button.textContent = "Try again in " + left + " s";
          }
        }, 1000);
      }
      status.appendChild(button);
    }
  }

  /** A failure as readers should read it. `failure`: {kind, status?, code?, message?, retryAfter?} */
  function explain(failure) {
    if (failure.kind === "offline") {
      return "You seem to be offline. Check your connection, then try again.";
    }
    if (failure.kind === "cors") {
      return "This site is not allowed to use the chat service at " + apiBase.origin +
        ". The service's ALLOWED_ORIGINS setting must include " + window.location.origin + ".";
    }
    if (failure.kind === "network") {
      return "Can't reach the chat service at " + apiBase.origin +
        ". It may be down or restarting; try again in a moment.";
    }
    if (failure.kind === "no-websocket") {
      return "The chat service at " + apiBase.origin + " does not offer a WebSocket here, and this page allows no other way " +
        "(data-transport=\"ws\"). Remove data-transport to use streamed HTTP instead.";
    }
    if (failure.kind === "interrupted") {
      return "The connection dropped before the answer was complete. Try again.";
    }
    var code = failure.code || "";
    if (code === "rate_limited" || failure.status === 429) {
      var wait = failure.retryAfter;
      return "Too many questions in a short time. " +
        (wait ? "You can ask again in " + Math.ceil(wait) + " seconds." : "Wait a minute, then try again.");
    }
    if (code === "invalid_request" || code === "bad_request" || code === "payload_too_large") {
      return "The service could not take this question: " + (failure.message || code) + ".";
    }
    if (code === "server_busy" || code === "index_unavailable" || /^upstream_|^database_|deadline/.test(code) || failure.status >= 500) {
      return "The chat service is having trouble right now (" + (code || "HTTP " + failure.status) + "). Try again in a moment.";
    }
    return "Something went wrong (" + (code || "HTTP " + failure.status) + ")" + (failure.message ? ": " + failure.message : "") + ".";
  }

  function retryAfterOf(response, body) {
    var header = response && response.headers.get("retry-after");
    if (header && /^\d+$/.test(header.trim())) return Number(header.trim());
    if (body && body.error && typeof body.error.retry_after_secs === "number") return body.error.retry_after_secs;
    // Retry-After is exposed to cross-origin pages; where a proxy strips that, the message
    // still says how long to wait.
    var match = body && body.error && /retry in (\d+)/.exec(body.error.message || "");
    return match ? Number(match[1]) : 0;
  }

  /** Why fetch() threw: offline, a CORS refusal (the service answers a no-cors probe), or down. */
  function classifyNetworkFailure() {
    if (navigator.onLine === false) return Promise.resolve({ kind: "offline" });
    if (!crossOrigin) return Promise.resolve({ kind: "network" });
    return fetch(api("health"), { mode: "no-cors", cache: "no-store" }).then(
      function () { return { kind: "cors" }; },
      function () { return { kind: "network" }; }
    );
  }

  function httpFailure(response) {
    return response.text().then(function (text) {
      var body = null;
      try { body = JSON.parse(text); } catch (e) { body = null; }
      var error = (body && body.error) || {};
      return {
        kind: "http",
        status: response.status,
        code: error.code,
        message: error.message,
        retryAfter: retryAfterOf(response, body)
      };
    });
  }

  // ---- messages in the log ------------------------------------------------------------

  function addUserMessage(query, selection) {
    if (empty.parentNode) empty.parentNode.removeChild(empty);
    var children = [];
    if (selection) {
      children.push(el("blockquote", { className: "chat-widget__quote", text: truncate(selection, 280) }));
    }
    children.push(el("p", { text: query }));
    var node = el("div", { className: "chat-widget__msg chat-widget__msg--user" }, [
      el("span", { className: "chat-widget__visually-hidden", text: "You asked: " })
    ].concat(children));
    log.appendChild(node);
    scrollDown();
    return node;
  }

  function truncate(text, max) {
    return text.length > max ? text.slice(0, max - 1) + "…" : text;
  }

  function scrollDown() {
    log.scrollTop = log.scrollHeight;
  }

  /** An answer in the log; returns handlers the transports feed. */
  function addAnswer() {
    if (empty.parentNode) empty.parentNode.removeChild(empty);
    var body = el("div", { className: "chat-widget__answer", "aria-busy": "true" });
    var typing = el("p", { className: "chat-widget__typing", text: "Looking in the book…" });
    body.appendChild(typing);
    var sourcesBox = el("div", { className: "chat-widget__sources", hidden: true });
    var feedbackBox = el("div", { className: "chat-widget__feedback", hidden: true });
    var node = el("div", { className: "chat-widget__msg chat-widget__msg--bot" }, [
      el("span", { className: "chat-widget__visually-hidden", text: "Answer: " }),
      body, sourcesBox, feedbackBox
    ]);
    log.appendChild(node);
    scrollDown();
    var text = "";
    var sources = [];
    var scheduled = false;
    function render() {
      scheduled = false;
      renderMarkdown(body, text, sources);
      scrollDown();
    }
    return {
      node: node,
      sources: function (list) {
        sources = Array.isArray(list) ? list : [];
        renderSources(sourcesBox, sources);
        if (text) render();
      },
      delta: function (piece) {
        text += piece;
        if (!scheduled) {
          scheduled = true;
          window.requestAnimationFrame(render);
        }
      },
      done: function (messageId, incomplete) {
        render();
        body.setAttribute("aria-busy", "false");
        if (!text.trim()) body.appendChild(el("p", { text: "(No answer.)" }));
        if (incomplete) node.classList.add("chat-widget__msg--incomplete");
        if (messageId) renderFeedback(feedbackBox, messageId, null);
      },
      fail: function () {
        body.setAttribute("aria-busy", "false");
        if (!text) node.parentNode && node.parentNode.removeChild(node);
        else node.classList.add("chat-widget__msg--incomplete");
      },
      hasText: function () { return text.length > 0; }
    };
  }

  function renderSources(box, sources) {
    box.textContent = "";
    var usable = sources.filter(function (s) { return safeHref(s.url); });
    box.hidden = usable.length === 0;
    if (!usable.length) return;
    box.appendChild(el("p", { className: "chat-widget__sources-title", text: "Sources" }));
    var list = el("ol", { className: "chat-widget__sources-list" });
    usable.forEach(function (source) {
      var label = source.title + (source.heading && source.heading !== source.title ? " › " + source.heading : "");
      list.appendChild(el("li", { value: String(source.n) }, [
        el("a", { href: safeHref(source.url), className: "chat-widget__source", text: label })
      ]));
    });
    box.appendChild(list);
  }

  function renderFeedback(box, messageId, rating) {
    box.textContent = "";
    box.hidden = false;
    var label = el("span", { className: "chat-widget__feedback-label", text: "Was this helpful?" });
    var up = el("button", { type: "button", className: "chat-widget__thumb", "aria-label": "Helpful", title: "Helpful", "aria-pressed": rating === "up" ? "true" : "false" }, [icon("up")]);
    var down = el("button", { type: "button", className: "chat-widget__thumb", "aria-label": "Not helpful", title: "Not helpful", "aria-pressed": rating === "down" ? "true" : "false" }, [icon("down")]);
    var note = el("span", { className: "chat-widget__feedback-note", "aria-live": "polite" });
    function send(value, button, other) {
      if (!sessionId) return;
      up.disabled = down.disabled = true;
      fetch(api("session/" + encodeURIComponent(sessionId) + "/messages/" + encodeURIComponent(messageId) + "/feedback"), {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ rating: value })
      }).then(function (response) {
        if (response.status === 204) {
          button.setAttribute("aria-pressed", "true");
          other.setAttribute("aria-pressed", "false");
          note.textContent = "Thanks for the feedback.";
          return null;
        }
        return httpFailure(response).then(function (failure) { note.textContent = explain(failure); });
      }, function () {
        note.textContent = "Could not send the feedback: the service is not reachable.";
      }).then(function () {
        up.disabled = down.disabled = false;
      });
    }
    up.addEventListener("click", function () { send("up", up, down); });
    down.addEventListener("click", function () { send("down", down, up); });
    box.appendChild(label);
    box.appendChild(up);
    box.appendChild(down);
    box.appendChild(note);
  }

  // ---- history --------------------------------------------------------------------------

  function loadHistory() {
    historyLoaded = true;
    if (!sessionId) return;
    var id = sessionId;
    setStatus("Loading your conversation…", "loading");
    fetch(api("session/" + encodeURIComponent(id) + "?limit=50"), { headers: { accept: "application/json" } })
      .then(function (response) {
        if (response.status === 404) {
          // Deleted or expired on the server: start afresh rather than fail every question.
          if (sessionId === id) { sessionId = null; saveSessionId(null); }
          setStatus("");
          return null;
        }
        if (!response.ok) return httpFailure(response).then(function (failure) { setStatus(explain(failure), "error"); });
        return response.json().then(function (page) {
          setStatus("");
          if (sessionId !== id) return;
          var pendingQuote = null;
          (page.messages || []).forEach(function (message) {
            if (message.role === "user") {
              addUserMessage(message.content, pendingQuote);
            } else {
              var answer = addAnswer();
              answer.sources(message.sources || []);
              answer.delta(message.content || "");
              answer.done(message.id, message.status === "incomplete");
              if (message.feedback) {
                renderFeedback(answer.node.querySelector(".chat-widget__feedback"), message.id, message.feedback.rating);
              }
            }
          });
        });
      }, function () {
        historyLoaded = false;
        classifyNetworkFailure().then(function (failure) { setStatus(explain(failure), "error"); });
      });
  }

  function newChat() {
    if (current) current.cancel();
    var old = sessionId;
    sessionId = null;
    saveSessionId(null);
    historyLoaded = true;
    lastAsk = null;
    log.textContent = "";
    log.appendChild(empty);
    setStatus("New chat started.", "info");
    clearSelection();
    if (old) {
      // The old conversation is deleted on the server too; if that fails it is still forgotten here.
      fetch(api("session/" + encodeURIComponent(old)), { method: "DELETE" }).catch(function () {});
    }
    input.focus();
  }
  newChatButton.addEventListener("click", newChat);

  // ---- transports -----------------------------------------------------------------------

  function requestBody(query, selection) {
    var body = { query: query, page_url: window.location.href.split("#")[0] };
    if (sessionId) body.session_id = sessionId;
    if (selection) body.selected_text = selection;
    return body;
  }

  function remember(id) {
    if (id && id !== sessionId) {
      sessionId = id;
      saveSessionId(id);
    }
  }

  /** JSON: the whole answer at once. */
  function askJson(body, answer) {
    var controller = window.AbortController ? new AbortController() : null;
    current = { cancel: function () { if (controller) controller.abort(); } };
    return fetch(api("chat"), {
      method: "POST",
      headers: { "content-type": "application/json", accept: "application/json" },
      body: JSON.stringify(body),
      signal: controller ? controller.signal : undefined
    }).then(function (response) {
      if (!response.ok) return httpFailure(response).then(function (f) { throw f; });
      return response.json().then(function (data) {
        remember(data.session_id);
        answer.sources(data.sources);
        answer.delta(data.answer || "");
        answer.done(data.message_id, false);
      });
    }, networkError);
  }

  function networkError(error) {
    if (error && error.name === "AbortError") throw { kind: "aborted" };
    return classifyNetworkFailure().then(function (failure) { throw failure; });
  }

  /** Server-sent events over fetch (POST), read as the body arrives. */
  function askSse(body, answer) {
    var controller = window.AbortController ? new AbortController() : null;
    current = { cancel: function () { if (controller) controller.abort(); } };
    return fetch(api("chat"), {
      method: "POST",
      headers: { "content-type": "application/json", accept: "text/event-stream" },
      body: JSON.stringify(body),
      signal: controller ? controller.signal : undefined
    }).then(function (response) {
      if (!response.ok) return httpFailure(response).then(function (f) { throw f; });
      var type = response.headers.get("content-type") || "";
      if (type.indexOf("text/event-stream") < 0) {
        return response.json().then(function (data) {
          remember(data.session_id);
          answer.sources(data.sources);
          answer.delta(data.answer || "");
          answer.done(data.message_id, false);
        });
      }
      var finished = false;
      var failure = null;
      function onEvent(name, data) {
        var payload;
        try { payload = JSON.parse(data); } catch (e) { payload = data; }
        if (name === "sources") {
          remember(payload.session_id);
          answer.sources(payload.sources);
        } else if (name === "delta") {
          answer.delta(typeof payload === "string" ? payload : (payload.text || ""));
        } else if (name === "done") {
          remember(payload.session_id);
          finished = true;
          answer.done(payload.message_id, false);
        } else if (name === "error") {
          var error = payload.error || payload;
          failure = { kind: "http", status: 200, code: error.code, message: error.message, retryAfter: error.retry_after_secs };
        }
      }
      var parser = sseParser(onEvent);
      var finish = function () {
        parser.end();
        if (failure) throw failure;
        if (!finished) throw { kind: "interrupted" };
      };
      if (!response.body || !response.body.getReader) {
        return response.text().then(function (text) { parser.feed(text); finish(); });
      }
      var reader = response.body.getReader();
      var decoder = new TextDecoder();
      function pump() {
        return reader.read().then(function (chunk) {
          if (chunk.done) {
            parser.feed(decoder.decode());
            return finish();
          }
          parser.feed(decoder.decode(chunk.value, { stream: true }));
          return pump();
        });
      }
      return pump().catch(function (error) {
        if (error && error.kind) throw error;
        if (error && error.name === "AbortError") throw { kind: "aborted" };
        throw { kind: "interrupted" };
      });
    }, networkError);
  }

  /** The text/event-stream format: events end at a blank line; `event:` and `data:` fields. */
  function sseParser(onEvent) {
    var buffer = "";
    var name = "";
    var data = [];
    function line(text) {
      if (text === "") {
        if (data.length) onEvent(name || "message", data.join("\n"));
        name = "";
        data = [];
        return;
      }
      if (text.charAt(0) === ":") return;
      var colon = text.indexOf(":");
      var field = colon < 0 ? text : text.slice(0, colon);
      var value = colon < 0 ? "" : text.slice(colon + 1).replace(/^ /, "");
      if (field === "event") name = value;
      else if (field === "data") data.push(value);
    }
    return {
      feed: function (text) {
        buffer += text;
        var match;
        var re = /\r\n|\r|\n/g;
        var start = 0;
        while ((match = re.exec(buffer)) !== null) {
          // A lone \r at the end may be the first half of \r\n: wait for more.
          if (match[0] === "\r" && match.index === buffer.length - 1) break;
          line(buffer.slice(start, match.index));
          start = re.lastIndex;
        }
        buffer = buffer.slice(start);
      },
      end: function () {
        if (buffer) line(buffer);
        line("");
        buffer = "";
      }
    };
  }

  /** The WebSocket, opened on first use and kept for the page's next questions. */
  function connectSocket() {
    if (socketReady) return socketReady;
    var url = new URL("chat/ws", apiBase);
    url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
    socketReady = new Promise(function (resolve, reject) {
      var ws;
      try { ws = new WebSocket(url.href); } catch (e) { reject(e); return; }
      var opened = false;
      ws.onopen = function () { opened = true; socket = ws; resolve(ws); };
      ws.onmessage = function (event) {
        var frame;
        try { frame = JSON.parse(event.data); } catch (e) { return; }
        var handler = frame && frame.id && socketHandlers[frame.id];
        if (handler) handler(frame);
      };
      ws.onclose = function () {
        socket = null;
        socketReady = null;
        if (!opened) { reject(new Error("no WebSocket")); return; }
        Object.keys(socketHandlers).forEach(function (id) {
          socketHandlers[id]({ type: "closed", id: id });
        });
      };
      ws.onerror = function () { /* onclose follows */ };
    });
    return socketReady;
  }

  function askWs(body, answer) {
    return connectSocket().then(function (ws) {
      return new Promise(function (resolve, reject) {
        var id = "q" + Date.now().toString(36) + Math.random().toString(36).slice(2, 8);
        var frame = { type: "ask", id: id };
        Object.keys(body).forEach(function (k) { frame[k] = body[k]; });
        current = {
          cancel: function () {
            try { ws.send(JSON.stringify({ type: "cancel", id: id })); } catch (e) { /* closed */ }
            delete socketHandlers[id];
            reject({ kind: "aborted" });
          }
        };
        socketHandlers[id] = function (message) {
          if (message.type === "sources") {
            remember(message.session_id);
            answer.sources(message.sources);
          } else if (message.type === "delta") {
            answer.delta(message.text || "");
          } else if (message.type === "done") {
            delete socketHandlers[id];
            remember(message.session_id);
            answer.done(message.message_id, false);
            resolve();
          } else if (message.type === "cancelled") {
            delete socketHandlers[id];
            reject({ kind: "aborted" });
          } else if (message.type === "error") {
            delete socketHandlers[id];
            reject({ kind: "http", status: 200, code: message.code, message: message.message, retryAfter: message.retry_after_secs });
          } else if (message.type === "closed") {
            delete socketHandlers[id];
            reject({ kind: "interrupted" });
          }
        };
        ws.send(JSON.stringify(frame));
      });
    }, function () {
      throw { kind: "no-websocket" };
    });
  }

  /** WebSocket first (unless it failed before on this page), then SSE; JSON when asked for. */
  function send(body, answer) {
    if (forced === "json") return askJson(body, answer);
    if (forced === "sse") return askSse(body, answer);
    if (forced === "ws") {
      return askWs(body, answer).catch(function (failure) {
        if (failure && failure.kind === "no-websocket") {
          // Down, or up without a WebSocket (e.g. under `spin up`): /health tells them apart.
          return fetch(api("health"), { cache: "no-store" }).then(
            function () { throw { kind: "no-websocket" }; },
            function () { return classifyNetworkFailure().then(function (f) { throw f; }); }
          );
        }
        throw failure;
      });
    }
    if (wsUnsupported || typeof window.WebSocket !== "function") return askSse(body, answer);
    return askWs(body, answer).catch(function (failure) {
      if (!failure || failure.kind !== "no-websocket") throw failure;
      // No WebSocket here (e.g. under `spin up`): streamed HTTP instead, and from now on
      // once it worked.
      return askSse(body, answer).then(function () { wsUnsupported = true; });
    });
  }

  function ask(query, selection, isRetry) {
    if (busy) return;
    query = (query || "").trim();
    if (!query && selection) query = "Explain the selected passage.";
    if (!query) { input.focus(); return; }
    busy = true;
    sendButton.disabled = true;
    lastAsk = { query: query, selection: selection };
    if (!isRetry || !log.lastElementChild || !log.lastElementChild.classList.contains("chat-widget__msg--user")) {
      addUserMessage(query, selection);
    }
    setStatus("Thinking…", "loading");
    var answer = addAnswer();
    var body = requestBody(query, selection);
    var startAfresh = false;
    send(body, answer).then(function () {
      setStatus("");
    }, function (failure) {
      answer.fail();
      if (failure && failure.kind === "aborted") { setStatus(""); return; }
      if (failure && failure.code === "not_found" && body.session_id) {
        // The stored conversation is gone on the server: start a new one with this question.
        sessionId = null;
        saveSessionId(null);
        setStatus("Your earlier conversation is no longer on the server; starting a new one.", "info");
        startAfresh = true;
        return;
      }
      failure = failure && failure.kind ? failure : { kind: "network" };
      setStatus(explain(failure), "error", { waitSecs: failure.retryAfter || 0 });
    }).then(function () {
      current = null;
      busy = false;
      sendButton.disabled = false;
      if (startAfresh) ask(query, selection, true);
    });
  }

  form.addEventListener("submit", function (event) {
    event.preventDefault();
    var query = input.value;
    var selection = pendingSelection;
    if (!query.trim() && !selection) { input.focus(); return; }
    input.value = "";
    clearSelection();
    ask(query, selection, false);
  });
  input.addEventListener("keydown", function (event) {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      if (form.requestSubmit) form.requestSubmit();
      else form.dispatchEvent(new Event("submit", { cancelable: true }));
    }
  });

  // ---- "Ask about this selection" -------------------------------------------------------

  function clearSelection() {
    pendingSelection = null;
    selectionBox.hidden = true;
    selectionText.textContent = "";
  }
  selectionClear.addEventListener("click", function () {
    clearSelection();
    input.focus();
  });

  function currentSelection() {
    var selection = window.getSelection ? window.getSelection() : null;
    if (!selection || selection.isCollapsed || selection.rangeCount === 0) return null;
    var range = selection.getRangeAt(0);
    if (root.contains(range.commonAncestorContainer)) return null;
    var text = selection.toString().replace(/\s+/g, " ").trim();
    if (text.length < 3) return null;
    return { text: text.slice(0, MAX_SELECTION), rect: range.getBoundingClientRect() };
  }

  function placeAskSelection() {
    var found = currentSelection();
    if (!found) { askSelection.hidden = true; return; }
    askSelection.hidden = false;
    var top = found.rect.bottom + window.scrollY + 8;
    var left = Math.min(
      Math.max(found.rect.left + window.scrollX, window.scrollX + 8),
      window.scrollX + document.documentElement.clientWidth - askSelection.offsetWidth - 8
    );
    askSelection.style.top = top + "px";
    askSelection.style.left = left + "px";
  }

  var selectionTimer = null;
  document.addEventListener("selectionchange", function () {
    window.clearTimeout(selectionTimer);
    selectionTimer = window.setTimeout(placeAskSelection, 150);
  });
  // Pressing the button would otherwise clear the selection before the click lands.
  askSelection.addEventListener("mousedown", function (event) { event.preventDefault(); });
  askSelection.addEventListener("click", function () {
    var found = currentSelection();
    askSelection.hidden = true;
    if (!found) return;
    pendingSelection = found.text;
    selectionText.textContent = "“" + truncate(found.text, 160) + "”";
    selectionBox.hidden = false;
    open(input);
    input.placeholder = "What would you like to know about it?";
  });

  // ---- start ----------------------------------------------------------------------------

  function mount() {
    document.body.appendChild(root);
    document.body.appendChild(askSelection);
    if (!document.querySelector("link[rel=stylesheet][href*='chat-widget']")) {
      // The stylesheet sits next to the script: chat-widget.js -> chat-widget.css.
      var css = /chat-widget\.js$/.test(scriptUrl.pathname)
        ? scriptUrl.href.replace(/chat-widget\.js(\?.*)?$/, "chat-widget.css")
        : api("assets/chat-widget.css");
      document.head.appendChild(el("link", { rel: "stylesheet", href: css }));
    }
  }
  if (document.body) mount();
  else document.addEventListener("DOMContentLoaded", mount);
})();
