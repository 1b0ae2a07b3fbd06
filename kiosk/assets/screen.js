// The kiosk screen: a greeting from the public event stream the moment it arrives, idle again after the configured time, health from /api/v1/status, and everything fetched again after each reconnect.
"use strict";

(() => {
  const { $, text, TIERS } = K;
  /** Unsent visits above this make the backlog indicator show. */
  const BACKLOG_WARN = 1000;
  /** The hub counts as down for long once visits have waited this long (as /api/v1/status says). */
  const HUB_DOWN_AFTER_S = 600;

  const settings = { language: "both", greetingMs: 8000, timeZone: undefined };
  const readers = new Map();
  let status = null;
  let readerProblem = false;
  let linkUp = false;
  let idleTimer = null;
  let clockTimer = null;

  /** [primary, secondary] in the configured language(s). */
  function pick(pair) {
    if (settings.language === "en") return [pair[1], ""];
    if (settings.language === "zh") return [pair[0], ""];
    return pair;
  }

  /** Shrinks a slot's font until its text fits; the slot's box never changes size. */
  function fit(node) {
    node.style.fontSize = "";
    let size = parseFloat(getComputedStyle(node).fontSize);
    const min = size * 0.5;
    while (node.scrollWidth > node.clientWidth && size > min) {
      size *= 0.92;
      node.style.fontSize = `${size}px`;
    }
  }

  function lines(ids, pair) {
    const [first, second] = pick(pair);
    text(ids[0], first);
    text(ids[1], second);
    fit($(ids[0]));
  }

  /** What to say for a greeting event. Only masked fields are used: the event has nothing else. */
  function content(g) {
    const m = g.member;
    // A stand-in receives the customer for their own consultant, who is away.
    const consultantLine = g.consultant && g.stand_in
      ? [`顾问 ${g.consultant} 马上为您接待`, `Consultant ${g.consultant} will receive you`]
      : g.consultant
        ? [`您的顾问 ${g.consultant} 马上到`, `Your consultant ${g.consultant} is on the way`]
        : ["请稍候，顾问马上为您服务", "Please wait a moment — a consultant will be right with you"];
    if (g.outcome === "welcome" && m) {
      const back = g.repeat || g.visit_kind === "revisit";
      return {
        state: "welcome",
        icon: "✓",
        kicker: back ? ["欢迎回来", "Welcome back"] : ["首次到访", "First visit"],
        title: back
          ? [`欢迎回来，${m.name_zh}`, `Welcome back, ${m.name_en}`]
          : [`欢迎光临，${m.name_zh}`, `Welcome, ${m.name_en}`],
        tier: m.tier,
        line: consultantLine,
      };
    }
    if (g.outcome === "broker_confirmed" && m) {
      return {
        state: "broker",
        icon: "✓",
        kicker: ["渠道带看 · 已确认", "Broker visit confirmed"],
        title: [`欢迎光临，${m.name_zh}`, `Welcome, ${m.name_en}`],
        tier: m.tier,
        line: consultantLine,
      };
    }
    if (g.outcome === "denied") {
      const say = {
        not_a_membership_card: [
          ["这不是会员卡", "This is not a member card"],
          ["请使用会员卡，或到前台咨询", "Please tap your member card, or see reception"],
        ],
        card_revoked: [
          ["此卡已停用，请到前台", "This card is no longer valid"],
          ["前台将为您办理", "Please see reception"],
        ],
      }[g.reason] || (["unknown_registration", "registration_expired", "other_broker", "malformed_broker_code", "unknown_customer"].includes(g.reason)
        ? [["渠道确客未通过", "Broker check-in not confirmed"], ["请到前台，工作人员为您核实", "Please see reception — our staff will check it"]]
        : [["请到前台", "Please see reception"], ["工作人员将为您服务", "Our staff will help you"]]);
      const note = {
        not_a_membership_card: ["手机或银行卡", "Phone or bank card"],
        card_revoked: ["已停用的卡", "Deactivated card"],
      }[g.reason] || ["请到前台", "Reception"];
      return { state: "denied", icon: "!", kicker: ["提示", "Notice"], title: say[0], note, line: say[1] };
    }
    // An unknown card, or a tap that could not be stored: a person at reception takes over.
    return {
      state: "unknown",
      icon: "i",
      kicker: ["您好", "Hello"],
      title: ["您好，请到前台", "Hello — please see reception"],
      note: g.outcome === "unknown" ? ["未登记的卡", "Card not registered"] : ["请到前台", "Reception"],
      line: g.outcome === "unknown"
        ? ["工作人员将为您办理会员卡", "Our staff will help you with a member card"]
        : ["工作人员将为您登记", "Our staff will sign you in"],
    };
  }

  function showGreeting(g) {
    const c = content(g);
    document.body.dataset.state = c.state;
    text("g-icon", c.icon);
    const kicker = pick(c.kicker);
    text("g-kicker", kicker[1] ? `${kicker[0]} · ${kicker[1]}` : kicker[0]);
    lines(["g-title", "g-title-en"], c.title);
    lines(["g-line", "g-line-en"], c.line);
    // The badge slot always holds something, so every greeting has the same shape.
    const badge = $("g-tier");
    const [zh, en] = pick(c.tier ? TIERS[c.tier] || TIERS.normal : c.note);
    badge.className = c.tier ? `tier ${c.tier}` : "tier note";
    text(badge, en ? `${zh} · ${en}` : zh);
    fit(badge);
    const bar = $("g-progress");
    bar.classList.remove("run");
    void bar.offsetWidth; // restarts the drain animation for a greeting replacing another
    bar.classList.add("run");
    clearTimeout(idleTimer);
    idleTimer = setTimeout(showIdle, settings.greetingMs);
  }

  function showIdle() {
    clearTimeout(idleTimer);
    document.body.dataset.state = "idle";
  }

  function updateHealth() {
    const list = [...readers.values()];
    const readerDown = (list.length > 0 && !list.some((r) => r.connected)) || readerProblem;
    const sync = (status && status.sync) || {};
    const hubDown = sync.configured === true && (sync.auth_refused === true
      || (sync.hub_reachable === false && Number(sync.oldest_unsent_age_s || 0) >= HUB_DOWN_AFTER_S));
    const backlog = Number(sync.backlog || 0);
    const backlogBig = backlog >= BACKLOG_WARN;
    $("h-link").hidden = linkUp;
    $("h-reader").hidden = !readerDown;
    $("h-hub").hidden = !hubDown;
    $("h-backlog").hidden = !backlogBig;
    text("h-backlog-n", `待同步 ${backlog} · Unsynced`);
    $("h-ok").hidden = !linkUp || readerDown || hubDown || backlogBig;
    document.body.dataset.link = linkUp ? "up" : "down";
  }

  function tick() {
    const now = new Date();
    text("clock", K.formatter(settings.timeZone, { hour: "2-digit", minute: "2-digit" }).format(now));
    const date = K.formatter(settings.timeZone, { month: "long", day: "numeric", weekday: "long" }).format(now);
    text("date", date);
    // The next minute's start, not a busy interval.
    clearTimeout(clockTimer);
    clockTimer = setTimeout(tick, 60000 - (Date.now() % 60000) + 50);
  }

  function applySettings(s) {
    settings.language = ["zh", "en", "both"].includes(s.language) ? s.language : "both";
    settings.greetingMs = Math.max(1000, Number(s.greeting_seconds || 8) * 1000);
    settings.timeZone = s.time_zone || undefined;
    document.body.className = `lang-${settings.language}${s.office_name ? " ready" : ""}`;
    document.documentElement.lang = settings.language === "en" ? "en" : "zh-CN";
    document.documentElement.style.setProperty("--greeting", `${settings.greetingMs}ms`);
    text("office", s.office_name);
    const logo = $("logo");
    if (s.logo) {
      logo.src = s.logo;
      logo.hidden = false;
    } else {
      logo.hidden = true;
    }
    lines(["i-line", "i-line-en"], ["请将会员卡轻触读卡区", "Please tap your member card on the reader"]);
    const [welcome] = pick(["欢迎光临", "Welcome"]);
    text("i-title", welcome);
  }

  async function getJson(url) {
    const r = await fetch(url, { cache: "no-store" });
    if (!r.ok) throw new Error(`${url}: ${r.status}`);
    return r.json();
  }

  async function loadStatus() {
    try {
      status = await getJson("/api/v1/status");
      readers.clear();
      for (const r of status.readers || []) readers.set(r.name, r);
      readerProblem = (status.problems || []).some((p) => p.startsWith("no connected reader matches"));
      updateHealth();
    } catch (e) {
      // The daemon is restarting; the stream's reconnection brings us back here.
    }
  }

  /** After every (re)connection: settings, office name and health as they are now. */
  async function loadAll() {
    try {
      applySettings(await getJson("/api/v1/screen"));
    } catch (e) {
      // Kept as they were; the next reconnection tries again.
    }
    await loadStatus();
    tick();
  }

  K.stream("/api/v1/events", {
    greeting: showGreeting,
    reader: (r) => {
      readers.set(r.reader, r);
      if (r.connected) readerProblem = false;
      updateHealth();
    },
  }, () => {
    linkUp = true;
    updateHealth();
    loadAll();
  }, () => {
    linkUp = false;
    updateHealth();
  });

  applySettings({ office_name: "", language: "both", greeting_seconds: 8 });
  updateHealth();
  tick();
  // Sync health changes without an event; a status read every 30 s is enough for a corner dot.
  setInterval(loadStatus, 30000);
})();
