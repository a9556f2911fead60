// The few behaviours htmx does not cover. Loaded after htmx; no inline
// script anywhere (the Content-Security-Policy forbids it).
(function () {
  // Action answers (started, refused, ...) go to the flash area even when
  // they are errors: htmx does not swap 4xx/5xx answers by default.
  document.addEventListener("htmx:beforeSwap", function (e) {
    var target = e.detail.target;
    if (e.detail.xhr.status >= 400 && target && target.id === "flash") {
      e.detail.shouldSwap = true;
      e.detail.isError = false;
    }
  });
  // A confirm step for actions that stop work (hx-confirm uses window.confirm,
  // which is fine; nothing to add here). Mark the page as live-connected so
  // the header dot can show whether updates arrive.
  document.addEventListener("htmx:sseOpen", function () {
    document.body.classList.add("live-on");
  });
  // A live refresh of the schedules never wipes a note being typed.
  document.addEventListener("htmx:beforeRequest", function (e) {
    var el = e.detail.elt;
    var active = document.activeElement;
    if (el && el.id === "schedule-cards" && active && el.contains(active) && active.value) {
      e.preventDefault();
    }
  });
  document.addEventListener("htmx:sseError", function () {
    document.body.classList.remove("live-on");
  });

  // Module logs on the run page (crates/ui/src/pages/log.rs says what the
  // routes answer). A panel loads the last ~256 KiB of its log as a chunk of
  // spans the server escaped; while the module runs it follows
  // /log/events and keeps the end in view unless the reader scrolled up
  // ("↓ follow" brings it back). htmx keeps the panel element across the
  // body's live refreshes (hx-preserve), so its state lives on the element.
  var LOG_KEEP = 2 * 1024 * 1024; // bytes a followed log keeps in the page

  function logInit(root) {
    if (!root || !root.querySelectorAll) return;
    var panels = root.querySelectorAll(".log-panel");
    for (var i = 0; i < panels.length; i++) {
      if (!panels[i]._log && panels[i].isConnected) logSetup(panels[i]);
    }
  }

  function logSetup(el) {
    var st = {
      el: el,
      view: el.querySelector(".log-view"),
      pre: el.querySelector("pre.log"),
      toggle: el.querySelector(".log-toggle"),
      status: el.querySelector(".log-status"),
      earlier: el.querySelector(".log-earlier"),
      followBtn: el.querySelector(".log-follow"),
      loaded: false,
      loading: false,
      complete: false,
      // The attempt runs (as its last chunk said): only then is the log
      // said to be followed "live".
      running: el.dataset.live === "true",
      next: 0,
      following: true,
      es: null,
      retry: null,
      backoff: 1000,
      top: 0,
      // Where this code last put the scroll: a scroll event that finds the
      // log there was ours (a follow, a refresh putting it back), not the
      // reader's.
      ours: null,
    };
    el._log = st;
    st.toggle.addEventListener("click", function () {
      if (st.view.hidden) logOpen(st);
      else logClose(st);
    });
    var filters = el.querySelectorAll(".log-filter button");
    filters.forEach(function (b) {
      b.addEventListener("click", function () {
        el.dataset.show = b.dataset.show;
        filters.forEach(function (o) {
          o.setAttribute("aria-pressed", String(o === b));
        });
        if (st.following) logToEnd(st);
      });
    });
    st.followBtn.addEventListener("click", function () {
      st.following = true;
      logToEnd(st);
    });
    st.earlier.addEventListener("click", function () {
      logEarlier(st);
    });
    st.pre.addEventListener("scroll", function () {
      if (st.ours !== null && Math.abs(st.pre.scrollTop - st.ours) < 1) return;
      st.ours = null;
      st.following = logAtEnd(st.pre);
      logFollowButton(st);
    });
    if (el.dataset.live === "true" || el.dataset.autoload === "true") logOpen(st);
  }

  function logAtEnd(pre) {
    return pre.scrollHeight - pre.scrollTop - pre.clientHeight < 8;
  }

  // The reader moved the log since this code last put it somewhere, and
  // the scroll event saying so has not been handled yet (it comes with the
  // next frame): take it into account before moving the log again.
  function logReaderMoved(st) {
    if (st.ours === null || Math.abs(st.pre.scrollTop - st.ours) < 1) return;
    st.ours = null;
    st.following = logAtEnd(st.pre);
    logFollowButton(st);
  }

  function logScrollTo(st, top) {
    st.pre.scrollTop = top;
    st.ours = st.pre.scrollTop; // as the browser clamped it
  }

  function logToEnd(st) {
    logScrollTo(st, st.pre.scrollHeight);
    logFollowButton(st);
  }

  function logFollowButton(st) {
    st.followBtn.hidden = st.following || !st.es;
  }

  function logStatus(st, text, kind) {
    st.status.textContent = text;
    st.status.className = "log-status" + (kind ? " " + kind : "");
  }

  function logSize(n) {
    if (n < 1024) return n + " B";
    if (n < 1024 * 1024) return (n / 1024).toFixed(1) + " KiB";
    return (n / 1024 / 1024).toFixed(1) + " MiB";
  }

  function logOpen(st) {
    st.view.hidden = false;
    st.toggle.textContent = "Hide log";
    st.toggle.setAttribute("aria-expanded", "true");
    if (!st.loaded) logLoad(st);
    else if (!st.complete) logListen(st);
  }

  function logClose(st) {
    st.view.hidden = true;
    st.toggle.textContent = "Show log";
    st.toggle.setAttribute("aria-expanded", "false");
    logStop(st);
    if (!st.complete && st.loaded) logStatus(st, "paused");
  }

  function logStop(st) {
    if (st.es) st.es.close();
    st.es = null;
    clearTimeout(st.retry);
    st.retry = null;
    logFollowButton(st);
  }

  function logFetch(url) {
    return fetch(url, { headers: { Accept: "text/html" } }).then(function (res) {
      if (!res.ok) throw new Error("the log could not be read (HTTP " + res.status + ")");
      return res.text();
    });
  }

  function logLoad(st) {
    if (st.loading) return;
    st.loading = true;
    logStatus(st, "loading…");
    logFetch(st.el.dataset.src)
      .then(function (html) {
        st.loading = false;
        st.loaded = true;
        st.pre.insertAdjacentHTML("beforeend", html);
        var c = st.pre.lastElementChild;
        st.next = Number(c.dataset.next);
        st.complete = c.dataset.complete === "true";
        st.running = c.dataset.running === "true";
        logEarlierButton(st);
        logToEnd(st);
        if (st.complete) logDone(st, "complete");
        else logListen(st);
      })
      .catch(function (e) {
        st.loading = false;
        logStatus(st, e.message, "warn");
      });
  }

  function logListen(st) {
    if (st.es || st.retry || st.complete || st.view.hidden) return;
    var es = new EventSource(st.el.dataset.events + "&from=" + st.next);
    st.es = es;
    logFollowing(st);
    es.addEventListener("open", function () {
      logFollowing(st);
    });
    es.addEventListener("log", function (e) {
      st.backoff = 1000;
      logAppend(st, e.data);
    });
    // The attempt ended; the last of its log is still to come (or never
    // will, when its worker died: then `end` says "incomplete").
    es.addEventListener("finished", function () {
      st.running = false;
      logFollowing(st);
    });
    es.addEventListener("end", function (e) {
      logStop(st);
      st.complete = true;
      logDone(st, e.data);
    });
    es.addEventListener("error", function () {
      if (st.es !== es) return;
      if (es.readyState === EventSource.CLOSED) {
        // Refused (too many followers, or the server is restarting): the
        // browser gives up on its own, so try again later from where we are.
        logStop(st);
        st.retry = setTimeout(function () {
          st.retry = null;
          logListen(st);
        }, st.backoff);
        st.backoff = Math.min(st.backoff * 2, 30000);
      }
      logStatus(st, "reconnecting…", "warn");
    });
    logFollowButton(st);
  }

  // What a panel following its log says: "live" only while the attempt
  // runs; an attempt that ended is read to the end of its log, said so.
  function logFollowing(st) {
    if (st.running) logStatus(st, "live", "live");
    else logStatus(st, "ended; reading the rest of its log…");
  }

  function logAppend(st, html) {
    logReaderMoved(st);
    st.pre.insertAdjacentHTML("beforeend", html);
    st.next = Number(st.pre.lastElementChild.dataset.next);
    var running = st.pre.lastElementChild.dataset.running === "true";
    if (running !== st.running) {
      st.running = running;
      if (st.es) logFollowing(st);
    }
    if (st.following) {
      logTrim(st);
      logToEnd(st);
    }
  }

  // A log followed for hours stays light: the oldest chunks leave the page
  // ("load earlier" brings them back).
  function logTrim(st) {
    var pre = st.pre;
    while (pre.firstElementChild && pre.firstElementChild.nextElementSibling) {
      var second = pre.firstElementChild.nextElementSibling;
      if (st.next - Number(second.dataset.from) <= LOG_KEEP) break;
      pre.removeChild(pre.firstElementChild);
    }
    logEarlierButton(st);
  }

  function logEarlierButton(st) {
    var first = st.pre.firstElementChild;
    var from = first ? Number(first.dataset.from) : 0;
    st.earlier.hidden = !(from > 0);
    st.earlier.textContent = "↑ load earlier (" + logSize(from) + " before)";
  }

  function logEarlier(st) {
    var first = st.pre.firstElementChild;
    if (!first || st.earlier.disabled) return;
    st.earlier.disabled = true;
    logFetch(st.el.dataset.src + "&to=" + Number(first.dataset.from))
      .then(function (html) {
        var pre = st.pre;
        var before = pre.scrollHeight;
        pre.insertAdjacentHTML("afterbegin", html);
        logScrollTo(st, pre.scrollTop + pre.scrollHeight - before); // keep the lines in view where they were
        st.earlier.disabled = false;
        logEarlierButton(st);
      })
      .catch(function (e) {
        st.earlier.disabled = false;
        logStatus(st, e.message, "warn");
      });
  }

  function logDone(st, how) {
    var text = {
      complete: "complete",
      incomplete: "incomplete: its worker ended before writing the last of it",
      gone: "deleted from the record",
    }[how] || how;
    if (how === "complete" && !st.pre.textContent) text = "no output";
    logStatus(st, text, how === "complete" ? "" : "warn");
    logFollowButton(st);
  }

  // A live refresh of the run's body moves the preserved panels out and
  // back: keep each where its reader left it.
  document.addEventListener("htmx:beforeSwap", function () {
    document.querySelectorAll(".log-panel").forEach(function (el) {
      var st = el._log;
      if (!st) return;
      logReaderMoved(st);
      st.top = st.pre.scrollTop;
    });
  });
  document.addEventListener("htmx:afterSwap", function () {
    document.querySelectorAll(".log-panel").forEach(function (el) {
      var st = el._log;
      if (!st) return;
      if (st.following) logToEnd(st);
      else logScrollTo(st, st.top);
    });
  });
  document.addEventListener("htmx:load", function (e) {
    logInit(e.detail && e.detail.elt);
  });
  logInit(document);
})();
