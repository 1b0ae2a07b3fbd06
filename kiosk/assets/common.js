// Shared by the screen and the console: DOM building without innerHTML (nothing from the API is ever parsed as HTML), office-time formatting, and an event stream that heals itself.
"use strict";

const K = (() => {
  const $ = (id) => document.getElementById(id);

  /** el("td", {class: "x", title: "y"}, "text", otherNode) */
  function el(tag, attrs, ...kids) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k === "class") node.className = v;
      else if (k === "text") node.textContent = v;
      else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
      else if (k === "dataset") Object.assign(node.dataset, v);
      else node.setAttribute(k, v === true ? "" : String(v));
    }
    for (const kid of kids.flat()) {
      if (kid === null || kid === undefined || kid === false) continue;
      node.append(kid instanceof Node ? kid : document.createTextNode(String(kid)));
    }
    return node;
  }

  function text(id, value) {
    const node = typeof id === "string" ? $(id) : id;
    node.textContent = value === null || value === undefined ? "" : String(value);
  }

  /** Formats an instant in the office's time zone (the browser's may differ). */
  function formatter(timeZone, options) {
    try {
      return new Intl.DateTimeFormat("zh-CN", { timeZone, hourCycle: "h23", ...options });
    } catch (e) {
      // An unknown zone name in this browser: local time beats no time.
      return new Intl.DateTimeFormat("zh-CN", { hourCycle: "h23", ...options });
    }
  }

  /** Today's date in the office's time zone, YYYY-MM-DD. */
  function officeDay(timeZone, when) {
    const parts = formatter(timeZone, { year: "numeric", month: "2-digit", day: "2-digit" })
      .formatToParts(when || new Date());
    const get = (t) => (parts.find((p) => p.type === t) || {}).value;
    return `${get("year")}-${get("month")}-${get("day")}`;
  }

  /**
   * An EventSource that comes back by itself. The browser retries a dropped stream on
   * its own (the kiosk sends `retry: 2000`), but gives up for good on an HTTP error (a
   * proxy's 502 while the daemon restarts): then this opens a new one, backing off.
   * `onOpen` runs on every (re)connection, so callers refetch state and never show stale data.
   */
  function stream(url, handlers, onOpen, onDown) {
    let delay = 1000;
    let source = null;
    function open() {
      source = new EventSource(url);
      source.addEventListener("open", () => {
        delay = 1000;
        onOpen();
      });
      source.addEventListener("error", () => {
        onDown();
        if (source.readyState === EventSource.CLOSED) {
          source.close();
          setTimeout(open, delay);
          delay = Math.min(delay * 2, 15000);
        }
      });
      for (const [name, handle] of Object.entries(handlers)) {
        source.addEventListener(name, (e) => {
          let data;
          try {
            data = JSON.parse(e.data);
          } catch (err) {
            return;
          }
          handle(data);
        });
      }
    }
    open();
  }

  /** A UUIDv7 (time-ordered), made here: `crypto.randomUUID` exists only on https or localhost. */
  function uuid7() {
    const b = new Uint8Array(16);
    crypto.getRandomValues(b);
    let ms = Date.now();
    for (let i = 5; i >= 0; i--) {
      b[i] = ms % 256;
      ms = Math.floor(ms / 256);
    }
    b[6] = (b[6] & 0x0f) | 0x70;
    b[8] = (b[8] & 0x3f) | 0x80;
    const h = [...b].map((x) => x.toString(16).padStart(2, "0")).join("");
    return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
  }

  const TIERS = {
    gold: ["金卡会员", "Gold member"],
    silver: ["银卡会员", "Silver member"],
    normal: ["会员", "Member"],
  };

  return { $, el, text, formatter, officeDay, stream, uuid7, TIERS };
})();
