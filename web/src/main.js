// The gateway's web terminal: log in with the token, list the containers
// and the live sessions, and open terminals (exec: a new login shell;
// attach: the container's main process) over the gateway's WebSocket
// streams, in the Kubernetes v5.channel.k8s.io framing plus the gateway's
// extensions: flow control (channel 5, see stream/wsproto/ack.go) and the
// session information frame (channel 6, stream/wsproto/info.go).
//
// A new shell is a detachable exec: when the connection drops, the page
// joins the same shell again and the gateway draws its screen as it is;
// after a reload, the sessions list offers the shells left running. A
// share link (#session=…&share=…) opens one session, read-only, with no
// login.
//
// The token never appears in a URL the page requests: POST /login turns it
// into an HttpOnly cookie, which authenticates every later request and
// WebSocket (same origin). A share link's token travels in the WebSocket's
// bearer subprotocol.

import { Terminal } from "@xterm/xterm";
import { FitAddon } from "@xterm/addon-fit";
import "@xterm/xterm/css/xterm.css";
import * as AsciinemaPlayer from "asciinema-player";
import "asciinema-player/dist/bundle/asciinema-player.css";
import "./style.css";

// Channels of the Kubernetes framing, and the gateway's ack channel.
const STDIN = 0;
const STDOUT = 1;
const STDERR = 2;
const STATUS = 3;
const RESIZE = 4;
const ACK = 5;
const INFO = 6;

const PROTOCOL = "v5.channel.k8s.io";
// The gateway stops reading the process at 512 KiB unacknowledged; ack
// well before that, and whenever the terminal has caught up.
const ACK_EVERY = 64 << 10;
const BACKOFF_MIN_MS = 500;
const BACKOFF_MAX_MS = 10000;
// A connection that lived this long starts its reconnects from the
// shortest delay again.
const STABLE_MS = 10000;
const POLL_MS = 3000;
const INPUT_CHUNK = 32 << 10;
// The command of "new shell": the user's login shell, or sh.
const SHELL_COMMAND = ["/bin/sh", "-c", "exec ${SHELL:-/bin/sh} -l"];
// How long a new shell outlives a dropped connection (the gateway caps it
// with --max-detach, and says what it granted).
const DETACH = "1h";
// How long a share link made with the share button is valid.
const SHARE_TTL_SECONDS = 3600;
const BEARER_PROTOCOL = "base64url.bearer.authorization.k8s.io.";

const CLOSE_REASONS = {
  1001: "the gateway is shutting down",
  1002: "protocol error",
  1006: "connection lost",
  1009: "message too large",
  1011: "gateway error",
  4000: "session closed through the API",
  4001: "too slow: the terminal fell too far behind",
  4002: "idle for too long",
  4003: "the share link was revoked",
};

const $ = (id) => document.getElementById(id);
const encoder = new TextEncoder();
const decoder = new TextDecoder();

function el(tag, props = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(props)) {
    if (k === "class") e.className = v;
    else if (k === "dataset") Object.assign(e.dataset, v);
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else e[k] = v;
  }
  e.append(...children);
  return e;
}

// ---- REST ----

class Unauthorized extends Error {}

// api calls the gateway's REST API with the login cookie. A 401 shows the
// login screen; other errors throw with the Status message.
async function api(method, path, body) {
  const init = { method, credentials: "same-origin", cache: "no-store", headers: {} };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const resp = await fetch(path, init);
  if (resp.status === 401) {
    showLogin();
    throw new Unauthorized("not logged in");
  }
  if (!resp.ok) throw new Error(await statusMessage(resp));
  if (resp.status === 204) return null;
  return resp.json();
}

// statusMessage reads the message of a Kubernetes Status error body.
async function statusMessage(resp) {
  try {
    const st = await resp.json();
    if (st && st.message) return st.message;
  } catch (_) {
    // not JSON
  }
  return `${resp.status} ${resp.statusText}`.trim();
}

// ---- login ----

const app = {
  loggedIn: false,
  viewing: false, // a share link's page: one session, read-only
  containers: new Map(), // id → container info
  tabs: [],
  active: null,
  pollTimer: 0,
  player: null, // the recording player, when one is open
  playerID: null,
};

async function login(token) {
  const resp = await fetch("/login", {
    method: "POST",
    credentials: "same-origin",
    cache: "no-store",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ token }),
  });
  if (!resp.ok) throw new Error(await statusMessage(resp));
}

function showLoginError(msg) {
  const e = $("login-error");
  e.textContent = msg;
  e.hidden = !msg;
}

function showLogin() {
  app.loggedIn = false;
  clearInterval(app.pollTimer);
  app.pollTimer = 0;
  $("app").hidden = true;
  $("logout").hidden = true;
  $("login").hidden = false;
  document.body.classList.add("logged-out");
  $("token").focus();
  renderStatus();
}

function showApp() {
  const wasHidden = !app.loggedIn;
  app.loggedIn = true;
  $("login").hidden = true;
  $("app").hidden = false;
  $("logout").hidden = false;
  document.body.classList.remove("logged-out");
  showLoginError("");
  $("token").value = "";
  if (!app.pollTimer) app.pollTimer = setInterval(poll, POLL_MS);
  if (wasHidden && app.active) app.active.activate();
  renderStatus();
}

// enter shows the app if the cookie is good (or the login screen), opens
// the terminal the URL asks for, and resumes terminals that lost their
// login.
async function enter() {
  try {
    await refreshContainers();
  } catch (e) {
    if (!(e instanceof Unauthorized)) {
      showApp();
      showAPIError(e);
    }
    return;
  }
  showApp();
  refreshSessions().catch(showAPIError);
  for (const t of app.tabs) if (t.state === "logged-out") t.connect();
  route();
}

async function onLoginSubmit(ev) {
  ev.preventDefault();
  const token = $("token").value.trim();
  if (!token) return;
  $("login-submit").disabled = true;
  try {
    await login(token);
    await enter();
  } catch (e) {
    showLoginError(e.message || String(e));
  } finally {
    $("login-submit").disabled = false;
  }
}

async function onLogout() {
  for (const t of [...app.tabs]) t.close();
  try {
    await fetch("/logout", { method: "POST", credentials: "same-origin", cache: "no-store" });
  } catch (_) {
    // the cookie stays; the login screen shows anyway
  }
  history.replaceState(null, "", location.pathname + location.search);
  showLogin();
}

// ---- containers and sessions ----

function showAPIError(e) {
  if (e instanceof Unauthorized) return;
  const p = $("api-error");
  p.textContent = e ? e.message || String(e) : "";
  p.hidden = !e;
}

async function poll() {
  if (!app.loggedIn || app.viewing || document.hidden) return;
  try {
    const lists = await Promise.all([refreshContainers(), refreshSessions(), refreshRecordings()]);
    showUnreachable([...new Set(lists.flatMap((l) => (l && l.unreachable) || []))]);
    showAPIError(null);
  } catch (e) {
    showAPIError(e);
  }
}

// showUnreachable names the replicas (--peers) that did not answer: their
// items are missing from the lists, not gone.
function showUnreachable(nodes) {
  const p = $("unreachable");
  p.textContent = nodes.length ? `Not answering: ${nodes.join(", ")}. Its containers, sessions and recordings are not listed until it answers.` : "";
  p.hidden = nodes.length === 0;
}

// syncRows updates a table body to the items, keyed by id, reusing rows
// (buttons stay where they are while the lists refresh).
function syncRows(tbody, items, create, update) {
  const old = new Map([...tbody.rows].map((r) => [r.dataset.id, r]));
  let i = 0;
  for (const item of items) {
    const key = item.key || item.id;
    let row = old.get(key);
    if (row) old.delete(key);
    else row = create(item);
    update(row, item);
    if (tbody.rows[i] !== row) tbody.insertBefore(row, tbody.rows[i] || null);
    i++;
  }
  for (const row of old.values()) row.remove();
}

// With replicas (--peers), every item names its node, and one id may be on
// several: a container is ID@NODE in the page, and its requests say
// ?node=NODE.
async function refreshContainers() {
  const list = await api("GET", "/api/v1/containers");
  const items = ((list && list.items) || []).map((c) => ({ ...c, key: c.node ? `${c.id}@${c.node}` : c.id }));
  app.containers = new Map(items.map((c) => [c.key, c]));
  syncRows($("containers").tBodies[0], items, containerRow, updateContainerRow);
  $("containers-empty").hidden = items.length > 0;
  return list;
}

function containerRow(c) {
  const exec = el("button", { type: "button", class: "exec", textContent: "new shell", title: "a new login shell in this container" });
  const attach = el("button", { type: "button", class: "attach", textContent: "attach", title: "join the main process: its recent output, then live" });
  exec.addEventListener("click", () => openTab("exec", row.dataset.id));
  attach.addEventListener("click", () => openTab("attach", row.dataset.id));
  const row = el("tr", { class: "container", dataset: { id: c.key, node: c.node || "" } },
    el("td", { class: "id", textContent: c.node ? `${c.id} · ${c.node}` : c.id }),
    el("td", { class: "state" }),
    el("td", { class: "tty" }),
    el("td", { class: "actions" }, exec, attach));
  return row;
}

function updateContainerRow(row, c) {
  const [, state, tty] = row.cells;
  let s = c.state;
  if (c.state === "exited" && c.exitCode !== undefined && c.exitCode !== null) s += ` (${c.exitCode})`;
  if (c.restarts) s += ` ↻${c.restarts}`;
  state.textContent = s;
  state.className = `state ${c.state}`;
  state.title = c.message || "";
  tty.textContent = c.tty ? "yes" : "no";
  row.cells[0].title = (c.command || []).join(" ");
  const running = c.state === "running";
  row.querySelector("button.exec").disabled = !running;
  row.querySelector("button.attach").disabled = !running;
}

// refreshSessions lists the live sessions: the streams open now, and the
// shells that outlive their connection (detached ones wait to be joined).
async function refreshSessions() {
  if (app.viewing) return;
  const list = await api("GET", "/api/v1/sessions");
  const items = ((list && list.items) || []).filter((s) => s.state === "active" || s.state === "detached");
  syncRows($("sessions").tBodies[0], items, sessionRow, updateSessionRow);
  $("sessions-empty").hidden = items.length > 0;
  return list;
}

function sessionRow(s) {
  const join = el("button", { type: "button", class: "join", textContent: "join", title: "open this shell here" });
  join.addEventListener("click", () => openSession(s.id, s.target));
  const close = el("button", { type: "button", class: "close", textContent: "close", title: "close this stream" });
  close.addEventListener("click", async () => {
    close.disabled = true;
    try {
      await api("DELETE", `/api/v1/sessions/${encodeURIComponent(s.id)}`);
      await refreshSessions();
    } catch (e) {
      showAPIError(e);
      close.disabled = false;
    }
  });
  return el("tr", { class: "session", dataset: { id: s.id } },
    el("td", { class: "kind", textContent: s.kind }),
    el("td", { class: "target", textContent: s.target }),
    el("td", { class: "age" }),
    el("td", { class: "in num" }),
    el("td", { class: "out num" }),
    el("td", { class: "actions" }, join, close));
}

function updateSessionRow(row, s) {
  const [kind, , age, bin, bout] = row.cells;
  const shared = s.detach > 0;
  let k = shared ? "shell" : s.kind;
  if (s.state === "detached") k += " · detached";
  else if (shared && s.viewers > 1) k += ` · ${s.viewers} clients`;
  kind.textContent = k;
  row.dataset.state = s.state;
  age.textContent = formatAge(Date.now() - Date.parse(s.createdAt));
  bin.textContent = formatBytes(s.bytesIn);
  bout.textContent = formatBytes(s.bytesOut);
  let title = `${s.id} from ${s.remoteAddr || "?"}`;
  if (s.reapAt) title += `; ends ${formatAge(Date.parse(s.reapAt) - Date.now())} from now unless joined`;
  row.title = title;
  // A shell can be joined, unless a tab here shows it already.
  row.querySelector("button.join").hidden = !shared || app.tabs.some((t) => t.session === s.id);
}

// refreshRecordings lists the recordings, newest first: a finished one
// plays, one still being written is followed live.
async function refreshRecordings() {
  const list = await api("GET", "/api/v1/recordings");
  // Newest first: across replicas too (a merged list is each one's in turn).
  const items = ((list && list.items) || []).slice().sort((a, b) => Date.parse(b.startedAt) - Date.parse(a.startedAt));
  syncRows($("recordings").tBodies[0], items, recordingRow, updateRecordingRow);
  $("recordings-empty").hidden = items.length > 0;
  return list;
}

function recordingRow(r) {
  const play = el("button", { type: "button", class: "play", textContent: "play" });
  play.addEventListener("click", () => playRecording(row.dataset.id, row.dataset.active === "true"));
  const del = el("button", { type: "button", class: "delete", textContent: "delete", title: "remove this recording" });
  del.addEventListener("click", async () => {
    del.disabled = true;
    try {
      await api("DELETE", `/api/v1/recordings/${encodeURIComponent(r.id)}`);
      await refreshRecordings();
    } catch (e) {
      showAPIError(e);
      del.disabled = false;
    }
  });
  const row = el("tr", { class: "recording", dataset: { id: r.id } },
    el("td", { class: "target", textContent: r.container }),
    el("td", { class: "started" }),
    el("td", { class: "size num" }),
    el("td", { class: "actions" }, play, del));
  return row;
}

function updateRecordingRow(row, r) {
  const [, started, size] = row.cells;
  row.dataset.active = String(r.active);
  started.textContent = formatAge(Date.now() - Date.parse(r.startedAt));
  size.textContent = formatBytes(r.size);
  row.title = `${(r.command || []).join(" ")}${r.truncated ? " (truncated: " + r.reason + ")" : ""}`;
  row.querySelector("button.play").textContent = r.active ? "follow" : "play";
  row.querySelector("button.delete").disabled = r.active;
}

// playRecording opens the player on a recording: a finished one with
// pause and seek (the player's controls, and its keys: space, the arrows)
// and the speed the select names, from startAt seconds; one still being
// written followed as it grows.
function playRecording(id, active, startAt = 0) {
  closePlayer();
  $("player-pane").hidden = false;
  $("player-title").textContent = `${active ? "following" : "recording"} ${id}`;
  $("player-speed").disabled = active;
  const url = `/api/v1/recordings/${encodeURIComponent(id)}`;
  const src = active ? { driver: "eventsource", url: `${url}?follow=1` } : { url, fetchOpts: { credentials: "same-origin" } };
  const speed = active ? 1 : Number($("player-speed").value) || 1;
  app.player = AsciinemaPlayer.create(src, $("player"), { controls: true, fit: "both", autoPlay: true, preload: true, speed, startAt });
  app.playerID = id;
  app.playerActive = active;
}

// onSpeed plays the open recording again at the new speed, from where it
// was (the player takes its speed when created).
function onSpeed() {
  if (!app.player || app.playerActive) return;
  const at = app.player.getCurrentTime() || 0;
  playRecording(app.playerID, false, at);
}

function closePlayer() {
  if (app.player) app.player.dispose();
  app.player = null;
  app.playerID = null;
  $("player").replaceChildren();
  $("player-pane").hidden = true;
}

function formatAge(ms) {
  const s = Math.max(0, Math.floor(ms / 1000));
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m${String(s % 60).padStart(2, "0")}s`;
  if (s < 86400) return `${Math.floor(s / 3600)}h${String(Math.floor(s / 60) % 60).padStart(2, "0")}m`;
  return `${Math.floor(s / 86400)}d${Math.floor(s / 3600) % 24}h`;
}

function formatBytes(n) {
  n = Number(n) || 0;
  if (n < 1024) return `${n} B`;
  const units = ["KiB", "MiB", "GiB", "TiB"];
  let i = -1;
  do {
    n /= 1024;
    i++;
  } while (n >= 1024 && i < units.length - 1);
  return `${n < 10 ? n.toFixed(1) : Math.round(n)} ${units[i]}`;
}

// ---- terminals ----

const THEME = {
  background: "#16181d",
  foreground: "#d8dee9",
  cursor: "#e5e9f0",
  cursorAccent: "#16181d",
  selectionBackground: "#3b4252",
  black: "#2e3440",
  red: "#e06c75",
  green: "#98c379",
  yellow: "#e5c07b",
  blue: "#61afef",
  magenta: "#c678dd",
  cyan: "#56b6c2",
  white: "#d8dee9",
  brightBlack: "#6b7385",
  brightRed: "#f08c94",
  brightGreen: "#b5e08f",
  brightYellow: "#f2d59b",
  brightBlue: "#8ac7ff",
  brightMagenta: "#dea0ef",
  brightCyan: "#7fd4de",
  brightWhite: "#ffffff",
};

let tabSeq = 0;

// Tab is one terminal and its stream. A stream that ends with close code
// 1000 has ended for good (the process exited); any other close reconnects
// with exponential backoff. A shell (exec) is a detachable session: once
// the gateway has said which (the info frame), reconnecting joins it again,
// and the gateway draws its screen as it is.
class Tab {
  constructor(kind, container, opts = {}) {
    this.kind = kind; // "exec" or "attach"
    this.cid = container.id;
    this.node = container.node || ""; // the replica that holds it, with --peers
    this.info = container;
    this.session = opts.session || null; // the shell's session, once known
    this.share = opts.share || null; // a share link's token: joins with it
    this.viewOnly = !!opts.viewOnly;
    this.detach = 0; // seconds the shell outlives a drop
    this.seq = ++tabSeq;
    this.conn = null; // the current connection, see connect
    this.attempt = 0; // failed connections in a row
    this.retryTimer = 0;
    this.countdown = 0;
    this.retryAt = 0;
    this.state = "connecting";
    this.text = "connecting…";
    this.history = ["connecting"]; // the states it went through, for tests
    this.everConnected = false;
    this.closed = false;

    this.pane = el("div", { class: "term-pane", dataset: { kind, container: this.cid } });
    $("terminal").append(this.pane);
    const stdin = (kind === "exec" || !!container.stdin) && !this.viewOnly;
    // Without a pty (attach to a container without tty) nothing turns the
    // output's \n into \r\n, nor the input's \r (Enter) into \n.
    this.pipes = kind === "attach" && !container.tty;
    this.term = new Terminal({
      convertEol: this.pipes,
      cursorBlink: stdin,
      disableStdin: !stdin,
      scrollback: 5000,
      fontFamily: '"DejaVu Sans Mono", ui-monospace, Menlo, Consolas, "Liberation Mono", monospace',
      fontSize: 14,
      theme: THEME,
    });
    this.fit = new FitAddon();
    this.term.loadAddon(this.fit);
    this.term.open(this.pane);
    this.term.onData((d) => this.onInput(encoder.encode(this.pipes ? d.replace(/\r/g, "\n") : d)));
    this.term.onBinary((d) => this.onInput(Uint8Array.from(d, (c) => c.charCodeAt(0) & 0xff)));
    this.term.onResize(() => this.sendResize());
    this.term.onTitleChange((title) => { this.tabButton.title = title; });

    const label = el("span", { class: "label", textContent: `${this.viewOnly ? "view" : kind === "exec" ? "shell" : "attach"} · ${this.cid}` });
    const closeBtn = el("span", { class: "tab-close", textContent: "×", title: "close this terminal", role: "button" });
    closeBtn.addEventListener("click", (ev) => {
      ev.stopPropagation();
      this.close();
    });
    this.tabButton = el("button", { type: "button", class: "tab", dataset: { kind, container: this.cid } },
      el("span", { class: "dot" }), label, closeBtn);
    this.tabButton.addEventListener("click", () => this.activate());
    $("tabs").append(this.tabButton);
  }

  url() {
    const proto = location.protocol === "https:" ? "wss:" : "ws:";
    if (this.session) {
      // Join the shell again: with no since, a tty's screen comes first.
      const q = ["stdout=1", "tty=1", "flow=1", "info=1"];
      if (!this.viewOnly) q.push("stdin=1");
      return `${proto}//${location.host}/api/v1/sessions/${encodeURIComponent(this.session)}/attach?${q.join("&")}`;
    }
    const base = `${proto}//${location.host}/api/v1/containers/${encodeURIComponent(this.cid)}`;
    const q = this.node ? [`node=${encodeURIComponent(this.node)}`] : [];
    if (this.kind === "exec") {
      for (const a of SHELL_COMMAND) q.push(`command=${encodeURIComponent(a)}`);
      q.push("stdin=1", "stdout=1", "tty=1", `detach=${DETACH}`, "info=1");
    } else {
      // With a tty, stderr is part of the pty's output; without one, it
      // is shown too. (tty=1 on a container without a pty would drop it.)
      q.push("stdout=1", this.info.tty ? "tty=1" : "stderr=1");
      if (this.info.stdin) q.push("stdin=1");
    }
    q.push("flow=1");
    return `${base}/${this.kind}?${q.join("&")}`;
  }

  activate() {
    if (app.active && app.active !== this) {
      app.active.pane.classList.remove("active");
      app.active.tabButton.classList.remove("active");
    }
    app.active = this;
    this.pane.classList.add("active");
    this.tabButton.classList.add("active");
    document.body.classList.add("has-terminal");
    if (!app.viewing) this.setHash();
    document.title = `${this.viewOnly ? "view" : this.kind === "exec" ? "shell" : "attach"} ${this.cid} · gateway`;
    this.refit();
    this.term.focus();
    renderStatus();
  }

  // setHash names the tab in the URL: a shell by its session, so that a
  // reload joins it again.
  setHash() {
    const h = this.session ? `#/session/${encodeURIComponent(this.session)}` : `#/${this.kind}/${encodeURIComponent(this.cid)}`;
    if (location.hash !== h) history.replaceState(null, "", h);
  }

  refit() {
    if (this.closed || !this.pane.classList.contains("active") || !app.loggedIn || this.viewOnly) return;
    try {
      this.fit.fit(); // fires onResize, which tells the gateway
    } catch (_) {
      // not laid out yet
    }
  }

  setState(state, text) {
    if (state !== this.state) {
      this.history.push(state);
      if (this.history.length > 100) this.history.shift();
    }
    this.state = state;
    this.text = text;
    this.tabButton.dataset.state = state;
    this.tabButton.querySelector(".dot").title = text;
    if (app.active === this) renderStatus();
  }

  // keptText says how long the shell outlives a drop.
  keptText() {
    if (!(this.detach > 0)) return "";
    return `shell kept ${formatAge(this.detach * 1000)} after a disconnect`;
  }

  // onInfo takes the gateway's session information: the shell to join
  // after a drop, and how long it is kept.
  onInfo(conn, info) {
    // A watcher's terminal takes the shell's size (the driver's), from the
    // start and at each resize, where it falls in the output.
    if (this.viewOnly && info.cols > 0 && info.rows > 0) this.term.resize(info.cols, info.rows);
    if (info.join === "resize") return;
    this.session = info.session || this.session;
    this.detach = info.detach || 0;
    this.viewOnly = this.viewOnly || !!info.viewOnly;
    this.tabButton.title = this.keptText();
    if (app.active === this && !app.viewing) this.setHash();
    if (conn.opened) {
      const parts = [this.viewOnly ? "watching (read-only)" : "connected"];
      if (this.detach > 0 && !this.viewOnly) parts.push(this.keptText());
      this.setState("connected", parts.join(" · "));
    }
    renderShare();
  }

  // connect opens a new stream. The connection object carries the
  // per-stream counters, so late callbacks of an old stream change nothing.
  connect() {
    this.stopRetry();
    if (this.closed) return;
    let ws;
    const protocols = [PROTOCOL];
    if (this.share) protocols.push(BEARER_PROTOCOL + base64url(this.share));
    try {
      ws = new WebSocket(this.url(), protocols);
    } catch (e) {
      this.setState("exited", `failed: ${e.message}`);
      return;
    }
    ws.binaryType = "arraybuffer";
    const conn = { ws, opened: false, openedAt: 0, status: null, queued: 0, processed: 0, acked: 0 };
    this.conn = conn;
    this.setState("connecting", this.everConnected ? "reconnecting…" : "connecting…");
    ws.onopen = () => this.onOpen(conn);
    ws.onmessage = (ev) => this.onMessage(conn, ev);
    ws.onclose = (ev) => this.onClose(conn, ev);
  }

  onOpen(conn) {
    if (this.conn !== conn) return;
    conn.opened = true;
    conn.openedAt = Date.now();
    if (this.everConnected && !this.session) {
      // (A shell joined again needs nothing: the gateway draws its screen
      // from a reset.)
      if (this.kind === "attach") {
        // The gateway replays the recent output: start from a clean screen
        // so nothing shows twice.
        this.term.write("\x1bc");
      } else {
        // A new shell: undo what the old program may have left on (the
        // alternate screen, mouse reporting, bracketed paste, modes).
        const alt = this.term.buffer.active.type === "alternate" ? "\x1b[?1049l" : "";
        this.term.write(`${alt}\x1b[!p\x1b[?1000l\x1b[?1002l\x1b[?1003l\x1b[?1006l\x1b[?2004l` +
          "\x1b[2m[new shell]\x1b[0m\r\n");
      }
    }
    this.everConnected = true;
    this.setState("connected", this.viewOnly ? "watching (read-only)" : "connected");
    if (!this.viewOnly) this.sendResize(); // right away: a tty exec starts at its first size
    refreshSessions().catch(showAPIError);
  }

  onMessage(conn, ev) {
    if (this.conn !== conn || !(ev.data instanceof ArrayBuffer)) return;
    const frame = new Uint8Array(ev.data);
    if (frame.length === 0) return;
    const payload = frame.subarray(1);
    switch (frame[0]) {
      case STDOUT:
      case STDERR:
        if (payload.length > 0) this.output(conn, payload);
        break;
      case STATUS:
        try {
          conn.status = JSON.parse(decoder.decode(payload));
        } catch (_) {
          conn.status = { status: "Failure", message: decoder.decode(payload) };
        }
        break;
      case INFO:
        try {
          this.onInfo(conn, JSON.parse(decoder.decode(payload)));
        } catch (_) {
          // not for this page
        }
        break;
      default:
      // nothing else comes from the gateway
    }
  }

  // output writes to the terminal and acknowledges what xterm.js has
  // processed: every ACK_EVERY bytes, and whenever it has caught up.
  output(conn, data) {
    const n = data.length;
    conn.queued += n;
    this.term.write(data, () => {
      conn.queued -= n;
      conn.processed += n;
      if (conn.processed - conn.acked >= ACK_EVERY || conn.queued === 0) this.ack(conn);
    });
  }

  ack(conn) {
    if (conn.processed <= conn.acked || conn.ws.readyState !== WebSocket.OPEN) return;
    conn.acked = conn.processed;
    this.send(conn, ACK, encoder.encode(String(conn.processed)));
  }

  send(conn, channel, payload) {
    const f = new Uint8Array(payload.length + 1);
    f[0] = channel;
    f.set(payload, 1);
    conn.ws.send(f);
  }

  onInput(bytes) {
    const conn = this.conn;
    if (conn && conn.opened && conn.ws.readyState === WebSocket.OPEN) {
      // A large paste goes in several messages: the gateway limits their
      // size (--max-message, 1 MiB by default).
      for (let i = 0; i < bytes.length; i += INPUT_CHUNK) {
        this.send(conn, STDIN, bytes.subarray(i, i + INPUT_CHUNK));
      }
      return;
    }
    // After the end, Enter starts again.
    if (this.state === "exited" && !this.viewOnly && bytes.length === 1 && (bytes[0] === 13 || bytes[0] === 10)) this.restart();
  }

  // restart opens a fresh stream after the end, on a clean screen: a new
  // shell, for a shell.
  restart() {
    if (this.kind === "exec") this.session = null;
    this.attempt = 0;
    this.everConnected = false;
    this.term.write("\x1bc");
    this.connect();
  }

  sendResize() {
    const conn = this.conn;
    if (!conn || !conn.opened || conn.ws.readyState !== WebSocket.OPEN || this.viewOnly) return;
    this.send(conn, RESIZE, encoder.encode(JSON.stringify({ Width: this.term.cols, Height: this.term.rows })));
  }

  onClose(conn, ev) {
    if (this.conn !== conn) return;
    this.conn = null;
    if (this.closed) return;
    if (app.loggedIn) refreshSessions().catch(showAPIError);
    if (ev.code === 1000) {
      this.finish(conn.status);
      return;
    }
    const reason = ev.reason || CLOSE_REASONS[ev.code] || `closed with code ${ev.code}`;
    if (ev.code === 4003 || (ev.code === 4000 && this.session)) {
      // The shell was ended (or the link that showed it revoked): there
      // is nothing to join again.
      let again = "";
      if (!this.viewOnly) {
        this.session = null;
        again = "; press Enter for a new shell";
      }
      this.notice(`connection closed: ${reason}${again}`);
      this.setState("exited", reason);
      renderShare();
      return;
    }
    if (conn.opened && Date.now() - conn.openedAt >= STABLE_MS) this.attempt = 0;
    if (!conn.opened) {
      // Refused before the upgrade (the browser does not say why): ask the
      // API whether retrying makes sense.
      this.diagnose();
      return;
    }
    let next = "reconnecting";
    if (this.kind === "exec") next = this.session ? "joining the same shell again" : "reconnecting starts a new shell";
    this.notice(`connection closed: ${reason}; ${next}`);
    this.retry(reason);
  }

  // finish shows how the process ended; the stream does not reconnect.
  finish(st) {
    let text;
    let line;
    if (!st || st.status === "Success") {
      text = "exited (0)";
      line = "process exited with code 0";
    } else {
      const causes = (st.details && st.details.causes) || [];
      const exit = causes.find((c) => c.reason === "ExitCode");
      if (st.reason === "NonZeroExitCode" && exit) {
        text = `exited (code ${exit.message})`;
        line = `process exited with code ${exit.message}`;
      } else {
        text = `failed: ${st.message || st.reason || "unknown error"}`;
        line = text;
      }
    }
    let again = "";
    if (this.viewOnly) again = "";
    else if (this.kind === "exec") again = "; press Enter for a new shell";
    else if (!this.term.options.disableStdin) again = "; press Enter to attach again";
    if (this.kind === "exec" && !this.viewOnly) this.session = null;
    this.notice(line + again);
    this.setState("exited", text);
    renderShare();
  }

  notice(msg) {
    this.term.write(`\x1b[0m\r\n\x1b[2;33m[${msg}]\x1b[0m\r\n`);
  }

  async diagnose() {
    if (this.session) {
      this.diagnoseSession();
      return;
    }
    let info;
    try {
      info = await api("GET", `/api/v1/containers/${encodeURIComponent(this.cid)}${this.node ? "?node=" + encodeURIComponent(this.node) : ""}`);
    } catch (e) {
      if (this.closed) return;
      if (e instanceof Unauthorized) {
        this.setState("logged-out", "logged out: log in to reconnect");
        return;
      }
      if (/not found/.test(e.message)) {
        this.notice(e.message);
        this.setState("exited", `failed: ${e.message}`);
        return;
      }
      this.retry("could not connect");
      return;
    }
    if (this.closed) return;
    this.info = info;
    const restarts = info.restartPolicy === "always" ||
      (info.restartPolicy === "on-failure" && info.exitCode !== 0);
    if (info.state !== "running" && !restarts) {
      const msg = `container ${this.cid} is ${info.state}`;
      this.notice(msg);
      this.setState("exited", `failed: ${msg}`);
      return;
    }
    this.retry(info.state === "running" ? "could not connect" : `container is ${info.state}`);
  }

  // diagnoseSession finds out why a join failed: the shell has ended (or
  // the share link no longer works), or the gateway was unreachable.
  async diagnoseSession() {
    if (this.share) {
      // A share link cannot ask the API: a few tries, then give up.
      if (this.attempt < 3) {
        this.retry("could not join");
        return;
      }
      this.notice("the session has ended, or the share link no longer works");
      this.setState("exited", "failed: the session is not available");
      return;
    }
    let s;
    try {
      s = await api("GET", `/api/v1/sessions/${encodeURIComponent(this.session)}`);
    } catch (e) {
      if (this.closed) return;
      if (e instanceof Unauthorized) {
        this.setState("logged-out", "logged out: log in to reconnect");
        return;
      }
      if (!/not found/.test(e.message)) {
        this.retry("could not connect");
        return;
      }
    }
    if (this.closed) return;
    if (!s || s.state === "closed") {
      this.session = null;
      this.notice("the shell has ended; press Enter for a new shell");
      this.setState("exited", "the shell has ended");
      renderShare();
      return;
    }
    this.retry("could not connect");
  }

  // retry reconnects after an exponential, jittered delay.
  retry(reason) {
    const base = Math.min(BACKOFF_MAX_MS, BACKOFF_MIN_MS * 2 ** this.attempt);
    const delay = Math.min(BACKOFF_MAX_MS, base * (0.75 + Math.random() * 0.5));
    this.attempt++;
    this.retryAt = Date.now() + delay;
    this.retryReason = reason;
    this.retryTimer = setTimeout(() => this.connect(), delay);
    const tick = () => {
      const s = Math.max(1, Math.ceil((this.retryAt - Date.now()) / 1000));
      this.setState("reconnecting", `reconnecting in ${s}s (${this.retryReason})`);
    };
    tick();
    this.countdown = setInterval(tick, 250);
  }

  stopRetry() {
    clearTimeout(this.retryTimer);
    clearInterval(this.countdown);
    this.retryTimer = 0;
    this.countdown = 0;
  }

  close() {
    if (this.closed) return;
    this.closed = true;
    this.stopRetry();
    // Closing a shell's tab ends the shell (a dropped connection or a
    // reload keeps it); a watcher only leaves.
    if (this.kind === "exec" && this.session && !this.share && this.state !== "exited") {
      api("DELETE", `/api/v1/sessions/${encodeURIComponent(this.session)}`).catch(() => {});
    }
    if (this.conn) {
      this.conn.ws.close(1000);
      this.conn = null;
    }
    const i = app.tabs.indexOf(this);
    app.tabs.splice(i, 1);
    this.term.dispose();
    this.pane.remove();
    this.tabButton.remove();
    if (app.active === this) {
      app.active = null;
      const next = app.tabs[Math.min(i, app.tabs.length - 1)];
      if (next) next.activate();
      else {
        document.body.classList.remove("has-terminal");
        history.replaceState(null, "", location.pathname + location.search);
        document.title = "gateway";
        renderStatus();
      }
    }
    renderShare();
  }
}

function base64url(s) {
  const bytes = encoder.encode(s);
  let bin = "";
  for (const b of bytes) bin += String.fromCharCode(b);
  return btoa(bin).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

// openSession opens a tab on a shell left running (from the sessions
// list): it joins it, and the gateway draws its screen.
async function openSession(id, cid) {
  const open = app.tabs.find((t) => t.session === id);
  if (open) {
    open.activate();
    return open;
  }
  let c = app.containers.get(cid);
  if (!c) c = { id: cid, tty: true, stdin: true };
  const tab = new Tab("exec", c, { session: id });
  app.tabs.push(tab);
  tab.activate();
  tab.connect();
  refreshSessions().catch(showAPIError);
  return tab;
}

// renderShare shows the share button for a shell this page drives.
function renderShare() {
  const t = app.active;
  $("share").hidden = !(t && t.session && !t.viewOnly && !t.share && t.state !== "exited" && !app.viewing);
  if ($("share").hidden) $("share-box").hidden = true;
}

// onShare makes a view-only link to the active shell and shows it.
async function onShare() {
  const t = app.active;
  if (!t || !t.session) return;
  try {
    const s = await api("POST", `/api/v1/sessions/${encodeURIComponent(t.session)}/shares`, { mode: "view", ttlSeconds: SHARE_TTL_SECONDS });
    const input = $("share-url");
    input.value = s.url;
    $("share-box").hidden = false;
    $("share-box").dataset.share = s.id;
    input.focus();
    input.select();
  } catch (e) {
    showAPIError(e);
  }
}

// viewShared opens the page of a share link: the one session, read-only,
// with no login.
function viewShared(session, token) {
  app.viewing = true;
  app.loggedIn = true; // nothing to log in to: the link is the grant
  document.body.classList.add("viewing");
  $("login").hidden = true;
  $("app").hidden = false;
  const tab = new Tab("exec", { id: "shared session", tty: true, stdin: false }, { session, share: token, viewOnly: true });
  app.tabs.push(tab);
  tab.activate();
  tab.connect();
}

// shareLink reads a #session=…&share=… link.
function shareLink() {
  const p = new URLSearchParams(location.hash.slice(1));
  const session = p.get("session");
  const share = p.get("share");
  return session && share ? { session, share } : null;
}

async function openTab(kind, cid) {
  let c = app.containers.get(cid);
  if (!c) {
    const [id, node] = cid.split("@");
    try {
      c = await api("GET", `/api/v1/containers/${encodeURIComponent(id)}${node ? "?node=" + encodeURIComponent(node) : ""}`);
    } catch (e) {
      showAPIError(e);
      return null;
    }
  }
  if (kind === "attach") {
    // One view of a main process is enough: show the one there is.
    const open = app.tabs.find((t) => t.kind === "attach" && (t.node ? `${t.cid}@${t.node}` : t.cid) === cid);
    if (open) {
      open.activate();
      if (open.state === "exited") {
        open.info = c;
        open.restart();
      }
      return open;
    }
  }
  const tab = new Tab(kind, c);
  app.tabs.push(tab);
  tab.activate();
  tab.connect();
  return tab;
}

// route opens the terminal of a #/exec/{id} or #/attach/{id} link, or
// joins the shell of a #/session/{id} one.
function route() {
  const s = /^#\/session\/([^/]+)$/.exec(location.hash);
  if (s && app.loggedIn) {
    const id = decodeURIComponent(s[1]);
    if (app.active && app.active.session === id) return;
    api("GET", `/api/v1/sessions/${encodeURIComponent(id)}`).then((info) => {
      if (info.state === "closed" || !(info.detach > 0)) {
        history.replaceState(null, "", location.pathname + location.search);
        return;
      }
      openSession(id, info.target);
    }).catch(showAPIError);
    return;
  }
  const m = /^#\/(exec|attach)\/([^/]+)$/.exec(location.hash);
  if (!m || !app.loggedIn) return;
  const kind = m[1];
  const cid = decodeURIComponent(m[2]);
  if (app.active && app.active.kind === kind && app.active.cid === cid) return;
  openTab(kind, cid);
}

function renderStatus() {
  renderShare();
  const s = $("status");
  const t = app.active;
  let state = "idle";
  let text = "";
  if (!app.loggedIn) {
    state = "logged-out";
    text = "";
  } else if (t) {
    state = t.state;
    text = t.text;
  }
  s.dataset.state = state;
  s.textContent = text;
}

// ---- start ----

let fitQueued = false;
function refitSoon() {
  if (fitQueued) return;
  fitQueued = true;
  requestAnimationFrame(() => {
    fitQueued = false;
    if (app.active) app.active.refit();
  });
}

// A small read-only hook for tests and debugging.
window.gatewayDebug = {
  // bufferText is the text of the active terminal, scrollback included,
  // down to the cursor or the last line with text; only its last n lines
  // if n is given.
  bufferText(n) {
    const t = app.active;
    if (!t) return "";
    const b = t.term.buffer.active;
    let end = b.baseY + b.cursorY;
    for (let i = b.length - 1; i > end; i--) {
      const line = b.getLine(i);
      if (line && line.translateToString(true) !== "") {
        end = i;
        break;
      }
    }
    const lines = [];
    for (let i = n > 0 ? Math.max(0, end + 1 - n) : 0; i <= end; i++) {
      const line = b.getLine(i);
      if (line) lines.push(line.translateToString(true));
    }
    return lines.join("\n");
  },
  status() {
    return app.active ? app.active.state : $("status").dataset.state;
  },
  // flow is the flow-control accounting of the active terminal's stream.
  flow() {
    const c = app.active && app.active.conn;
    return c ? { processed: c.processed, queued: c.queued, acked: c.acked } : null;
  },
  history() {
    return app.active ? [...app.active.history] : [];
  },
  statusText() {
    return $("status").textContent;
  },
  size() {
    return app.active ? { cols: app.active.term.cols, rows: app.active.term.rows } : null;
  },
  tabs() {
    return app.tabs.map((t) => ({ kind: t.kind, container: t.cid, state: t.state, active: t === app.active,
      session: t.session, viewOnly: t.viewOnly, detach: t.detach }));
  },
  // rows is the text of each row on the active terminal's screen.
  rows() {
    const t = app.active;
    if (!t) return [];
    const b = t.term.buffer.active;
    const out = [];
    for (let y = 0; y < t.term.rows; y++) {
      const line = b.getLine(b.viewportY + y);
      out.push(line ? line.translateToString(true) : "");
    }
    return out;
  },
  // player is the recording player, if one is open; playerText the text
  // of its screen, a line a row.
  player() {
    return app.player ? { id: app.playerID, time: app.player.getCurrentTime(), duration: app.player.getDuration(),
      speed: Number($("player-speed").value) } : null;
  },
  async seekEnd() {
    await app.player.seek("100%");
  },
  playerText() {
    return [...document.querySelectorAll("#player .ap-line")].map((l) => l.textContent.replace(/\s+$/, "")).join("\n");
  },
  // screen is rows with the cursor and which buffer is shown.
  screen() {
    const t = app.active;
    if (!t) return null;
    const b = t.term.buffer.active;
    return { rows: this.rows(), cursor: [b.cursorX, b.cursorY], alt: b.type === "alternate", cols: t.term.cols, rows_: t.term.rows };
  },
};

async function main() {
  $("login-form").addEventListener("submit", onLoginSubmit);
  $("logout").addEventListener("click", onLogout);
  $("share").addEventListener("click", onShare);
  $("player-close").addEventListener("click", closePlayer);
  $("player-speed").addEventListener("change", onSpeed);
  $("share-close").addEventListener("click", () => { $("share-box").hidden = true; });
  $("share-copy").addEventListener("click", async () => {
    try {
      await navigator.clipboard.writeText($("share-url").value);
    } catch (_) {
      $("share-url").select();
    }
  });
  window.addEventListener("resize", refitSoon);
  new ResizeObserver(refitSoon).observe($("terminal"));
  window.addEventListener("hashchange", () => {
    if (shareLink()) location.reload(); // a share link opened in this page: its view, afresh
    else if (app.viewing) return;
    else if (linkToken()) loginWithLink().then((ok) => ok && enter());
    else route();
  });
  document.addEventListener("visibilitychange", () => {
    if (!document.hidden) poll();
  });

  const shared = shareLink();
  if (shared) {
    viewShared(shared.session, shared.share);
    return;
  }
  if (linkToken() && !(await loginWithLink())) return;
  await enter();
}

// linkToken is the token of a #token=... link (the gateway's startup log
// prints one), or "".
function linkToken() {
  const m = /^#token=([^&]*)/.exec(location.hash);
  return m ? decodeURIComponent(m[1]) : "";
}

// loginWithLink takes the token out of the URL at once, then trades it for
// the cookie. It reports whether that worked.
async function loginWithLink() {
  const token = linkToken();
  history.replaceState(null, "", location.pathname + location.search);
  try {
    await login(token);
    return true;
  } catch (e) {
    showLogin();
    showLoginError(`The token in the link did not work: ${e.message}`);
    return false;
  }
}

main();
