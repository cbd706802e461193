// The grafos dashboard: plain JavaScript, no build step, nothing from elsewhere.
//
// The bearer token lives in sessionStorage (this tab only) and travels only in the
// Authorization header: never in a URL, never logged. Every view is drawn from
// the JSON API with DOM nodes and textContent (never innerHTML), because causes, hold
// reasons and audit data are free text.
"use strict";

(() => {
  const TOKEN_KEY = "grafos.dashboard.token";
  const POLL_MS = 500; // well inside the 1 s the views promise
  const MISSING_ROUTE_RETRY_MS = 30000; // a route this server lacks is asked again rarely
  const VERIFY_EVERY_MS = 2000; // verify walks the whole chain: not on every poll
  const AUDIT_TAIL = 25;
  const AUDIT_BACKLOG = 20000; // records read at sign-in for the hour's chart
  const ENDED_KEPT = 20;
  // The watch covers the caller's own leases; capacity, audit and others' leases still
  // change without an event, so a watch never waits longer than this.
  const WATCH_TIMEOUT_S = 0.5;
  const HOUR_MS = 3600 * 1000;

  const $ = (id) => document.getElementById(id);

  // ---------------------------------------------------------------- DOM building

  function h(tag, attrs, ...children) {
    const el = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (key === "class") el.className = value;
      else if (key === "text") el.textContent = value;
      else if (key.startsWith("on")) el.addEventListener(key.slice(2), value);
      else el.setAttribute(key, value === true ? "" : String(value));
    }
    for (const child of children.flat()) {
      if (child === null || child === undefined || child === false) continue;
      el.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return el;
  }

  function table(caption, headers, rows, attrs) {
    return h(
      "table", attrs || {},
      caption ? h("caption", { text: caption }) : null,
      h("thead", {}, h("tr", {}, headers.map((x) => {
        const [label, cls] = Array.isArray(x) ? x : [x, null];
        return h("th", { scope: "col", class: cls, text: label });
      }))),
      h("tbody", {}, rows),
    );
  }

  // Replace a container's content, keeping keyboard focus on the "same" control.
  function replace(container, ...nodes) {
    const active = document.activeElement;
    const key = active && container.contains(active) ? active.dataset.focusKey : null;
    container.replaceChildren(...nodes.flat().filter((n) => n));
    if (key) {
      const again = container.querySelector(`[data-focus-key="${CSS.escape(key)}"]`);
      if (again) again.focus();
    }
  }

  function shortId(id) {
    return id ? id.slice(0, 8) + "…" : "";
  }

  function idCell(id) {
    return h("td", {}, h("code", { title: id, "aria-label": `id ${id}`, text: shortId(id) }));
  }

  function plural(n, word) {
    return `${n} ${word}${n === 1 ? "" : "s"}`;
  }

  function seconds(value) {
    if (value === null || value === undefined) return "";
    if (value >= 3600) return `${(value / 3600).toFixed(1)} h`;
    if (value >= 120) return `${Math.floor(value / 60)} min ${Math.round(value % 60)} s`;
    return `${value.toFixed(1)} s`;
  }

  // A countdown: its deadline is a local time, kept fresh by the ticker below.
  function countdown(inSeconds, receivedAt, label) {
    const el = h("span", { class: "countdown", role: "timer", "aria-label": label });
    el.dataset.deadline = String(receivedAt + inSeconds * 1000);
    tickOne(el, performance.now());
    return el;
  }

  function tickOne(el, now) {
    const left = Math.max(0, (Number(el.dataset.deadline) - now) / 1000);
    el.textContent = left > 0 ? seconds(left) : "due";
  }

  function tickAll() {
    const now = performance.now();
    for (const el of document.querySelectorAll(".countdown")) tickOne(el, now);
  }

  // ---------------------------------------------------------------- the API

  class ApiError extends Error {
    constructor(status, code, message, method, path) {
      super(message);
      this.status = status;
      this.code = code;
      this.method = method;
      this.path = path;
    }

    // A route this server does not have (yet), as opposed to a missing lease.
    get missingRoute() {
      return (this.status === 404 && this.code === "not_found") || this.status === 405;
    }

    describe() {
      return this.status ? `${this.status} ${this.code}: ${this.message}` : this.message;
    }
  }

  const api = {
    token: null,
    serverOffsetMs: 0, // the server's wall clock minus ours, from the Date header

    async call(method, path, body) {
      const headers = { Accept: "application/json" };
      if (this.token) headers.Authorization = `Bearer ${this.token}`;
      const init = { method, headers, cache: "no-store", credentials: "omit" };
      if (body !== undefined) {
        headers["Content-Type"] = "application/json";
        init.body = JSON.stringify(body);
      }
      let response;
      const sent = Date.now();
      try {
        response = await fetch(path, init);
      } catch (err) {
        throw new ApiError(0, "unreachable",
          `the scheduler at ${location.origin} did not answer (${err.message})`, method, path);
      }
      const date = Date.parse(response.headers.get("Date") || "");
      if (!Number.isNaN(date)) {
        const skew = date - (sent + Date.now()) / 2;
        // The Date header has 1 s resolution: only a real skew is worth correcting.
        this.serverOffsetMs = Math.abs(skew) > 2000 ? skew : 0;
      }
      const text = await response.text();
      let data = null;
      try {
        data = text ? JSON.parse(text) : null;
      } catch (_) {
        data = null;
      }
      if (!response.ok) {
        const code = (data && data.error) || `http_${response.status}`;
        const message = (data && data.message) || response.statusText || text.slice(0, 200);
        throw new ApiError(response.status, code, message, method, path);
      }
      return data;
    },

    serverNow() {
      return Date.now() + this.serverOffsetMs;
    },
  };

  // ---------------------------------------------------------------- change feeds
  //
  // A feed tells the refresher when to look again: wait() resolves when something may
  // have changed. PollFeed waits a fixed interval. WatchFeed long-polls GET /v1/watch
  // (a route planned for the grace issue) and resolves on its first event or at its
  // 0.5 s timeout, so the views stay within 1 s either way. The refresher does not care
  // which one it has.

  class PollFeed {
    constructor(ms) {
      this.ms = ms;
      this.name = `polling every ${ms} ms`;
    }

    // A fixed cadence: the time the last refresh took counts toward the interval.
    wait(refreshStarted) {
      const left = this.ms - (performance.now() - refreshStarted);
      return new Promise((resolve) => setTimeout(resolve, Math.max(50, left)));
    }
  }

  class WatchFeed {
    constructor(cursor) {
      this.cursor = cursor;
      this.name = "watching GET /v1/watch";
    }

    async wait() {
      const timeout = `timeout=${WATCH_TIMEOUT_S}`;
      const query = this.cursor ? `cursor=${encodeURIComponent(this.cursor)}&${timeout}` : timeout;
      const answer = await api.call("GET", `/v1/watch?${query}`);
      if (answer && answer.cursor) this.cursor = answer.cursor;
    }
  }

  async function chooseFeed() {
    try {
      const answer = await api.call("GET", "/v1/watch?timeout=0");
      if (answer && Array.isArray(answer.events)) return new WatchFeed(answer.cursor);
    } catch (_) {
      // No watch route on this server (404) or not for this principal: poll instead.
    }
    return new PollFeed(POLL_MS);
  }

  // ---------------------------------------------------------------- state

  const state = {
    me: null, // {principal, admin}
    feed: null,
    running: false,
    generation: 0, // bumped at sign-out, so a loop that outlives its session stops
    active: new Map(), // lease id -> view, from the last refresh
    ended: [], // views of leases seen ending, newest first
    workLost: new Map(), // job -> {records, seconds, leases}
    workLostSeen: false,
    audit: { loaded: false, lastSeq: 0, records: [], verifiedAt: 0, verifiedSeq: -1, verifyMs: 0, verifying: false },
    missing: new Map(), // route -> time it last answered 404/405
    lastRefresh: 0,
  };

  function routeMissing(route) {
    const at = state.missing.get(route);
    return at !== undefined && Date.now() - at < MISSING_ROUTE_RETRY_MS;
  }

  // ---------------------------------------------------------------- sign-in

  function showSignIn(message) {
    $("signin").hidden = false;
    $("dashboard").hidden = true;
    $("signout").hidden = true;
    $("whoami").hidden = true;
    $("freshness").textContent = "";
    $("signin-error").textContent = message || "";
    $("token").focus();
  }

  function explainSignInError(err) {
    if (err.status === 401) {
      return "This token was not accepted (401: " + err.message + "). " +
        "Check that you pasted the whole admin or worker token, with nothing added.";
    }
    if (err.status === 0) return `Cannot sign in: ${err.message}.`;
    return `Cannot sign in: ${err.describe()}.`;
  }

  async function signIn(token, remembered) {
    api.token = token;
    let me;
    try {
      me = await api.call("GET", "/v1/whoami");
    } catch (err) {
      api.token = null;
      if (remembered) sessionStorage.removeItem(TOKEN_KEY);
      showSignIn(remembered && err.status === 401
        ? "The token saved in this tab is no longer accepted (401). Sign in again."
        : explainSignInError(err));
      return;
    }
    sessionStorage.setItem(TOKEN_KEY, token);
    state.me = me;
    $("token").value = "";
    $("signin-error").textContent = "";
    $("signin").hidden = true;
    $("dashboard").hidden = false;
    $("signout").hidden = false;
    const who = $("whoami");
    who.hidden = false;
    who.textContent = me.admin
      ? `Signed in as ${me.principal} (admin): everything is shown.`
      : `Signed in as worker ${me.principal}: only its own leases and tickets are shown.`;
    for (const id of ["audit-copy", "audit-verify-now"]) $(id).hidden = !me.admin;
    $("audit-head").parentElement.hidden = !me.admin;
    if (!me.admin) {
      const adminOnly = "The audit log is the admin's: sign in as the admin to see it.";
      $("audit-verify").textContent = adminOnly;
      $("rates-summary").textContent = "The rates come from the audit log: sign in as the admin to see them.";
    }
    $("rates-table").parentElement.hidden = !me.admin;
    renderEnded();
    $("main").focus();
    start();
  }

  function signOut(message) {
    sessionStorage.removeItem(TOKEN_KEY);
    api.token = null;
    state.me = null;
    state.generation += 1;
    state.running = false;
    state.active = new Map();
    state.ended = [];
    state.workLost = new Map();
    state.workLostSeen = false;
    state.audit = { loaded: false, lastSeq: 0, records: [], verifiedAt: 0, verifiedSeq: -1, verifyMs: 0, verifying: false };
    state.missing = new Map();
    for (const id of ["capacity", "preemptions", "leases", "ended", "tickets", "work-lost",
      "rates-chart", "rates-summary", "rates-table", "audit-tail", "audit-verify", "outcome-log"]) {
      $(id).replaceChildren();
    }
    $("outcome").textContent = "No action taken yet.";
    showSignIn(message);
  }

  // ---------------------------------------------------------------- refresh loop

  async function start() {
    const generation = state.generation;
    state.running = true;
    state.feed = await chooseFeed();
    while (state.running && generation === state.generation) {
      const started = performance.now();
      await refresh(generation);
      if (!state.running || generation !== state.generation) return;
      try {
        await state.feed.wait(started);
      } catch (_) {
        state.feed = new PollFeed(POLL_MS); // the watch failed: poll from now on
      }
    }
  }

  async function refresh(generation) {
    const started = performance.now();
    const jobs = [refreshLeases(), refreshTickets()];
    if (state.me.admin) jobs.push(refreshCapacity(), refreshAudit());
    const results = await Promise.allSettled(jobs);
    if (generation !== state.generation) return;
    const unauthorised = results.find((r) => r.status === "rejected" && r.reason.status === 401);
    if (unauthorised) {
      signOut("The scheduler no longer accepts this token (401). Sign in again.");
      return;
    }
    const failed = results.find((r) => r.status === "rejected");
    state.lastRefresh = Date.now();
    $("freshness").textContent = failed
      ? `Update failed: ${describe(failed.reason)}`
      : `Updated ${new Date().toLocaleTimeString()} in ${Math.round(performance.now() - started)} ms (${state.feed.name})`;
    if (!state.me.admin) renderWorkerCapacity();
    renderWorkLost();
  }

  function describe(err) {
    return err instanceof ApiError ? err.describe() : String(err);
  }

  // ---------------------------------------------------------------- leases

  async function fetchActiveLeases() {
    const leases = [];
    let after = null;
    for (;;) {
      const query = `state=active&limit=1000${after ? `&after=${after}` : ""}`;
      const page = await api.call("GET", `/v1/leases?${query}`);
      leases.push(...page.leases);
      if (!page.next_after) return leases;
      after = page.next_after;
    }
  }

  async function refreshLeases() {
    const receivedAt = performance.now();
    const leases = await fetchActiveLeases();
    const now = new Map(leases.map((l) => [l.lease_id, l]));
    const gone = [...state.active.keys()].filter((id) => !now.has(id));
    state.active = now;
    renderLeases(leases, receivedAt);
    renderPreemptions(leases, receivedAt);
    if (gone.length) await recordEnded(gone);
  }

  async function recordEnded(ids) {
    const views = await Promise.all(ids.map((id) =>
      api.call("GET", `/v1/leases/${id}`).catch(() => null)));
    for (const view of views) {
      if (!view) continue;
      state.ended.unshift(view);
      noteWorkLost(view);
    }
    state.ended = state.ended.slice(0, ENDED_KEPT);
    renderEnded();
  }

  function reasonBadges(reasons) {
    return (reasons || []).filter((r) => r !== "operator_hold").map((r) =>
      h("span", { class: r === "checkpoint_in_progress" ? "badge flush" : "badge",
        text: r === "checkpoint_in_progress" ? "flush in progress" : r.replaceAll("_", " ") }));
  }

  // Holds come from the operators issue: shown when the lease view carries them.
  function holdBadges(lease, receivedAt) {
    const holds = [];
    const raw = lease.holds ?? (lease.hold ? [lease.hold] : []);
    for (const hold of Array.isArray(raw) ? raw : [raw]) {
      if (!hold) continue;
      const reason = typeof hold === "string" ? hold : (hold.reason || "hold");
      const badge = h("span", { class: "badge hold" }, `held: ${reason}`);
      if (hold && typeof hold.expires_in === "number") {
        badge.append(" (", countdown(hold.expires_in, receivedAt, `hold on ${lease.job} expires in`), ")");
      }
      holds.push(badge);
    }
    if (!holds.length && (lease.reasons || []).includes("operator_hold")) {
      holds.push(h("span", { class: "badge hold", text: "operator hold" }));
    }
    return holds;
  }

  function actionButtons(lease) {
    if (!state.me.admin) return h("td", { class: "muted", text: "admin only" });
    const label = `lease ${shortId(lease.lease_id)} of job ${lease.job}`;
    const button = (action, text) => h("button", {
      type: "button",
      "data-focus-key": `${action}:${lease.lease_id}`,
      "data-action": action,
      "aria-label": `${text} ${label}`,
      onclick: () => openAction(action, lease),
      text,
    });
    return h("td", { class: "actions" },
      button("preempt", "Preempt"), " ", button("fence", "Fence"), " ",
      button("hold", "Hold"), " ", button("unhold", "Unhold"));
  }

  function renderLeases(leases, receivedAt) {
    const container = $("leases");
    if (!leases.length) {
      replace(container, h("p", { class: "muted", text: "No active lease." }));
      return;
    }
    const byPriority = new Map();
    for (const lease of leases) {
      if (!byPriority.has(lease.priority)) byPriority.set(lease.priority, []);
      byPriority.get(lease.priority).push(lease);
    }
    const groups = [...byPriority.keys()].sort((a, b) => b - a).map((priority) => {
      const group = byPriority.get(priority);
      const slots = group.reduce((n, l) => n + l.slots, 0);
      const rows = group.map((lease) => {
        const pending = lease.pending_preemption;
        return h("tr", { "data-lease-id": lease.lease_id, "data-job": lease.job },
          h("td", { text: lease.job }),
          h("td", { text: lease.holder }),
          idCell(lease.lease_id),
          h("td", { class: "num", text: lease.fencing_token }),
          h("td", { text: lease.state }),
          h("td", { class: "num", text: lease.slots }),
          h("td", { class: "num" },
            countdown(lease.expires_in, receivedAt, `lease of ${lease.job} expires in`)),
          h("td", {}, reasonBadges(lease.reasons)),
          h("td", {}, holdBadges(lease, receivedAt)),
          h("td", {}, pending
            ? [h("span", { class: "badge pending", text: "preemption pending" }), " forced in ",
              countdown(pending.deadline_in, receivedAt, `preemption of ${lease.job} forced in`)]
            : null),
          actionButtons(lease));
      });
      return table(
        `Priority ${priority}: ${group.length} lease${group.length === 1 ? "" : "s"}, ${slots} slot${slots === 1 ? "" : "s"}`,
        ["Job", "Holder", "Lease", ["Fencing token", "num"], "State", ["Slots", "num"],
          ["Expires in", "num"], "In flight", "Holds", "Preemption", "Actions"],
        rows, { class: "leases", "data-priority": priority });
    });
    replace(container, groups);
  }

  function renderPreemptions(leases, receivedAt) {
    const pending = leases.filter((l) => l.pending_preemption);
    if (!pending.length) {
      replace($("preemptions"), h("p", { class: "muted", text: "No preemption is waiting." }));
      return;
    }
    pending.sort((a, b) => a.pending_preemption.deadline_in - b.pending_preemption.deadline_in);
    const rows = pending.map((lease) => {
      const p = lease.pending_preemption;
      const why = (p.reasons || []).length ? p.reasons.map((r) => r.replaceAll("_", " ")).join(", ")
        : "waiting for the holder (grace)";
      return h("tr", { "data-lease-id": lease.lease_id },
        h("td", { text: lease.job }),
        h("td", { text: lease.holder }),
        idCell(lease.lease_id),
        h("td", { class: "num", text: lease.priority }),
        h("td", { text: p.cause }),
        h("td", { text: why }),
        h("td", { text: new Date(p.requested_at).toLocaleTimeString() }),
        h("td", { class: "num" },
          countdown(p.deadline_in, receivedAt, `preemption of ${lease.job} forced in`)));
    });
    replace($("preemptions"), table(null,
      ["Job", "Holder", "Lease", ["Priority", "num"], "Cause", "Deferred by", "Requested",
        ["Forced in", "num"]], rows, { id: "preemptions-table" }));
  }

  const END_KINDS = new Set(["release", "expire", "fence", "preemption_executed",
    "preemption_forced", "preemption_cooperative"]);

  // When and why a lease ended: from its audit record (the admin), or from the lease
  // view's own fields where the server sends them.
  function endCells(lease) {
    let record = null;
    for (const r of state.audit.records) {
      if (r.lease_id === lease.lease_id && END_KINDS.has(r.kind)) record = r;
    }
    const at = record ? record.time : lease.ended_at;
    let cause = lease.end_cause ?? "";
    if (record) cause = record.data && record.data.cause ? `${record.kind}: ${record.data.cause}` : record.kind;
    return [h("td", { text: at ? new Date(at).toLocaleTimeString() : "" }), h("td", { text: cause })];
  }

  function renderEnded() {
    if (!state.ended.length) {
      replace($("ended"), h("p", { class: "muted", text: "No lease has ended since this page opened." }));
      return;
    }
    const rows = state.ended.map((lease) => h("tr", { "data-lease-id": lease.lease_id },
      h("td", { text: lease.job }),
      h("td", { text: lease.holder }),
      idCell(lease.lease_id),
      h("td", { class: "num", text: lease.fencing_token }),
      h("td", { text: lease.state }),
      ...endCells(lease)));
    replace($("ended"), table(null,
      ["Job", "Holder", "Lease", ["Fencing token", "num"], "State", "Ended", "Cause"], rows,
      { id: "ended-table" }));
  }

  // ---------------------------------------------------------------- capacity

  async function refreshCapacity() {
    const c = await api.call("GET", "/v1/capacity");
    const rows = c.by_priority.map((p) => h("tr", {},
      h("td", { class: "num", text: p.priority }),
      h("td", { class: "num", text: p.leases }),
      h("td", { class: "num", text: p.slots }),
      h("td", { class: "num", text: `${Math.round((100 * p.slots) / c.capacity)} %` })));
    replace($("capacity"),
      h("p", { id: "capacity-summary" },
        `${c.used} of ${c.capacity} slots used, ${c.free} free; `,
        `${c.tickets_pending} ticket${c.tickets_pending === 1 ? "" : "s"} waiting for ${c.tickets_slots} slot${c.tickets_slots === 1 ? "" : "s"}.`),
      h("progress", { class: "capacity-bar", max: c.capacity, value: c.used,
        "aria-label": `capacity used: ${c.used} of ${c.capacity} slots` }),
      rows.length ? table("Used, by priority", [["Priority", "num"], ["Leases", "num"],
        ["Slots", "num"], ["Share of capacity", "num"]], rows) : null);
  }

  function renderWorkerCapacity() {
    let slots = 0;
    for (const lease of state.active.values()) slots += lease.slots;
    replace($("capacity"), h("p", { id: "capacity-summary" },
      `Your leases hold ${slots} slot${slots === 1 ? "" : "s"}. `,
      h("span", { class: "muted", text: "The total capacity is shown to the admin." })));
  }

  // ---------------------------------------------------------------- tickets

  // GET /v1/tickets comes with the operators issue; until then the section says so.
  const TICKET_FIELDS = new Set(["ticket_id", "job", "holder", "priority", "slots", "ttl",
    "requested_at", "status"]);

  // Whatever the server says about why a ticket waits, as text: ids shortened, times
  // in seconds, nested lists and objects flattened.
  function whyValue(key, value) {
    if (value === null || value === undefined) return "";
    if (Array.isArray(value)) return value.length ? value.map((v) => whyValue(key, v)).join(", ") : "none";
    if (typeof value === "object") {
      return Object.entries(value).filter(([, v]) => v !== null && v !== undefined)
        .map(([k, v]) => whyPart(k, v)).join(" ");
    }
    if (typeof value === "number" && key.endsWith("_in")) return seconds(value);
    if (typeof value === "string" && /^[0-9a-f]{32}$/.test(value)) return shortId(value);
    return String(value);
  }

  function whyPart(key, value) {
    const text = whyValue(key, value);
    if (key === "why" || key === "waiting" || key === "reason") return text;
    return `${key.replaceAll("_", " ")} ${typeof value === "object" && value !== null ? `(${text})` : text}`;
  }

  function whyText(ticket) {
    const parts = [];
    for (const [key, value] of Object.entries(ticket)) {
      if (TICKET_FIELDS.has(key) || value === null || value === undefined) continue;
      parts.push(whyPart(key, value));
    }
    return parts.join("; ");
  }

  async function refreshTickets() {
    if (routeMissing("tickets")) return;
    let answer;
    try {
      answer = await api.call("GET", "/v1/tickets");
    } catch (err) {
      if (err instanceof ApiError && err.missingRoute) {
        state.missing.set("tickets", Date.now());
        replace($("tickets"), h("p", { class: "muted", id: "tickets-unavailable" },
          `This server cannot list tickets yet (GET /v1/tickets answered ${err.status}). `,
          "They will appear here once it can."));
        return;
      }
      throw err;
    }
    const tickets = Array.isArray(answer) ? answer : (answer && answer.tickets) || [];
    if (!tickets.length) {
      replace($("tickets"), h("p", { class: "muted", text: "No ticket is waiting." }));
      return;
    }
    const rows = tickets.map((t) => h("tr", { "data-ticket-id": t.ticket_id },
      h("td", { text: t.job }), h("td", { text: t.holder }), idCell(t.ticket_id),
      h("td", { class: "num", text: t.priority }), h("td", { class: "num", text: t.slots }),
      h("td", { text: t.requested_at ? new Date(t.requested_at).toLocaleTimeString() : "" }),
      h("td", { text: whyText(t) })));
    replace($("tickets"), table(null, ["Job", "Holder", "Ticket", ["Priority", "num"],
      ["Slots", "num"], "Requested", "Why it waits"], rows, { id: "tickets-table" }));
  }

  // ---------------------------------------------------------------- work lost

  // work_lost_records / work_lost_seconds come with the grace issue: counted from the
  // ended leases and audit records that carry them.
  function noteWorkLost(item) {
    const source = item.data && typeof item.data === "object" ? item.data : item;
    const records = source.work_lost_records;
    const secs = source.work_lost_seconds;
    if (typeof records !== "number" && typeof secs !== "number") return;
    state.workLostSeen = true;
    const job = item.job || "(no job)";
    const entry = state.workLost.get(job) || { records: 0, seconds: 0, leases: 0 };
    entry.records += typeof records === "number" ? records : 0;
    entry.seconds += typeof secs === "number" ? secs : 0;
    entry.leases += 1;
    state.workLost.set(job, entry);
  }

  function renderWorkLost() {
    if (!state.workLostSeen) {
      replace($("work-lost"), h("p", { class: "muted", id: "work-lost-unavailable",
        text: "No ended lease seen so far carries work_lost_records or work_lost_seconds: " +
          "this server does not report work lost yet, or nothing has ended since this page opened." }));
      return;
    }
    const rows = [...state.workLost.entries()].sort((a, b) => b[1].seconds - a[1].seconds)
      .map(([job, w]) => h("tr", {}, h("td", { text: job }),
        h("td", { class: "num", text: w.records }), h("td", { class: "num", text: seconds(w.seconds) }),
        h("td", { class: "num", text: w.leases })));
    replace($("work-lost"), table(null, ["Job", ["Records lost", "num"], ["Time lost", "num"],
      ["Ended leases", "num"]], rows, { id: "work-lost-table" }));
  }

  // ---------------------------------------------------------------- audit

  async function readAuditAfter(seq) {
    const fresh = [];
    let after = seq;
    for (;;) {
      const page = await api.call("GET", `/v1/audit?after_seq=${after}&limit=1000`);
      fresh.push(...page.records);
      if (!page.records.length || page.next_after_seq === null) return fresh;
      after = page.next_after_seq;
    }
  }

  async function refreshAudit() {
    const audit = state.audit;
    const head = await api.call("GET", "/v1/audit/head");
    if (!audit.loaded) {
      audit.lastSeq = Math.max(0, head.seq - AUDIT_BACKLOG);
      audit.loaded = true;
    }
    if (head.seq > audit.lastSeq) {
      const fresh = await readAuditAfter(audit.lastSeq);
      if (fresh.length) {
        audit.lastSeq = fresh[fresh.length - 1].seq;
        for (const record of fresh) noteWorkLost(record);
        audit.records.push(...fresh);
      }
    }
    const horizon = api.serverNow() - HOUR_MS;
    const firstKept = audit.records.findIndex((r) => Date.parse(r.time) >= horizon);
    const keepFrom = Math.min(firstKept === -1 ? audit.records.length : firstKept,
      Math.max(0, audit.records.length - AUDIT_TAIL));
    if (keepFrom > 0) audit.records.splice(0, keepFrom);

    const headText = `${head.seq}:${head.hash}`;
    const input = $("audit-head");
    if (input.value !== headText) input.value = headText;
    // A long chain takes long to verify: wait at least 20 times what the last one took.
    const gap = Math.max(VERIFY_EVERY_MS, 20 * audit.verifyMs);
    if (!audit.verifying && head.seq !== audit.verifiedSeq && Date.now() - audit.verifiedAt >= gap) {
      // Off the refresh's path: a slow verification must not hold up the other views.
      audit.verifying = true;
      verifyAudit()
        .catch((err) => replace($("audit-verify"), h("span", { class: "bad",
          text: `Verification could not run: ${describe(err)}` })))
        .finally(() => { audit.verifying = false; });
    }
    renderAuditTail();
    renderRates();
    if (state.ended.length) renderEnded();
  }

  async function verifyAudit() {
    const audit = state.audit;
    const started = Date.now();
    const result = await api.call("GET", "/v1/audit/verify");
    audit.verifiedAt = Date.now();
    audit.verifyMs = audit.verifiedAt - started;
    audit.verifiedSeq = result.head.seq;
    const when = new Date().toLocaleTimeString();
    replace($("audit-verify"), result.ok
      ? [h("span", { class: "ok", text: "Verification passes" }),
        `: ${result.records} records up to seq ${result.head.seq} (checked ${when}).`]
      : [h("span", { class: "bad", text: "Verification FAILS" }),
        `: first bad seq ${result.first_bad_seq}: ${result.reason} (checked ${when}).`]);
  }

  function renderAuditTail() {
    const tail = state.audit.records.slice(-AUDIT_TAIL).reverse();
    if (!tail.length) {
      replace($("audit-tail"), h("p", { class: "muted", text: "No audit record yet." }));
      return;
    }
    const rows = tail.map((r) => h("tr", { "data-seq": r.seq, "data-kind": r.kind },
      h("td", { class: "num", text: r.seq }),
      h("td", { class: "time", text: new Date(r.time).toLocaleTimeString() }),
      h("td", { text: r.kind }),
      h("td", { text: r.job ?? "" }),
      r.lease_id ? idCell(r.lease_id) : h("td", {}),
      h("td", { class: "data" }, h("code", { text: JSON.stringify(r.data) }))));
    replace($("audit-tail"), table(`The newest ${tail.length} records, newest first`,
      [["Seq", "num"], "Time", "Kind", "Job", "Lease", "Data"], rows, { id: "audit-table" }));
  }

  // ---------------------------------------------------------------- the rates chart

  const GRANT_KINDS = new Set(["grant"]);
  const PREEMPTION_KINDS = new Set(["preemption_executed", "preemption_forced",
    "preemption_cooperative"]);

  function minuteCounts() {
    const now = api.serverNow();
    const grants = new Array(60).fill(0);
    const preemptions = new Array(60).fill(0);
    for (const r of state.audit.records) {
      const age = now - Date.parse(r.time);
      if (age < 0 || age >= HOUR_MS) continue;
      const bucket = 59 - Math.floor(age / 60000); // 59 is the minute ending now
      if (GRANT_KINDS.has(r.kind)) grants[bucket] += 1;
      else if (PREEMPTION_KINDS.has(r.kind)) preemptions[bucket] += 1;
    }
    return { now, grants, preemptions };
  }

  function svg(tag, attrs, ...children) {
    const el = document.createElementNS("http://www.w3.org/2000/svg", tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (key === "text") el.textContent = value;
      else el.setAttribute(key, String(value));
    }
    for (const child of children) if (child) el.append(child);
    return el;
  }

  function renderRates() {
    const { now, grants, preemptions } = minuteCounts();
    const totalG = grants.reduce((a, b) => a + b, 0);
    const totalP = preemptions.reduce((a, b) => a + b, 0);
    const peak = Math.max(1, ...grants, ...preemptions);
    // Bucket i is the minute that ends (59 - i) minutes before now.
    const minuteLabel = (i) => new Date(now - (59 - i) * 60000).toLocaleTimeString();
    const peakG = grants.indexOf(Math.max(...grants));
    const peakP = preemptions.indexOf(Math.max(...preemptions));
    const summary = `In the last hour: ${totalG} grant${totalG === 1 ? "" : "s"} and ` +
      `${totalP} preemption${totalP === 1 ? "" : "s"}` +
      (totalG ? `; at most ${plural(grants[peakG], "grant")} a minute (the minute to ${minuteLabel(peakG)})` : "") +
      (totalP ? `; at most ${plural(preemptions[peakP], "preemption")} a minute (the minute to ${minuteLabel(peakP)})` : "") +
      ". Green bars: grants; red bars: preemptions carried out or forced.";

    const W = 760, H = 180, left = 36, bottom = 24, top = 10;
    const plotW = W - left - 8, plotH = H - top - bottom;
    const slot = plotW / 60;
    const y = (v) => top + plotH - (v / peak) * plotH;
    const chart = svg("svg", { viewBox: `0 0 ${W} ${H}`, role: "img",
      "aria-labelledby": "rates-svg-title rates-svg-desc", id: "rates-svg" },
    svg("title", { id: "rates-svg-title", text: "Grants and preemptions per minute, last hour" }),
    svg("desc", { id: "rates-svg-desc", text: summary }));
    chart.append(svg("line", { class: "axis", x1: left, y1: top + plotH, x2: W - 8, y2: top + plotH }));
    chart.append(svg("line", { class: "axis", x1: left, y1: top, x2: left, y2: top + plotH }));
    chart.append(svg("text", { x: left - 4, y: top + 8, "text-anchor": "end", text: String(peak) }));
    chart.append(svg("text", { x: left - 4, y: top + plotH, "text-anchor": "end", text: "0" }));
    for (const [i, label] of [[0, "60 min ago"], [30, "30 min ago"], [59, "now"]]) {
      chart.append(svg("text", { x: left + i * slot + slot / 2, y: H - 6,
        "text-anchor": i === 0 ? "start" : i === 59 ? "end" : "middle", text: label }));
    }
    for (let i = 0; i < 60; i++) {
      const x = left + i * slot;
      if (grants[i]) {
        chart.append(svg("rect", { class: "grants", x: x + 1, y: y(grants[i]),
          width: Math.max(1, slot / 2 - 1), height: top + plotH - y(grants[i]) }));
      }
      if (preemptions[i]) {
        chart.append(svg("rect", { class: "preemptions", x: x + slot / 2, y: y(preemptions[i]),
          width: Math.max(1, slot / 2 - 1), height: top + plotH - y(preemptions[i]) }));
      }
    }
    replace($("rates-chart"), chart);
    $("rates-summary").textContent = summary;

    const rows = [];
    for (let i = 59; i >= 0; i--) {
      if (!grants[i] && !preemptions[i]) continue;
      rows.push(h("tr", {}, h("td", { text: minuteLabel(i) }),
        h("td", { class: "num", text: grants[i] }), h("td", { class: "num", text: preemptions[i] })));
    }
    replace($("rates-table"), rows.length
      ? table("Minutes with any grant or preemption, newest first",
        ["Minute ending", ["Grants", "num"], ["Preemptions", "num"]], rows)
      : h("p", { class: "muted", text: "No grant or preemption in the last hour." }));
  }

  // ---------------------------------------------------------------- admin actions

  const ACTIONS = {
    preempt: {
      title: "Preempt this lease?",
      text: (l) => `Preempt job ${l.job} (lease ${shortId(l.lease_id)}, held by ${l.holder}). ` +
        "A lease in the middle of a checkpoint flush is preempted when the flush ends, " +
        "or forced at its deadline.",
      confirm: "Preempt",
      fields: "cause",
      request: (l, f) => ["POST", `/v1/leases/${l.lease_id}/preempt`, { cause: f.cause }],
      outcome: (l, r) => {
        if (r.outcome === "deferred") {
          return `Preemption of ${l.job} deferred by ${r.reasons.join(", ") || "its grace window"}` +
            `; forced in ${seconds(r.deadline_in)} at the latest (cause: ${r.cause}).`;
        }
        if (r.outcome === "preempted") return `Lease of ${l.job} preempted at once (cause: ${r.cause}).`;
        return `Lease of ${l.job} was no longer active: nothing to preempt (${r.outcome}).`;
      },
    },
    fence: {
      title: "Fence this lease?",
      text: (l) => `Fence job ${l.job} (lease ${shortId(l.lease_id)}, held by ${l.holder}): ` +
        "the lease ends at once and its holder can commit nothing more.",
      confirm: "Fence",
      request: (l) => ["POST", `/v1/leases/${l.lease_id}/fence`, undefined],
      outcome: (l, r) => `Lease of ${l.job} is now ${r.state}.`,
    },
    hold: {
      title: "Hold this lease?",
      text: (l) => `Put an operator hold on job ${l.job} (lease ${shortId(l.lease_id)}): ` +
        "while it holds, a preemption is deferred (at most max_defer from its request).",
      confirm: "Hold",
      fields: "hold",
      request: (l, f) => ["POST", `/v1/leases/${l.lease_id}/holds`,
        { reason: f.reason, expires_in: f.expiresIn }],
      outcome: (l) => `Hold set on ${l.job}.`,
    },
    unhold: {
      title: "Clear the hold?",
      text: (l) => `Clear the operator hold on job ${l.job} (lease ${shortId(l.lease_id)}).`,
      confirm: "Unhold",
      request: (l) => ["DELETE", `/v1/leases/${l.lease_id}/holds`, undefined],
      outcome: (l) => `Hold cleared on ${l.job}.`,
    },
  };

  let pendingAction = null;

  function openAction(name, lease) {
    const action = ACTIONS[name];
    pendingAction = { name, lease, opener: document.activeElement };
    $("confirm-title").textContent = action.title;
    $("confirm-text").textContent = action.text(lease);
    $("confirm-ok").textContent = action.confirm;
    $("confirm-error").textContent = "";
    $("confirm-cause-field").hidden = action.fields !== "cause";
    $("confirm-hold-fields").hidden = action.fields !== "hold";
    $("confirm-cause").value = "operator request from the dashboard";
    $("confirm-hold-reason").value = "";
    $("confirm-hold-expires").value = "";
    $("confirm-dialog").showModal();
    const first = action.fields === "cause" ? $("confirm-cause")
      : action.fields === "hold" ? $("confirm-hold-reason") : $("confirm-cancel");
    first.focus();
  }

  function closeAction() {
    const opener = pendingAction && pendingAction.opener;
    pendingAction = null;
    if ($("confirm-dialog").open) $("confirm-dialog").close();
    if (opener && opener.isConnected) opener.focus();
    else if (opener && opener.dataset.focusKey) {
      const again = document.querySelector(`[data-focus-key="${CSS.escape(opener.dataset.focusKey)}"]`);
      if (again) again.focus();
    }
  }

  function readFields(action) {
    if (action.fields === "cause") {
      const cause = $("confirm-cause").value.trim();
      if (!cause) throw new Error("Give a cause: it is recorded in the audit log.");
      return { cause };
    }
    if (action.fields === "hold") {
      const reason = $("confirm-hold-reason").value.trim();
      if (!reason) throw new Error("Give a reason for the hold.");
      const raw = $("confirm-hold-expires").value.trim();
      let expiresIn = null;
      if (raw) {
        expiresIn = Number(raw);
        if (!Number.isFinite(expiresIn) || expiresIn <= 0) {
          throw new Error(`Expires in must be a positive number of seconds, not ${JSON.stringify(raw)}.`);
        }
      }
      return { reason, expiresIn };
    }
    return {};
  }

  function report(text, ok) {
    const outcome = $("outcome");
    if (outcome.dataset.text) {
      const log = $("outcome-log");
      log.prepend(h("li", { text: outcome.dataset.text }));
      while (log.children.length > 10) log.lastChild.remove();
    }
    outcome.dataset.text = text;
    outcome.className = ok ? "ok" : "error";
    outcome.textContent = text;
  }

  async function confirmAction(event) {
    event.preventDefault();
    if (!pendingAction) return;
    const { name, lease } = pendingAction;
    const action = ACTIONS[name];
    let fields;
    try {
      fields = readFields(action);
    } catch (err) {
      $("confirm-error").textContent = err.message;
      return;
    }
    const [method, path, body] = action.request(lease, fields);
    closeAction();
    try {
      const answer = await api.call(method, path, body);
      report(action.outcome(lease, answer), true);
    } catch (err) {
      let text = `${action.confirm} on ${lease.job} (lease ${shortId(lease.lease_id)}) failed: ${describe(err)}`;
      if (err instanceof ApiError && err.missingRoute && (name === "hold" || name === "unhold")) {
        text += ". This server has no hold routes yet (" + `${method} /v1/leases/{id}/holds).`;
      }
      report(text, false);
      if (err instanceof ApiError && err.status === 401) signOut("The scheduler no longer accepts this token (401). Sign in again.");
    }
  }

  // ---------------------------------------------------------------- wiring

  async function copyHead() {
    const input = $("audit-head");
    input.focus();
    input.select();
    try {
      await navigator.clipboard.writeText(input.value);
      report(`Copied the audit head ${input.value.split(":")[0]}:… to the clipboard.`, true);
    } catch (_) {
      report("The browser refused the clipboard: the head is selected, copy it with Ctrl+C.", false);
    }
  }

  function init() {
    $("signin-form").addEventListener("submit", (event) => {
      event.preventDefault();
      const token = $("token").value.trim();
      if (!token) {
        $("signin-error").textContent = "Enter a bearer token to sign in.";
        $("token").focus();
        return;
      }
      signIn(token, false);
    });
    $("signout").addEventListener("click", () => signOut("Signed out."));
    $("confirm-form").addEventListener("submit", confirmAction);
    $("confirm-cancel").addEventListener("click", () => {
      report("Cancelled: nothing was sent.", true);
      closeAction();
    });
    $("confirm-dialog").addEventListener("cancel", (event) => {
      event.preventDefault(); // Escape: close through the same path as Cancel
      report("Cancelled: nothing was sent.", true);
      closeAction();
    });
    $("audit-copy").addEventListener("click", copyHead);
    $("audit-verify-now").addEventListener("click", () => {
      verifyAudit().catch((err) => report(`Verification failed to run: ${describe(err)}`, false));
    });
    setInterval(tickAll, 100);
    const saved = sessionStorage.getItem(TOKEN_KEY);
    if (saved) signIn(saved, true);
    else showSignIn("");
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", init);
  else init();
})();
