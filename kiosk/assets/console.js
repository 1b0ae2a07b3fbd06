// The staff console: signs in with a staff device token, reads the staff API with it, and refetches on every event of the public stream (plus every 15 s for what makes no event).
"use strict";

(() => {
  const { $, el, text, TIERS } = K;
  const TOKEN_KEY = "kiosk.staffToken";
  /** Rotation changes from handhelds and sync's state make no public event: read them this often. */
  const POLL_MS = 15000;

  const state = {
    token: null,
    timeZone: undefined,
    consultants: new Map(),
    visits: [],
    seen: new Set(),
    firstLoad: true,
    rotation: { queue: [], next: null },
  };

  // -------------------------------------------------------------------------------------------
  // Token: sessionStorage (gone when the tab closes) unless "remember" puts it in localStorage.

  function storedToken() {
    return sessionStorage.getItem(TOKEN_KEY) || localStorage.getItem(TOKEN_KEY);
  }

  function keepToken(token, remember) {
    sessionStorage.setItem(TOKEN_KEY, token);
    if (remember) localStorage.setItem(TOKEN_KEY, token);
    else localStorage.removeItem(TOKEN_KEY);
  }

  function forgetToken() {
    sessionStorage.removeItem(TOKEN_KEY);
    localStorage.removeItem(TOKEN_KEY);
    state.token = null;
  }

  class Unauthorized extends Error {}

  /** A staff API call; `{status, data}` for anything but 401/403, which sign out. */
  async function api(path, options = {}) {
    const headers = { Authorization: `Bearer ${state.token}` };
    if (options.body !== undefined) headers["Content-Type"] = "application/json";
    const response = await fetch(path, {
      method: options.method || "GET",
      headers,
      body: options.body === undefined ? undefined : JSON.stringify(options.body),
      cache: "no-store",
    });
    let data = null;
    const type = response.headers.get("content-type") || "";
    if (type.includes("json")) {
      try {
        data = await response.json();
      } catch (e) {
        data = null;
      }
    }
    // A read refused as "not staff" means the wrong token, like a 401.
    if (response.status === 401 || (response.status === 403 && !options.method)) {
      throw new Unauthorized(message(data) || `${response.status}`);
    }
    return { status: response.status, ok: response.ok, data, response };
  }

  function message(data) {
    return data && data.error && data.error.message;
  }

  /** An endpoint another part of the kiosk may not have yet: 404 means "not available". */
  function missing(r) {
    return r.status === 404 && r.data && r.data.error && r.data.error.code === "not_found";
  }

  // -------------------------------------------------------------------------------------------
  // Sign-in

  async function signIn(token, remember) {
    state.token = token;
    const r = await api("/api/v1/consultants");
    if (!r.ok) throw new Error(message(r.data) || `HTTP ${r.status}`);
    keepToken(token, remember);
    showApp();
  }

  function showSignIn(why) {
    forgetToken();
    $("app").hidden = true;
    $("signin").hidden = false;
    text("signin-error", why || "");
    $("token").value = "";
    $("token").focus();
  }

  $("signin-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    const token = $("token").value.trim();
    if (!token) return;
    text("signin-error", "");
    try {
      await signIn(token, $("remember").checked);
    } catch (err) {
      showSignIn(err instanceof Unauthorized
        ? `令牌无效，或不是员工设备的令牌 · ${err.message}`
        : `无法连接本机 · Cannot reach the kiosk: ${err.message}`);
    }
  });

  $("signout").addEventListener("click", () => showSignIn(""));

  // -------------------------------------------------------------------------------------------
  // Formatting

  const clockFmt = () => K.formatter(state.timeZone, { hour: "2-digit", minute: "2-digit" });
  const timeFmt = () => K.formatter(state.timeZone, { hour: "2-digit", minute: "2-digit", second: "2-digit" });
  const dateTimeFmt = () => K.formatter(state.timeZone, { month: "2-digit", day: "2-digit", hour: "2-digit", minute: "2-digit" });

  function at(iso, fmt) {
    if (!iso) return "—";
    const d = new Date(iso);
    return Number.isNaN(d.getTime()) ? String(iso) : (fmt || dateTimeFmt)().format(d);
  }

  function consultantName(id) {
    if (!id) return "";
    return state.consultants.get(id) || id;
  }

  function sourceLabel(source) {
    if (!source) return "";
    if (source.startsWith("handheld:")) return `手持机 ${source.slice(9)}`;
    return source;
  }

  function tierChip(tier) {
    if (!tier) return "";
    const names = TIERS[tier] || TIERS.normal;
    return el("span", { class: `chip ${tier}`, title: names[1] }, names[0]);
  }

  function bytes(n) {
    if (n === null || n === undefined) return "—";
    const units = ["B", "KB", "MB", "GB", "TB"];
    let v = Number(n);
    let i = 0;
    while (v >= 1024 && i < units.length - 1) {
      v /= 1024;
      i += 1;
    }
    return `${v.toFixed(v < 10 && i > 0 ? 1 : 0)} ${units[i]}`;
  }

  // -------------------------------------------------------------------------------------------
  // Visits

  function kindCell(v) {
    if (v.outcome === "welcome" || v.outcome === "broker_confirmed") {
      const chips = [];
      if (v.kind === "first") chips.push(el("span", { class: "chip first" }, "首访 First"));
      else if (v.kind === "revisit") chips.push(el("span", { class: "chip revisit" }, "复访 Revisit"));
      if (v.outcome === "broker_confirmed") chips.push(" ", el("span", { class: "chip ok" }, "确客 Broker"));
      if (v.public_pool) chips.push(" ", el("span", { class: "chip warn", title: "Public pool" }, "公海"));
      return chips;
    }
    if (v.outcome === "unknown") return el("span", { class: "chip warn" }, "未登记 Unknown");
    const reason = REASONS[v.reason] || v.reason || "Refused";
    const chip = el("span", { class: "chip bad", title: v.reason_detail || v.reason || "" }, `拒绝 ${reason}`);
    return v.reason_detail ? [chip, el("span", { class: "sub" }, v.reason_detail)] : chip;
  }

  const REASONS = {
    card_revoked: "已停用 Revoked",
    not_a_membership_card: "非会员卡 Not a member card",
    unknown_registration: "无报备 No registration",
    registration_expired: "报备过期 Expired",
    other_broker: "他人报备 Other broker",
  };

  function customerCell(v) {
    if (v.name_zh) {
      return [v.name_zh, el("span", { class: "sub" }, v.customer_id || "")];
    }
    return [el("span", { class: "muted" }, "未登记的卡"), el("span", { class: "sub mono" }, v.card || "")];
  }

  function matches(v, filter, query) {
    const counted = v.outcome === "welcome" || v.outcome === "broker_confirmed";
    if (filter === "counted" && !counted) return false;
    if (filter === "first" && !(counted && v.kind === "first")) return false;
    if (filter === "revisit" && !(counted && v.kind === "revisit")) return false;
    if (filter === "unknown" && v.outcome !== "unknown") return false;
    if (filter === "denied" && v.outcome !== "denied") return false;
    if (!query) return true;
    const hay = [v.name_zh, v.customer_id, v.consultant_name, v.consultant_id, v.source, v.card,
      v.broker_id, v.reason, consultantName(v.stand_in_for)].filter(Boolean).join(" ").toLowerCase();
    return hay.includes(query);
  }

  function renderVisits() {
    const filter = $("filter").value;
    const query = $("search").value.trim().toLowerCase();
    const rows = state.visits.filter((v) => matches(v, filter, query)).map((v) => {
      const fresh = !state.firstLoad && !state.seen.has(v.id);
      return el("tr", { class: fresh ? "fresh" : null, dataset: { id: v.id, outcome: v.outcome } },
        el("td", { class: "time" }, at(v.device_time, timeFmt)),
        el("td", { class: "customer" }, customerCell(v)),
        el("td", {}, tierChip(v.tier)),
        el("td", { class: "kind" }, kindCell(v)),
        el("td", { class: "consultant" }, v.consultant_name || consultantName(v.consultant_id) || "—",
          v.stand_in_for ? el("span", { class: "sub stand-in" }, `代接 for ${consultantName(v.stand_in_for)}`) : null),
        el("td", { class: "source" }, sourceLabel(v.source)),
        el("td", { class: "broker" }, v.broker_id || ""));
    });
    for (const v of state.visits) state.seen.add(v.id);
    state.firstLoad = false;
    $("visits").tBodies[0].replaceChildren(...rows);
    $("visits-empty").hidden = rows.length > 0;
    text("visits-empty", state.visits.length ? "没有符合条件的记录 · Nothing matches" : "今天还没有来访 · No visits yet today");
  }

  $("filter").addEventListener("change", renderVisits);
  $("search").addEventListener("input", renderVisits);

  async function loadVisits() {
    const r = await api("/api/v1/visits?limit=1000");
    if (!r.ok) return;
    state.visits = r.data.visits || [];
    renderVisits();
  }

  // -------------------------------------------------------------------------------------------
  // Counts and charts

  function countList(id, items, label) {
    const max = Math.max(1, ...items.map((i) => i.visits));
    const list = items.map((i) => el("li", {},
      el("span", { class: "name", title: label(i) }, label(i)),
      el("span", { class: "meter" }, meter(i.visits / max)),
      el("span", { class: "v" }, i.visits)));
    $(id).replaceChildren(...(list.length ? list : [el("li", { class: "muted" }, "—")]));
  }

  function meter(fraction) {
    const bar = el("span", {});
    bar.style.width = `${Math.round(fraction * 100)}%`;
    return bar;
  }

  async function loadStats() {
    const r = await api("/api/v1/stats");
    if (!r.ok) return;
    const s = r.data;
    text("t-visits", s.visits);
    text("t-first", s.first);
    text("t-revisit", s.revisit);
    text("t-unknown", s.unknown);
    text("t-denied", s.denied);
    SvgChart.bars($("chart-hours"), {
      labels: s.by_hour.map((_, h) => `${h}`),
      series: [{ name: "到访 Visits", values: s.by_hour, cls: "visits" }],
      labelEvery: 2,
      title: "今日到访时段 Arrivals by hour",
    });
    SvgChart.bars($("chart-days"), {
      labels: s.days.map((d) => d.day.slice(5).replace("-", "/")),
      series: [
        { name: "首访 First", values: s.days.map((d) => d.first), cls: "first" },
        { name: "复访 Revisit", values: s.days.map((d) => d.revisit), cls: "revisit" },
      ],
      labelEvery: 5,
      title: "近30天 Last 30 days",
    });
    countList("by-consultant", s.by_consultant, (c) => c.name || c.consultant_id || "未分配 Unassigned");
    countList("by-source", s.by_source, (c) => sourceLabel(c.source));
  }

  // -------------------------------------------------------------------------------------------
  // Rotation

  function renderRotation(view) {
    state.rotation = view;
    const ids = view.queue.map((s) => s.consultant_id);
    text("rot-next", view.next ? consultantName(view.next) : "—");
    const items = view.queue.map((seat, i) => {
      const name = seat.name || consultantName(seat.consultant_id);
      const acts = el("span", { class: "acts" },
        el("button", { type: "button", class: "small", title: "上移 Move up", "aria-label": `上移 ${name} · Move up`, disabled: i === 0, onclick: () => move(ids, i, -1) }, "↑"),
        el("button", { type: "button", class: "small", title: "下移 Move down", "aria-label": `下移 ${name} · Move down`, disabled: i === ids.length - 1, onclick: () => move(ids, i, 1) }, "↓"),
        seat.busy ? el("button", { type: "button", class: "small free", onclick: () => rotate("free", seat.consultant_id) }, "空闲 Free") : null,
        el("button", { type: "button", class: "small out", onclick: () => rotate("check-out", seat.consultant_id) }, "签退 Out"));
      return el("li", { class: seat.consultant_id === view.next ? "is-next" : null, dataset: { id: seat.consultant_id, busy: seat.busy ? "1" : "0" } },
        el("span", { class: "pos" }, i + 1),
        el("span", { class: "who" }, name, " ",
          seat.busy ? el("span", { class: "chip warn" }, "接待中 Busy") : el("span", { class: "chip ok" }, "空闲 Free")),
        acts);
    });
    $("rotation").replaceChildren(...items);
    $("rotation-empty").hidden = items.length > 0;
    const off = [...state.consultants.entries()].filter(([id]) => !ids.includes(id));
    const select = $("checkin-select");
    const keep = select.value;
    select.replaceChildren(...(off.length
      ? off.map(([id, name]) => el("option", { value: id }, `${name} (${id})`))
      : [el("option", { value: "" }, "全员已签到 · All on duty")]));
    if (off.some(([id]) => id === keep)) select.value = keep;
    select.disabled = off.length === 0;
    $("checkin-form").querySelector("button").disabled = off.length === 0;
  }

  async function loadRotation() {
    const r = await api("/api/v1/rotation");
    if (r.ok) renderRotation(r.data);
  }

  async function rotate(action, consultantId) {
    text("rotation-error", "");
    const r = await api(`/api/v1/rotation/${action}`, { method: "POST", body: { consultant_id: consultantId } });
    if (r.ok) renderRotation(r.data);
    else text("rotation-error", message(r.data) || `HTTP ${r.status}`);
  }

  async function move(ids, i, by) {
    const order = ids.slice();
    const j = i + by;
    [order[i], order[j]] = [order[j], order[i]];
    text("rotation-error", "");
    const r = await api("/api/v1/rotation/reorder", { method: "POST", body: { order } });
    if (r.ok) renderRotation(r.data);
    else text("rotation-error", message(r.data) || `HTTP ${r.status}`);
  }

  $("checkin-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const id = $("checkin-select").value;
    if (id) rotate("check-in", id);
  });

  async function loadConsultants() {
    const r = await api("/api/v1/consultants");
    if (!r.ok) return;
    state.consultants = new Map(r.data.consultants.map((c) => [c.id, c.name]));
  }

  // -------------------------------------------------------------------------------------------
  // Alerts (another part of the kiosk serves them; "not available" until it does)

  async function loadAlerts() {
    const r = await api("/api/v1/alerts?state=unacked");
    const na = missing(r);
    $("alerts-na").hidden = !na;
    if (na || !r.ok) {
      $("alerts").replaceChildren();
      $("alerts-empty").hidden = true;
      return;
    }
    const list = Array.isArray(r.data) ? r.data : r.data.alerts || [];
    const items = list.map((a) => {
      const who = typeof a.customer === "string" ? a.customer : (a.customer && (a.customer.name_zh || a.customer.name)) || "";
      return el("li", { dataset: { id: a.id } },
        el("span", { class: "main" },
          `${consultantName(a.consultant_id)} · ${who} `, tierChip(a.tier),
          el("span", { class: "sub" }, `${at(a.at || a.created_at)} · ${ALERT_REASONS[a.reason] || a.reason || a.kind || ""}`)),
        el("button", { type: "button", class: "small", onclick: () => ack(a.id) }, "确认 Ack"));
    });
    $("alerts").replaceChildren(...items);
    $("alerts-empty").hidden = items.length > 0;
  }

  const ALERT_REASONS = {
    welcome: "接待 Welcome",
    owner: "客户到访（代接）Owner",
    manager: "金卡到访 Manager",
    unassigned: "无人接待 Unassigned",
    escalation: "超时升级 Escalation",
  };

  async function ack(id) {
    await api(`/api/v1/alerts/${encodeURIComponent(id)}/ack`, { method: "POST" });
    loadAlerts();
  }

  // -------------------------------------------------------------------------------------------
  // Card issuing (another part of the kiosk serves it; "not available" until it does)

  async function loadCards() {
    const unbound = await api("/api/v1/cards/unbound?limit=20");
    const na = missing(unbound);
    $("cards-na").hidden = !na;
    $("cards-body").hidden = na;
    if (na || !unbound.ok) return;
    const cards = unbound.data.cards || [];
    $("unbound").replaceChildren(...cards.map((c) => el("li", { dataset: { card: c.card } },
      el("span", { class: "main" }, el("span", { class: "mono" }, c.card),
        el("span", { class: "sub" }, `${c.taps} 次 taps · ${at(c.last_seen)} · ${sourceLabel(c.source)}`)),
      el("button", { type: "button", class: "small primary", onclick: () => openBind(c.card) }, "发卡 Issue"))));
    $("unbound-empty").hidden = cards.length > 0;
    const changes = await api("/api/v1/cards/changes?limit=10");
    if (!changes.ok) return;
    const list = Array.isArray(changes.data) ? changes.data : changes.data.changes || [];
    const chip = { pending: ["warn", "待同步 Pending"], accepted: ["ok", "已接受 Accepted"], rejected: ["bad", "被拒 Rejected"] };
    $("changes").replaceChildren(...list.map((c) => {
      const [cls, label] = chip[c.status] || ["", c.status || ""];
      return el("li", { dataset: { card: c.card, status: c.status } },
        el("span", { class: "main" }, `${c.op === "revoke" ? "挂失 Revoke" : "绑定 Bind"} `, el("span", { class: "mono" }, c.card),
          el("span", { class: "sub" }, [c.customer_id, at(c.at), c.reason].filter(Boolean).join(" · "))),
        el("span", { class: `chip ${cls}` }, label));
    }));
    $("changes-empty").hidden = list.length > 0;
  }

  function bindMode() {
    return document.querySelector("input[name=mode]:checked").value;
  }

  function openBind(card) {
    $("bind-form").reset();
    $("bind-form").dataset.card = card;
    $("bind-form").dataset.id = K.uuid7();
    text("bind-card", card);
    text("bind-error", "");
    $("bind-existing").hidden = false;
    $("bind-new").hidden = true;
    $("bind-dialog").showModal();
    $("bind-customer").focus();
  }

  for (const radio of document.querySelectorAll("input[name=mode]")) {
    radio.addEventListener("change", () => {
      $("bind-existing").hidden = bindMode() !== "existing";
      $("bind-new").hidden = bindMode() !== "new";
    });
  }

  // The surname is what the screen shows: offer the name's first character.
  $("new-name").addEventListener("input", () => {
    const name = $("new-name").value.trim();
    if (name && !$("new-surname").dataset.touched) $("new-surname").value = name.slice(0, 1);
  });
  $("new-surname").addEventListener("input", () => { $("new-surname").dataset.touched = "1"; });
  $("bind-cancel").addEventListener("click", () => $("bind-dialog").close());

  $("bind-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    const form = $("bind-form");
    const body = { id: form.dataset.id, card: form.dataset.card };
    if (bindMode() === "existing") {
      body.customer_id = $("bind-customer").value.trim();
      if (!body.customer_id) return text("bind-error", "请填写客户编号 · Enter the customer's id");
    } else {
      if (!$("new-consent").checked) return text("bind-error", "需要客户同意隐私声明 · The customer's consent is required");
      body.new_customer = {
        name: $("new-name").value.trim(),
        surname: $("new-surname").value.trim(),
        title: $("new-title").value,
        phone: $("new-phone").value.trim(),
        source: $("new-source").value,
        consent: true,
      };
    }
    $("bind-submit").disabled = true;
    try {
      const r = await api("/api/v1/cards/bind", { method: "POST", body });
      if (r.ok) {
        $("bind-dialog").close();
        form.reset();
        delete $("new-surname").dataset.touched;
        refreshAll();
      } else {
        text("bind-error", message(r.data) || `HTTP ${r.status}`);
      }
    } finally {
      $("bind-submit").disabled = false;
    }
  });

  $("revoke-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    const body = { id: K.uuid7(), card: $("revoke-card").value.trim() };
    const reason = $("revoke-reason").value.trim();
    if (reason) body.reason = reason;
    const r = await api("/api/v1/cards/revoke", { method: "POST", body });
    if (r.ok) {
      $("revoke-form").reset();
      text("revoke-msg", "");
      refreshAll();
    } else {
      text("revoke-msg", message(r.data) || `HTTP ${r.status}`);
    }
  });

  // -------------------------------------------------------------------------------------------
  // System

  function facts(id, pairs) {
    $(id).replaceChildren(...pairs.flatMap(([k, v]) => [el("dt", {}, k), el("dd", {}, v)]));
  }

  async function loadStatus() {
    const r = await fetch("/api/v1/status", { cache: "no-store" });
    if (!r.ok) return;
    const s = await r.json();
    state.timeZone = s.time_zone || state.timeZone;
    if (!$("export-from").value) {
      const today = K.officeDay(state.timeZone);
      $("export-from").value = today;
      $("export-to").value = today;
    }
    text("office", s.office_name);
    text("kiosk-id", s.kiosk_id);
    document.title = `${s.office_name} · 前台控制台`;
    $("problems").replaceChildren(...(s.problems || []).map((p) => el("li", {}, p)));
    const readers = s.readers || [];
    $("readers").replaceChildren(...readers.map((rd) => el("li", {},
      el("span", { class: "main" }, el("span", { class: `dot ${rd.connected ? "up" : "down"}` }), rd.name,
        el("span", { class: "sub" }, `${rd.kind} · ${rd.connected ? "已连接 connected" : rd.problem || "未连接 disconnected"} · 最近刷卡 last tap ${at(rd.last_tap)}`)),
      el("span", { class: `chip ${rd.connected ? "ok" : "warn"}` }, rd.connected ? "在线 Up" : "离线 Down"))));
    $("readers-empty").hidden = readers.length > 0;
    const sync = s.sync || {};
    if (sync.configured) {
      facts("sync", [
        ["云端 Hub", sync.hub || "—"],
        ["连接 Reachable", sync.hub_reachable === false ? "否 No" : sync.hub_reachable ? "是 Yes" : "—"],
        ["待同步 Backlog", `${sync.backlog ?? 0}`],
        ["最早未同步 Oldest unsent", at(sync.oldest_unsent_at)],
        ["最近上传 Last push", at(sync.last_push_at)],
        ["最近下载 Last pull", at(sync.last_pull_at)],
        ["错误 Last error", sync.last_error || "—"],
      ]);
    } else {
      facts("sync", [["云端 Hub", "未配置（单机）· Not configured"], ["待同步 Backlog", `${sync.backlog ?? s.outbox_backlog ?? 0}`]]);
    }
    const q = (sync.quarantine && sync.quarantine.latest) || [];
    $("quarantine").replaceChildren(...q.map((item) => el("li", {},
      el("span", { class: "main" }, `#${item.seq} ${item.kind}`, el("span", { class: "sub" }, `${at(item.at)} · ${item.reason}`)),
      el("span", { class: "chip bad" }, "被拒 Rejected"))));
    $("quarantine-empty").hidden = q.length > 0;
    state.version = s.version;
  }

  async function loadSystem() {
    const r = await api("/api/v1/system");
    if (!r.ok) return;
    const m = r.data;
    facts("machine", [
      ["版本 Version", m.version],
      ["数据 Data", m.data_dir],
      ["数据库 Database", bytes(m.database_bytes)],
      ["磁盘可用 Disk free", m.disk_total_bytes ? `${bytes(m.disk_available_bytes)} / ${bytes(m.disk_total_bytes)}` : "—"],
    ]);
  }

  // -------------------------------------------------------------------------------------------
  // Export

  $("export-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    text("export-error", "");
    const from = $("export-from").value;
    const to = $("export-to").value;
    const r = await fetch(`/api/v1/visits.csv?from=${encodeURIComponent(from)}&to=${encodeURIComponent(to)}`, {
      headers: { Authorization: `Bearer ${state.token}` },
      cache: "no-store",
    });
    if (!r.ok) {
      let why = `HTTP ${r.status}`;
      try {
        why = message(await r.json()) || why;
      } catch (err) { /* not JSON */ }
      text("export-error", why);
      return;
    }
    const blob = await r.blob();
    const url = URL.createObjectURL(blob);
    const link = el("a", { href: url, download: `visits-${from}_${to}.csv` });
    document.body.append(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(url), 10000);
  });

  // -------------------------------------------------------------------------------------------
  // Refresh

  let refreshing = null;
  let again = false;

  /** Everything, once at a time; a request during a refresh runs one more after it. */
  async function refreshAll() {
    if (refreshing) {
      again = true;
      return refreshing;
    }
    refreshing = (async () => {
      try {
        await loadStatus();
        if (!state.consultants.size) await loadConsultants();
        await Promise.all([loadVisits(), loadStats(), loadRotation(), loadAlerts(), loadCards(), loadSystem()]);
        document.body.dataset.loaded = String(Date.now());
      } catch (err) {
        if (err instanceof Unauthorized) showSignIn(`令牌已失效 · The token is no longer valid: ${err.message}`);
      } finally {
        refreshing = null;
      }
      if (again) {
        again = false;
        await refreshAll();
      }
    })();
    return refreshing;
  }

  let soon = null;
  function refreshSoon() {
    clearTimeout(soon);
    soon = setTimeout(refreshAll, 100);
  }

  function tick() {
    text("clock", clockFmt().format(new Date()));
  }

  let started = false;
  function showApp() {
    $("signin").hidden = true;
    $("app").hidden = false;
    state.consultants = new Map();
    refreshAll();
    if (started) return;
    started = true;
    tick();
    setInterval(tick, 15000);
    setInterval(() => { if (state.token) refreshAll(); }, POLL_MS);
    K.stream("/api/v1/events", {
      greeting: () => { if (state.token) refreshSoon(); },
      reader: () => { if (state.token) refreshSoon(); },
    }, () => {
      $("live").classList.add("up");
      text("live-text", "实时 · Live");
      document.body.dataset.link = "up";
      if (state.token) refreshAll();
    }, () => {
      $("live").classList.remove("up");
      text("live-text", "重新连接中 · Reconnecting");
      document.body.dataset.link = "down";
    });
  }

  // The office's name on the sign-in card, from the public status.
  fetch("/api/v1/status", { cache: "no-store" }).then((r) => r.json()).then((s) => {
    state.timeZone = s.time_zone;
    text("signin-office", s.office_name);
  }).catch(() => {});

  state.token = storedToken();
  if (state.token) {
    showApp();
  } else {
    showSignIn("");
  }
})();
