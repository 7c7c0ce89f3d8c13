// keel console: the page every node serves at /ui/ (see crates/keel-server/src/console.rs).
//
// It talks only to the node that served it (same origin): GET /v1/cluster and /v1/history on
// load, then the /v1/watch stream of server-sent events, read with fetch() so that the
// Authorization header can be sent. When that node stops answering, the page moves to another
// member. All data reaches the DOM through textContent / attributes, never as HTML.
"use strict";

(() => {
  const TOKEN_KEY = "keel.console.token";
  const WINDOW_MS = 15 * 60 * 1000; // charts show the last 15 minutes
  const STALL_MS = 3500;            // a stream silent this long is treated as dead (data comes every second)
  const FAILOVER_MS = 3000;         // no answer from this node this long: move to another member
  const PROBE_TIMEOUT_MS = 2000;
  const MAX_EVENTS_SHOWN = 200;
  const KV_PAGE = 50;

  const $ = (id) => document.getElementById(id);

  const state = {
    token: readToken(),
    cluster: null,   // the last /v1/cluster view
    samples: [],     // this node's load, oldest first
    intervalMs: 1000,
    busy: false,     // a cluster action is in flight
  };

  // ---------------------------------------------------------------- small helpers

  function readToken() {
    try {
      return sessionStorage.getItem(TOKEN_KEY) || "";
    } catch {
      return "";
    }
  }

  /** An element with attributes and children (strings become text nodes). */
  function el(tag, attrs = {}, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attrs)) {
      if (value == null || value === false) continue;
      if (name === "class") node.className = value;
      else node.setAttribute(name, value === true ? "" : String(value));
    }
    node.append(...children.filter((c) => c != null));
    return node;
  }

  function svgEl(tag, attrs = {}) {
    const node = document.createElementNS("http://www.w3.org/2000/svg", tag);
    for (const [name, value] of Object.entries(attrs)) node.setAttribute(name, String(value));
    return node;
  }

  const pad2 = (n) => String(n).padStart(2, "0");

  /** Local HH:MM:SS. */
  function clock(ms) {
    const d = new Date(ms);
    if (Number.isNaN(d.getTime())) return "--:--:--";
    return `${pad2(d.getHours())}:${pad2(d.getMinutes())}:${pad2(d.getSeconds())}`;
  }

  function plural(n, word, many = `${word}s`) {
    return `${n} ${n === 1 ? word : many}`;
  }

  /** A finite number, or null. */
  function num(v) {
    return typeof v === "number" && Number.isFinite(v) ? v : null;
  }

  function fmtNum(v) {
    if (v == null) return "—";
    if (Number.isInteger(v)) return String(v);
    const a = Math.abs(v);
    if (a >= 100) return v.toFixed(0);
    if (a >= 10) return v.toFixed(1);
    return v.toFixed(2);
  }

  function fmtBytes(n) {
    if (num(n) == null) return "—";
    const units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let i = 0;
    while (n >= 1024 && i < units.length - 1) {
      n /= 1024;
      i++;
    }
    if (i === 0) return `${n} B`;
    return `${n < 10 ? n.toFixed(1) : Math.round(n)} ${units[i]}`;
  }

  function fmtAge(ms) {
    if (ms < 1000) return `${ms} ms`;
    if (ms < 60000) return `${(ms / 1000).toFixed(1)} s`;
    return `${Math.round(ms / 60000)} min`;
  }

  function setResult(id, text, kind = "") {
    const node = $(id);
    node.textContent = text;
    node.className = kind ? `result ${kind}` : "result";
  }

  // ---------------------------------------------------------------- notice line

  // One line, in order of importance: lost contact, a load error, a stream error, the
  // failover note.
  const notice = { lost: "", error: "", stream: "", base: "" };

  function renderNotice() {
    const node = $("notice");
    const text = notice.lost || notice.error || notice.stream || notice.base;
    node.textContent = text;
    node.hidden = !text;
    node.className = text === notice.base ? "info" : "warn";
  }

  // Arrived here because another node stopped answering (see failover()).
  const fromParam = new URLSearchParams(location.search).get("from");
  const fromId = fromParam && /^\d{1,20}$/.test(fromParam) ? fromParam : null;
  if (fromId) notice.base = `Node ${fromId} stopped answering; now showing ${location.host}`;

  // ---------------------------------------------------------------- API access

  class ApiError extends Error {
    constructor(message, { status = 0, code = "", network = false } = {}) {
      super(message);
      this.status = status;
      this.code = code;
      this.network = network; // no HTTP answer at all
    }
  }

  function authHeaders(extra = {}) {
    const headers = { ...extra };
    if (state.token) headers.Authorization = `Bearer ${state.token}`;
    return headers;
  }

  /** The `error` text of an error answer (JSON `{"error", "code"}`), or a fallback. */
  async function readError(res) {
    let text = "";
    try {
      text = await res.text();
      const body = JSON.parse(text);
      if (body && typeof body.error === "string") {
        return { error: body.error, code: typeof body.code === "string" ? body.code : "" };
      }
    } catch {
      // not JSON: fall through
    }
    const detail = text.trim().slice(0, 200);
    return { error: `HTTP ${res.status}${detail ? `: ${detail}` : ""}`, code: "" };
  }

  /**
   * One request to this node. Resolves with the parsed JSON (null for an empty body), or
   * the raw bytes with `raw`; rejects with an ApiError carrying the API's `error` text.
   */
  async function api(method, path, { json, body, raw = false, timeout = 0, headers = {} } = {}) {
    const init = { method, headers: authHeaders(headers), cache: "no-store" };
    if (json !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(json);
    } else if (body !== undefined) {
      init.body = body;
    }
    const ctrl = new AbortController();
    init.signal = ctrl.signal;
    const timer = timeout ? setTimeout(() => ctrl.abort(), timeout) : null;
    try {
      let res;
      try {
        res = await fetch(path, init);
      } catch (e) {
        const why = e && e.name === "AbortError" ? "no answer in time" : "network error";
        throw new ApiError(`No answer from the node (${why})`, { network: true });
      }
      markContact();
      if (!res.ok) {
        const { error, code } = await readError(res);
        if (res.status === 401) requireAuth();
        throw new ApiError(error, { status: res.status, code });
      }
      if (raw) return new Uint8Array(await res.arrayBuffer());
      const text = await res.text();
      return text ? JSON.parse(text) : null;
    } finally {
      if (timer) clearTimeout(timer);
    }
  }

  // ---------------------------------------------------------------- bearer token

  let authGate = null; // while a token is awaited: { promise, resolve }

  function requireAuth() {
    if (!authGate) {
      let resolve;
      const promise = new Promise((r) => { resolve = r; });
      authGate = { promise, resolve };
    }
    $("auth-msg").textContent = state.token
      ? "The node refused this token. Enter another bearer token."
      : "This cluster requires a bearer token.";
    if ($("auth").hidden) {
      $("auth").hidden = false;
      $("auth-token").focus();
    }
  }

  function saveToken(ev) {
    ev.preventDefault();
    const token = $("auth-token").value.trim();
    // A header value must be printable ASCII; anything else would make fetch() throw.
    if (!/^[\x21-\x7e]+$/.test(token)) {
      $("auth-msg").textContent = "Enter the token: printable ASCII, no spaces.";
      $("auth-token").focus();
      return;
    }
    state.token = token;
    try {
      sessionStorage.setItem(TOKEN_KEY, token);
    } catch {
      // storage disabled: the token lasts until the page is left
    }
    $("auth-token").value = "";
    $("auth").hidden = true;
    const gate = authGate;
    authGate = null;
    if (gate) gate.resolve();
    restartStream(); // the stream too must carry the new token
    loadCluster().catch(reportLoadError);
    loadHistory().catch(reportLoadError);
  }

  // ---------------------------------------------------------------- cluster view

  function displayedRole(m) {
    if (!m.reachable || !m.status) return "unreachable";
    if (m.configured_role === "learner") return "learner";
    const role = m.status.role;
    return role === "pre_candidate" ? "candidate" : role || "unknown";
  }

  async function loadCluster(timeout = 0) {
    applyCluster(await api("GET", "/v1/cluster", { timeout }));
  }

  function reportLoadError(e) {
    // No answer is the failover logic's business; 401 shows the token form.
    if (e.network || e.status === 401) return;
    notice.error = `Cannot load the cluster's state: ${e.message}`;
    renderNotice();
  }

  function applyCluster(view) {
    if (!view || typeof view !== "object") return;
    state.cluster = view;
    document.body.dataset.leader = view.leader_id == null ? "" : String(view.leader_id);
    renderHeader(view);
    renderMembers(view);
    renderTimeline(Array.isArray(view.events) ? view.events : []);
    if (fromId) notice.base = `Node ${fromId} stopped answering; now showing node ${view.node_id}`;
    notice.error = "";
    renderNotice();
  }

  function renderHeader(v) {
    const leader = $("leader");
    leader.textContent = v.leader_id == null ? "no leader" : `node ${v.leader_id}`;
    leader.classList.toggle("danger", v.leader_id == null);

    $("term").textContent = String(v.term);

    const t = num(v.tolerance);
    const tolerance = $("tolerance");
    tolerance.textContent = t != null && t > 0
      ? `Can lose ${plural(t, "more voter")}`
      : "Cannot lose any voter";
    tolerance.classList.toggle("danger", !(t > 0));

    const learners = (v.members || []).filter((m) => m.configured_role === "learner").length;
    const config = $("config");
    config.textContent = v.joint
      ? "joint configuration (change in progress)"
      : plural(v.voters, "voter");
    config.title = learners ? `plus ${plural(learners, "learner")}` : "";

    $("served-by").textContent = `served by node ${v.node_id}`;
    document.title = `keel · node ${v.node_id}`;
  }

  // Member cards are built once per member and updated in place every second, so that
  // buttons stay put under the pointer and keep their focus.
  const FACTS = [
    ["client", "Client address"],
    ["peer", "Peer address"],
    ["term", "Term"],
    ["commit", "Commit index"],
    ["applied", "Applied index"],
    ["lag", "Lag"],
    ["contact", "Last contact"],
    ["snapshot", "Snapshot index"],
    ["log", "Log on disk"],
  ];
  const ACTION_LABELS = { transfer: "Make leader", promote: "Promote to voter", remove: "Remove" };
  const cards = new Map(); // member id -> card

  function makeCard() {
    const card = { facts: {}, actionsKey: null, alertsKey: null };
    card.id = el("span", { class: "member-id" });
    card.self = el("span", { class: "member-self" }, "this node");
    card.role = el("span", { class: "member-role" });
    card.alerts = el("ul", { class: "member-alerts" });
    const facts = el("dl", { class: "member-facts" });
    for (const [key, label] of FACTS) {
      card.facts[key] = el("dd", { class: `member-${key}` });
      facts.append(el("div", {}, el("dt", {}, label), card.facts[key]));
    }
    card.actions = el("div", { class: "member-actions" });
    card.root = el("article", { class: "member" },
      el("header", { class: "member-head" }, card.id, card.self, card.role),
      card.alerts, facts, card.actions);
    return card;
  }

  function updateCard(card, m, v) {
    const role = displayedRole(m);
    const s = m.status || null;
    const self = m.id === v.node_id;
    card.root.dataset.id = String(m.id);
    card.root.dataset.role = role;
    card.root.classList.toggle("is-self", self);
    card.id.textContent = `node ${m.id}`;
    card.self.hidden = !self;
    card.role.textContent = role;
    card.role.className = `member-role role-${role}`;

    const f = card.facts;
    f.client.textContent = m.client_addr || "—";
    f.peer.textContent = m.peer_addr || "—";
    f.term.textContent = s ? String(s.term) : "—";
    f.commit.textContent = s ? String(s.commit_index) : "—";
    f.applied.textContent = s ? String(s.applied_index) : "—";
    f.lag.textContent = m.lag == null ? "—" : plural(m.lag, "entry", "entries");
    f.lag.classList.toggle("warn", m.lag > 0);
    f.contact.textContent = m.last_contact_ms == null ? "—" : `${fmtAge(m.last_contact_ms)} ago`;
    f.snapshot.textContent = s ? String(s.snapshot_index) : "—";
    // The brief names it log_bytes_on_disk; keel-api's NodeStatus calls it disk_bytes.
    f.log.textContent = s ? fmtBytes(s.log_bytes_on_disk ?? s.disk_bytes) : "—";

    const alerts = [];
    if (!m.reachable) alerts.push(`Unreachable: ${m.error || "no answer"}`);
    if (s && s.stopped) alerts.push(`Stopped: ${s.stopped}`);
    if (s && s.storage_unavailable) alerts.push(`Storage unavailable: ${s.storage_unavailable}`);
    if (s && s.transfer_to != null) alerts.push(`Handing leadership to node ${s.transfer_to}`);
    const alertsKey = alerts.join("\n");
    if (alertsKey !== card.alertsKey) {
      card.alertsKey = alertsKey;
      card.alerts.replaceChildren(...alerts.map((a) => el("li", {}, a)));
      card.alerts.hidden = alerts.length === 0;
    }

    const actions = [];
    if (m.configured_role === "voter" && m.id !== v.leader_id) actions.push("transfer");
    if (m.configured_role === "learner") actions.push("promote");
    actions.push("remove");
    const actionsKey = actions.join(",");
    if (actionsKey !== card.actionsKey) {
      card.actionsKey = actionsKey;
      card.actions.replaceChildren(...actions.map((a) => {
        const button = el("button", {
          type: "button",
          class: a === "remove" ? "small danger" : "small",
          "data-action": a,
        }, ACTION_LABELS[a]);
        button.disabled = state.busy;
        return button;
      }));
    }
  }

  function renderMembers(v) {
    const container = $("members");
    const members = (Array.isArray(v.members) ? v.members : []).slice().sort((a, b) => a.id - b.id);
    const seen = new Set();
    members.forEach((m, i) => {
      seen.add(m.id);
      let card = cards.get(m.id);
      if (!card) {
        card = makeCard();
        cards.set(m.id, card);
      }
      updateCard(card, m, v);
      // Move only when out of place: moving a node would drop its focus.
      if (container.children[i] !== card.root) container.insertBefore(card.root, container.children[i] || null);
    });
    for (const [id, card] of cards) {
      if (!seen.has(id)) {
        card.root.remove();
        cards.delete(id);
      }
    }
    for (const stray of [...container.children]) {
      if (!stray.classList.contains("member")) stray.remove();
    }
    if (!members.length) container.append(el("p", { class: "empty" }, "No members known."));
  }

  let timelineKey = "";

  function renderTimeline(events) {
    const shown = events.slice(-MAX_EVENTS_SHOWN).reverse();
    const key = JSON.stringify(shown);
    if (key === timelineKey) return; // unchanged: leave the DOM (and its scroll position) alone
    timelineKey = key;
    const items = shown.map((e) => {
      const when = new Date(e.time_ms);
      const valid = !Number.isNaN(when.getTime());
      const kind = String(e.kind || "");
      return el("li", { class: "event", "data-kind": kind, "data-term": e.term ?? "" },
        el("time", {
          datetime: valid ? when.toISOString() : null,
          title: valid ? when.toLocaleString() : null,
        }, clock(e.time_ms)),
        el("span", { class: "event-node", title: "Recorded by" }, `node ${e.node}`),
        el("span", { class: "event-kind" }, kind.replace(/_/g, " ")),
        el("span", { class: "event-text" }, String(e.text ?? "")));
    });
    if (!items.length) items.push(el("li", { class: "empty" }, "No events yet."));
    $("timeline").replaceChildren(...items);
  }

  // ---------------------------------------------------------------- load charts

  const CHARTS = [
    { id: "chart-writes", title: "Writes", unit: "/s",
      series: [{ key: "writes_per_s", label: "writes/s" }] },
    { id: "chart-reads", title: "Reads", unit: "/s",
      series: [{ key: "reads_per_s", label: "reads/s" }] },
    { id: "chart-commit", title: "Commit latency", unit: " ms", main: "commit_p99_ms",
      series: [{ key: "commit_p50_ms", label: "p50" }, { key: "commit_p99_ms", label: "p99" }] },
    { id: "chart-fsync", title: "Fsync latency", unit: " ms", main: "fsync_p99_ms",
      series: [{ key: "fsync_p50_ms", label: "p50" }, { key: "fsync_p99_ms", label: "p99" }] },
    { id: "chart-lag", title: "Apply lag", unit: "",
      fmt: (v) => plural(v, "entry", "entries"),
      series: [{ key: "apply_lag", label: "lag" }] },
  ];
  // SVG user space; the SVG is stretched to its box (preserveAspectRatio="none") and the
  // strokes keep their width (vector-effect), so all text is HTML outside the SVG.
  const W = 300;
  const H = 100;
  const PAD = 4;
  const charts = [];

  function buildChart(cfg) {
    const fig = $(cfg.id);
    const value = el("span", { class: "chart-value" }, "—");
    const max = el("span", { class: "chart-max" });
    const svg = svgEl("svg", {
      viewBox: `0 0 ${W} ${H}`,
      preserveAspectRatio: "none",
      class: "chart-svg",
      role: "img",
      "aria-label": `${cfg.title}, last 15 minutes`,
    });
    for (const y of [PAD, H / 2, H - PAD]) {
      svg.append(svgEl("line", { x1: 0, x2: W, y1: y, y2: y, class: "grid", "vector-effect": "non-scaling-stroke" }));
    }
    const paths = cfg.series.map((_, i) => {
      const path = svgEl("path", { class: `line line-${i}`, fill: "none", "vector-effect": "non-scaling-stroke" });
      svg.append(path);
      return path;
    });
    const parts = [
      el("figcaption", {}, el("span", { class: "chart-title" }, cfg.title), value),
      el("div", { class: "chart-plot" }, max, svg),
      el("div", { class: "chart-axis" }, el("span", {}, "−15 min"), el("span", {}, "now")),
    ];
    if (cfg.series.length > 1) {
      parts.push(el("div", { class: "chart-legend" },
        ...cfg.series.map((s, i) => el("span", { class: `key key-${i}` }, s.label))));
    }
    fig.replaceChildren(...parts);
    charts.push({ cfg, fig, value, max, paths });
  }

  /** 1, 2 or 5 times a power of ten, at least v (and at least 1). */
  function niceCeil(v) {
    if (!(v > 1)) return 1;
    const p = 10 ** Math.floor(Math.log10(v));
    const f = v / p;
    return (f <= 1 ? 1 : f <= 2 ? 2 : f <= 5 ? 5 : 10) * p;
  }

  /** An SVG path for one series; null values and missing samples break the line. */
  function linePath(win, key, start, scale) {
    const gap = state.intervalMs * 2.5;
    let d = "";
    let run = 0; // points in the current segment
    let prevT = null;
    for (const s of win) {
      const v = num(s[key]);
      if (v == null || (prevT != null && s.time_ms - prevT > gap)) {
        if (run === 1) d += "h1"; // a lone point: draw a dot
        run = 0;
      }
      if (v != null) {
        const x = ((s.time_ms - start) / WINDOW_MS) * W;
        const y = H - PAD - (Math.min(v, scale) / scale) * (H - 2 * PAD);
        d += `${run ? "L" : "M"}${x.toFixed(1)},${y.toFixed(1)}`;
        run++;
      }
      prevT = s.time_ms;
    }
    if (run === 1) d += "h1";
    return d;
  }

  function drawCharts() {
    const samples = state.samples;
    const last = samples[samples.length - 1];
    // The right edge is the newest sample's time: the node's clock, not the browser's.
    const end = last ? last.time_ms : Date.now();
    const start = end - WINDOW_MS;
    const win = samples.filter((s) => s.time_ms >= start);
    for (const c of charts) {
      const { cfg } = c;
      let top = 0;
      for (const s of win) {
        for (const { key } of cfg.series) {
          const v = num(s[key]);
          if (v != null && v > top) top = v;
        }
      }
      const scale = niceCeil(top);
      cfg.series.forEach(({ key }, i) => c.paths[i].setAttribute("d", linePath(win, key, start, scale)));
      const main = cfg.main || cfg.series[0].key;
      c.fig.dataset.nonzero = String(win.filter((s) => num(s[main]) > 0).length);
      const fmt = (v) => (v == null ? "—" : cfg.fmt ? cfg.fmt(v) : `${fmtNum(v)}${cfg.unit}`);
      c.max.textContent = fmt(scale);
      c.value.textContent = !last
        ? "—"
        : cfg.series.length === 1
          ? fmt(num(last[cfg.series[0].key]))
          : cfg.series.map(({ key, label }) => `${label} ${fmt(num(last[key]))}`).join(" · ");
    }
  }

  // At most one redraw a second, however fast samples arrive.
  let lastDraw = 0;
  let drawTimer = null;

  function requestDraw() {
    if (drawTimer) return;
    const wait = Math.max(0, 1000 - (Date.now() - lastDraw));
    drawTimer = setTimeout(() => {
      drawTimer = null;
      lastDraw = Date.now();
      drawCharts();
    }, wait);
  }

  function trimSamples() {
    const arr = state.samples;
    if (!arr.length) return;
    const cutoff = arr[arr.length - 1].time_ms - WINDOW_MS;
    let i = 0;
    while (i < arr.length && arr[i].time_ms < cutoff) i++;
    if (i) arr.splice(0, i);
  }

  function addSample(s) {
    if (!s || num(s.time_ms) == null) return;
    const arr = state.samples;
    const last = arr[arr.length - 1];
    if (last && s.time_ms < last.time_ms) return;
    if (last && s.time_ms === last.time_ms) arr[arr.length - 1] = s;
    else arr.push(s);
    trimSamples();
    requestDraw();
  }

  async function loadHistory() {
    const h = await api("GET", "/v1/history");
    if (num(h && h.interval_ms) > 0) state.intervalMs = h.interval_ms;
    const history = Array.isArray(h && h.samples) ? h.samples : [];
    const lastT = history.length ? history[history.length - 1].time_ms : -Infinity;
    // Keep streamed samples newer than the history.
    state.samples = history.concat(state.samples.filter((s) => s.time_ms > lastT));
    trimSamples();
    requestDraw();
  }

  // ---------------------------------------------------------------- live stream

  const stream = {
    ctrl: null,     // AbortController of the open (or opening) request
    live: false,    // events are arriving
    everLive: false,
    lastData: 0,    // when the last bytes arrived
    wake: null,     // cuts the retry wait short
  };

  function setLive(live) {
    if (stream.live === live) return;
    stream.live = live;
    document.body.dataset.connected = String(live);
    $("conn-text").textContent = live ? "live" : "reconnecting…";
    if (live) {
      if (notice.stream) {
        notice.stream = "";
        renderNotice();
      }
      // Back after a break: fetch the history again to fill the gap in the charts.
      if (stream.everLive) loadHistory().catch(() => {});
      stream.everLive = true;
    }
  }

  function sleepOrWake(ms) {
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(timer);
        stream.wake = null;
        resolve();
      };
      const timer = setTimeout(done, ms);
      stream.wake = done;
    });
  }

  function restartStream() {
    if (stream.ctrl) stream.ctrl.abort();
    if (stream.wake) stream.wake();
  }

  /**
   * Reads a text/event-stream body, calling onEvent(type, data) per event: "field: value"
   * lines, a blank line ends an event, lines starting with ":" are comments.
   */
  async function readEvents(reader, onEvent) {
    const decoder = new TextDecoder();
    let buf = "";
    let type = "";
    let data = [];
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      stream.lastData = Date.now();
      markContact();
      buf += decoder.decode(value, { stream: true });
      // A trailing "\r" may be the first half of "\r\n": keep it for the next chunk.
      let text = buf;
      let held = "";
      if (text.endsWith("\r")) {
        text = text.slice(0, -1);
        held = "\r";
      }
      const lines = text.split(/\r\n|\r|\n/);
      buf = lines.pop() + held; // the incomplete last line
      for (const line of lines) {
        if (line === "") {
          if (data.length) onEvent(type || "message", data.join("\n"));
          type = "";
          data = [];
          continue;
        }
        if (line.startsWith(":")) continue;
        const colon = line.indexOf(":");
        const field = colon < 0 ? line : line.slice(0, colon);
        let val = colon < 0 ? "" : line.slice(colon + 1);
        if (val.startsWith(" ")) val = val.slice(1);
        if (field === "event") type = val;
        else if (field === "data") data.push(val);
      }
    }
  }

  function onStreamEvent(type, data) {
    let payload;
    try {
      payload = JSON.parse(data);
    } catch {
      return;
    }
    try {
      if (type === "cluster") {
        setLive(true);
        applyCluster(payload);
      } else if (type === "sample") {
        setLive(true);
        addSample(payload);
      }
    } catch (e) {
      console.error("keel console: cannot show an update", e); // keep the stream going
    }
  }

  async function watchLoop() {
    let failures = 0;
    for (;;) {
      if (authGate) await authGate.promise;
      const ctrl = new AbortController();
      stream.ctrl = ctrl;
      stream.lastData = Date.now();
      let received = false;
      try {
        const res = await fetch("/v1/watch", {
          headers: authHeaders({ Accept: "text/event-stream" }),
          cache: "no-store",
          signal: ctrl.signal,
        });
        markContact();
        if (!res.ok || !res.body) {
          const { error } = await readError(res);
          if (res.status === 401) requireAuth();
          else {
            notice.stream = `Live updates unavailable: ${error}`;
            renderNotice();
          }
          throw new Error(error);
        }
        await readEvents(res.body.getReader(), (type, data) => {
          received = true;
          onStreamEvent(type, data);
        });
      } catch {
        // ended, failed or aborted: retry below
      } finally {
        ctrl.abort(); // release the connection whatever happened
      }
      stream.ctrl = null;
      setLive(false);
      if (received) failures = 0;
      if (authGate) continue; // wait for a token, then reconnect at once
      await sleepOrWake(Math.min(1000 * 2 ** failures, 5000)); // 1 s, 2 s, 4 s, 5 s, 5 s…
      failures++;
    }
  }

  // ---------------------------------------------------------------- failover

  const contact = { last: Date.now(), lost: false, navigating: false };
  const probe = { running: false, last: 0 };

  /** This node answered something (any HTTP status, or stream bytes). */
  function markContact() {
    contact.last = Date.now();
    if (contact.lost) {
      contact.lost = false;
      notice.lost = "";
      renderNotice();
    }
  }

  // Twice a second: end a silent stream, and while the stream is down, check the node with
  // /v1/cluster; after FAILOVER_MS without any answer, move to another member.
  function tick() {
    const now = Date.now();
    if (stream.ctrl && now - stream.lastData > STALL_MS) stream.ctrl.abort();
    if (!stream.live && !authGate && !probe.running && !contact.navigating
        && now - probe.last >= 1000 && now - contact.last >= 1000) {
      probeNode();
    }
  }

  async function probeNode() {
    probe.running = true;
    probe.last = Date.now();
    try {
      await loadCluster(PROBE_TIMEOUT_MS);
    } catch (e) {
      if (e.network) lostContact();
    } finally {
      probe.running = false;
    }
  }

  function lostContact() {
    if (contact.navigating) return;
    const self = state.cluster ? `node ${state.cluster.node_id}` : location.host;
    contact.lost = true;
    notice.lost = `Lost contact with ${self}`;
    renderNotice();
    $("conn-text").textContent = "no contact";
    if (Date.now() - contact.last >= FAILOVER_MS) failover();
  }

  function failover() {
    const view = state.cluster;
    if (!view) return;
    const rank = (m) => {
      if (!m.reachable) return 3;
      if (m.id === view.leader_id) return 0;
      return m.configured_role === "voter" ? 1 : 2;
    };
    const candidates = (view.members || [])
      .filter((m) => m.id !== view.node_id && m.client_addr)
      .sort((a, b) => rank(a) - rank(b) || a.id - b.id);
    if (!candidates.length) {
      notice.lost = `Lost contact with node ${view.node_id}; no other member's address is known`;
      renderNotice();
      return;
    }
    contact.navigating = true;
    const target = candidates[0];
    location.href = `${location.protocol}//${target.client_addr}/ui/?from=${encodeURIComponent(view.node_id)}`;
  }

  // ---------------------------------------------------------------- actions

  let confirmResolve = null;
  let confirmReturnFocus = null;

  /** Asks in the in-page dialog; resolves true (confirmed) or false. */
  function askConfirm(text) {
    if (confirmResolve) closeConfirm(false);
    confirmReturnFocus = document.activeElement;
    $("confirm-text").textContent = text;
    $("confirm").hidden = false;
    $("confirm-yes").focus();
    return new Promise((resolve) => { confirmResolve = resolve; });
  }

  function closeConfirm(answer) {
    $("confirm").hidden = true;
    const resolve = confirmResolve;
    confirmResolve = null;
    if (resolve) resolve(answer);
    if (confirmReturnFocus && document.contains(confirmReturnFocus)) confirmReturnFocus.focus();
    confirmReturnFocus = null;
  }

  function setBusy(busy) {
    state.busy = busy;
    for (const b of document.querySelectorAll("#act-transfer, #act-add, #members button[data-action]")) {
      b.disabled = busy;
    }
  }

  /** Confirm, then run work() (which resolves with a message) with the buttons disabled. */
  async function runAction(question, work) {
    if (state.busy) return;
    if (!(await askConfirm(question))) return;
    setBusy(true);
    setResult("act-result", "working…", "busy");
    try {
      setResult("act-result", await work(), "ok");
    } catch (e) {
      setResult("act-result", e.message, "error");
    } finally {
      setBusy(false);
    }
    loadCluster().catch(() => {}); // show the change without waiting for the stream
  }

  function leaderMessage(answer) {
    return answer && answer.leader != null
      ? `Leadership moved to node ${answer.leader}.`
      : "Leadership handed over; the new leader is not known yet.";
  }

  function memberAction(action, id) {
    const self = state.cluster ? state.cluster.node_id : null;
    if (action === "transfer") {
      runAction(`Make node ${id} the leader?`, async () =>
        leaderMessage(await api("POST", "/v1/leader", { json: { to: id } })));
    } else if (action === "promote") {
      runAction(`Promote learner node ${id} to voter?`, async () => {
        await api("POST", `/v1/members/${id}/promote`);
        return `Node ${id} is now a voter.`;
      });
    } else if (action === "remove") {
      const note = id === self ? " It is the node serving this page; the console will move to another member." : "";
      runAction(`Remove node ${id} from the cluster?${note}`, async () => {
        await api("DELETE", `/v1/members/${id}`);
        return `Node ${id} removed from the cluster.`;
      });
    }
  }

  function transferAny() {
    const v = state.cluster;
    const from = v && v.leader_id != null ? ` from node ${v.leader_id}` : "";
    runAction(`Transfer leadership${from} to another voter?`, async () =>
      leaderMessage(await api("POST", "/v1/leader", { json: {} })));
  }

  function addLearner() {
    const idText = $("act-add-id").value.trim();
    const peer = $("act-add-peer").value.trim();
    const client = $("act-add-client").value.trim();
    const id = Number(idText);
    if (!/^\d+$/.test(idText) || !Number.isSafeInteger(id) || id < 1) {
      setResult("act-result", "Enter the new node's id: a positive whole number.", "error");
      return;
    }
    if (!peer) {
      setResult("act-result", "Enter the new node's peer address (IP:PORT).", "error");
      return;
    }
    if (!client) {
      setResult("act-result", "Enter the new node's client address (HOST:PORT).", "error");
      return;
    }
    runAction(`Add node ${id} as a learner (peer ${peer}, client ${client})?`, async () => {
      await api("POST", "/v1/members", { json: { id, peer_addr: peer, client_addr: client } });
      return `Node ${id} added as a learner.`;
    });
  }

  // ---------------------------------------------------------------- key browser

  const kv = { prefix: "", after: null, lastKey: null, page: 0, listed: false, busy: false };

  /** /v1/kv/<key>, each "/"-separated segment percent-encoded. */
  function keyPath(key) {
    return `/v1/kv/${key.split("/").map(encodeURIComponent).join("/")}`;
  }

  function keyProblem(key) {
    if (!key) return "Enter a key.";
    // The URL parser resolves "." and ".." segments (even percent-encoded) before sending.
    if (key.split("/").some((seg) => seg === "." || seg === "..")) {
      return "Keys with a “.” or “..” segment cannot be used from the browser.";
    }
    return null;
  }

  async function kvList(prefix, after, page, quiet = false) {
    let url = `/v1/kv?prefix=${encodeURIComponent(prefix)}&limit=${KV_PAGE}`;
    if (after != null) url += `&after=${encodeURIComponent(after)}`;
    if (!quiet) $("kv-page").textContent = "listing…";
    try {
      const answer = await api("GET", url);
      const keys = Array.isArray(answer && answer.keys) ? answer.keys : [];
      Object.assign(kv, { prefix, after, page, listed: true, lastKey: keys.length ? keys[keys.length - 1].key : null });
      const current = $("kv-key").value;
      $("kv-list").replaceChildren(...keys.map((k) => el("tr", {
        class: k.key === current ? "kv-item selected" : "kv-item",
        "data-key": k.key,
        tabindex: 0,
        title: "Load this key",
      }, el("td", { class: "kv-key-cell" }, k.key), el("td", { class: "num" }, fmtBytes(k.size)))));
      $("kv-more").hidden = !(answer.more && keys.length);
      const first = page * KV_PAGE + 1;
      $("kv-page").textContent = keys.length
        ? `Keys ${first}–${first + keys.length - 1}${answer.more ? "" : " (end)"}`
        : page ? "No more keys." : prefix ? `No key starts with “${prefix}”.` : "No keys.";
    } catch (e) {
      $("kv-page").textContent = "";
      setResult("kv-result", e.message, "error");
    }
  }

  /** Runs one key operation at a time, with its buttons disabled meanwhile. */
  async function kvOp(work) {
    if (kv.busy) return;
    const key = $("kv-key").value;
    const problem = keyProblem(key);
    if (problem) {
      setResult("kv-result", problem, "error");
      return;
    }
    kv.busy = true;
    for (const id of ["kv-get", "kv-put", "kv-delete"]) $(id).disabled = true;
    setResult("kv-result", "working…", "busy");
    try {
      await work(key);
    } catch (e) {
      setResult("kv-result", e.message, "error");
    } finally {
      kv.busy = false;
      for (const id of ["kv-get", "kv-put", "kv-delete"]) $(id).disabled = false;
    }
  }

  function kvGet() {
    return kvOp(async (key) => {
      let bytes;
      try {
        bytes = await api("GET", keyPath(key), { raw: true });
      } catch (e) {
        if (e.code === "not_found") $("kv-value").value = "";
        throw e;
      }
      let text;
      let note = "";
      try {
        text = new TextDecoder("utf-8", { fatal: true }).decode(bytes);
      } catch {
        text = new TextDecoder().decode(bytes);
        note = " (not UTF-8 text: shown with replacement characters, so putting it back would change it)";
      }
      $("kv-value").value = text;
      setResult("kv-result", `Read “${key}”: ${fmtBytes(bytes.length)}${note}`, note ? "warn" : "ok");
    });
  }

  function kvPut() {
    return kvOp(async (key) => {
      const value = $("kv-value").value;
      const answer = await api("PUT", keyPath(key), {
        body: value,
        headers: { "Content-Type": "application/octet-stream" },
      });
      const size = new TextEncoder().encode(value).length;
      setResult("kv-result", `Wrote “${key}” (${fmtBytes(size)}) at index ${answer && answer.index}.`, "ok");
      if (kv.listed) kvList(kv.prefix, kv.after, kv.page, true);
    });
  }

  function kvDelete() {
    return kvOp(async (key) => {
      const answer = await api("DELETE", keyPath(key));
      setResult("kv-result", `Deleted “${key}” at index ${answer && answer.index}.`, "ok");
      if (kv.listed) kvList(kv.prefix, kv.after, kv.page, true);
    });
  }

  function pickListedKey(row) {
    for (const r of $("kv-list").querySelectorAll(".selected")) r.classList.remove("selected");
    row.classList.add("selected");
    $("kv-key").value = row.dataset.key;
    kvGet();
  }

  // ---------------------------------------------------------------- wiring

  function bind() {
    $("auth").addEventListener("submit", saveToken);

    $("members").addEventListener("click", (ev) => {
      const button = ev.target.closest("button[data-action]");
      if (!button || button.disabled) return;
      memberAction(button.dataset.action, Number(button.closest(".member").dataset.id));
    });
    $("act-transfer").addEventListener("click", transferAny);
    $("act-add").addEventListener("click", addLearner);

    $("confirm-yes").addEventListener("click", () => closeConfirm(true));
    $("confirm-no").addEventListener("click", () => closeConfirm(false));
    $("confirm").addEventListener("click", (ev) => {
      if (ev.target === $("confirm")) closeConfirm(false); // a click on the backdrop
    });
    document.addEventListener("keydown", (ev) => {
      if ($("confirm").hidden) return;
      if (ev.key === "Escape") {
        ev.preventDefault();
        closeConfirm(false);
      } else if (ev.key === "Tab") {
        // Keep the focus inside the dialog: it has two buttons.
        ev.preventDefault();
        const next = document.activeElement === $("confirm-yes") ? "confirm-no" : "confirm-yes";
        $(next).focus();
      }
    });

    $("kv-list-btn").addEventListener("click", () => kvList($("kv-prefix").value, null, 0));
    $("kv-prefix").addEventListener("keydown", (ev) => {
      if (ev.key === "Enter") kvList($("kv-prefix").value, null, 0);
    });
    $("kv-more").addEventListener("click", () => {
      if (kv.lastKey != null) kvList(kv.prefix, kv.lastKey, kv.page + 1);
    });
    $("kv-list").addEventListener("click", (ev) => {
      const row = ev.target.closest(".kv-item");
      if (row) pickListedKey(row);
    });
    $("kv-list").addEventListener("keydown", (ev) => {
      const row = ev.target.closest(".kv-item");
      if (row && (ev.key === "Enter" || ev.key === " ")) {
        ev.preventDefault();
        pickListedKey(row);
      }
    });
    $("kv-key").addEventListener("keydown", (ev) => {
      if (ev.key === "Enter") kvGet();
    });
    $("kv-get").addEventListener("click", kvGet);
    $("kv-put").addEventListener("click", kvPut);
    $("kv-delete").addEventListener("click", kvDelete);
  }

  function start() {
    CHARTS.forEach(buildChart);
    drawCharts();
    bind();
    renderNotice();
    loadCluster().catch(reportLoadError);
    loadHistory().catch(reportLoadError);
    watchLoop();
    setInterval(tick, 500);
  }

  start();
})();
