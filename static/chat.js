// The chat page: one WebSocket to /ws, events one JSON object per line in each frame.
// User text is always inserted as text (textContent, or text nodes beside the <a> of a link and
// the <mark> of a mention), never as HTML; a desktop notification's body is plain text too.
//
// What the page keeps in localStorage (every value is checked when read: storage may be
// full, off, old, or edited by hand, and a bad value is dropped, never trusted):
//   chat.name    the name chosen in the dialog
//   chat.key     this browser's secret; the server shows others only its hash, `uid`
//   chat.rooms   the last RECENT_ROOMS rooms, newest first
//   chat.cids    the cids of one's last MY_CIDS messages (one's own after a reload)
//   chat.seen    per recent room, {id, epoch} of the newest message shown while the page was in
//                view: the "New messages" rule, and the unread counts of the room list
//   chat.drafts  per recent room, the message being typed there
//   chat.notify  "on" once desktop notifications were asked for, on a click
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const log = $("log"), statusEl = $("status"), membersEl = $("members"), typingEl = $("typing");
  const text = $("text"), composer = $("composer"), backdrop = $("backdrop");
  const params = new URLSearchParams(location.search);

  const BACKOFF_BASE_MS = 500, BACKOFF_CAP_MS = 30000;
  const GROUP_SECONDS = 300;         // a sender's messages this close together share one header
  const RECENT_ROOMS = 8;            // rooms remembered in the room list
  const ACTIVE_ROOMS = 8;            // other rooms with people online, listed under "Active now"
  const MY_CIDS = 500;               // cids of one's own last messages, kept across reloads
  const HISTORY_PAGE = 500;          // messages per API page when a resume fetches what a welcome left out (the API's most)
  const ROOMS_POLL_MS = 30000;       // how often the room list asks who is online, and counts unread
  const UNREAD_LIMIT = 100;          // messages counted per room; more show as "99+"
  const READ_ATTEMPTS = 5;           // tries of an API read refused with 429 (getJSON)
  const QUICK_RETURN_SECONDS = 60;   // left and back within this: a reload, not worth two lines
  const COLLAPSE_SECONDS = 600;      // joins and leaves in a row within this share one line
  const QUIET_SECONDS = 600;         // a message after this long a silence may raise a notification
  const LONG_PRESS_MS = 500;         // a touch held this long shows a message's full date
  const ROOM_RE = /^[a-z0-9_-]{1,32}$/;  // the protocol's room names
  const ID_RE = /^[0-9]{1,20}$/;     // message ids: the store's integers, as decimal strings
  // http(s) links in message text; trailing punctuation belongs to the sentence, not the link
  const URL_RE = /\bhttps?:\/\/[^\s<>"'`]+/gi, URL_TAIL = ".,;:!?]}'\"";
  const TIME = { hour: "2-digit", minute: "2-digit" };

  let name = (params.get("name") || loadString("chat.name")).trim();
  let room = document.body.dataset.room || "lobby";
  let ws = null, attempt = 0, retryTimer = null, countdown = null;
  let me = null;                     // {id, name, uid} of the current connection
  let lastError = null;              // code of the last error event: says why a 1008 came
  let refused = false;               // the server refused our parameters: retrying would not help
  const myIds = new Set();           // every id this page has had: own messages stay "mine"
  const myKey = loadKey();           // this browser's secret: its uid (public) is the sender of its messages
  let myUid = null;                  // from the welcome
  const myCids = new Set(loadJSON("chat.cids", []).filter((c) => typeof c === "string"));  // and after a reload
  const seen = new Set();            // message ids shown in this room (a resume shows none twice)
  let lastId = null;                 // newest message id shown, for ?since= on reconnect
  let held = null;                   // events that came while a welcome's gap is fetched (see fillGap)
  let lastTs = null;                 // its time: a message long after it comes to a quiet room
  let epoch = null;                  // the welcome's epoch that lastId belongs to (&epoch=)
  let newAfter = null;               // the first other's message after this id gets the "New messages" rule
  const members = new Map();         // connection id -> {name, uid}
  let total = null;                  // a big room's member count, as told; null: count the list
  const pending = new Map();         // cid -> message event not yet echoed; resent on every welcome
  const typers = new Map();          // id -> {name, timer clearing "is typing"}
  const lastLeave = new Map();       // person -> {ts, line} of their leave: a quick return takes it back
  const presenceLines = new WeakMap();  // a join/leave line -> {joined, left: Map person -> name, since}
  let unread = 0;                    // messages that came while the tab was hidden (in the title)
  let online = new Map();            // room -> people online, from the last GET /api/rooms
  const unreadIn = new Map();        // other room -> its messages since its chat.seen mark

  // -- localStorage: read with a fallback, written without failing --------------------------------
  function loadString(key) {
    try {
      return localStorage.getItem(key) || "";
    } catch {
      return "";  // storage off
    }
  }

  function loadJSON(key, fallback) {  // a kept value of the fallback's type, or the fallback
    try {
      const value = JSON.parse(loadString(key) || "null");
      return Array.isArray(fallback) === Array.isArray(value) && typeof value === typeof fallback && value !== null
        ? value : fallback;
    } catch {
      return fallback;
    }
  }

  function store(key, value) {
    try {
      localStorage.setItem(key, typeof value === "string" ? value : JSON.stringify(value));
    } catch {
      // full, or storage is off (private mode): the page works, it just forgets next time
    }
  }

  // A per-room map (chat.seen, chat.drafts): only well-formed room names and values.
  function loadPerRoom(key, valid) {
    const kept = loadJSON(key, {});
    return Object.fromEntries(Object.entries(kept).filter(([r, v]) => ROOM_RE.test(r) && valid(v)));
  }

  // ...and kept for the recent rooms only, so that it stays small.
  function storePerRoom(key, map) {
    const keep = new Set([room, ...recentRooms()]);
    store(key, Object.fromEntries(Object.entries(map).filter(([r]) => keep.has(r))));
  }

  // This browser's key, made once and kept: a secret (16 to 64 of A-Z a-z 0-9 _ -).
  function loadKey() {
    let key = loadString("chat.key");
    if (!/^[A-Za-z0-9_-]{16,64}$/.test(key)) {
      const bytes = crypto.getRandomValues(new Uint8Array(18));
      key = btoa(String.fromCharCode(...bytes)).replace(/\+/g, "-").replace(/\//g, "_");
      store("chat.key", key);
    }
    return key;
  }

  // -- connection: one socket at a time ---------------------------------------------------------
  // Invariant: `ws` is the only socket whose events count. Every other one (replaced by a room
  // switch, dropped offline, closing) is ignored by its own handlers (`socket !== ws`).
  function connect() {
    clearTimeout(retryTimer);
    clearInterval(countdown);
    dropSocket("reconnecting");  // never two sockets: the one in progress gives way
    held = null;  // a gap fill of the socket given way is over
    if (!navigator.onLine) return setStatus("closed", "Offline");  // the "online" event connects
    setStatus("connecting", "Connecting…");
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    const query = new URLSearchParams({ room, name, key: myKey });
    if (lastId !== null) query.set("since", lastId);
    if (lastId !== null && epoch !== null) query.set("epoch", epoch);
    const socket = new WebSocket(`${scheme}//${location.host}/ws?${query}`);
    ws = socket;
    socket.onmessage = (e) => {
      if (socket !== ws) return;
      for (const line of String(e.data).split("\n")) {
        if (!line) continue;
        if (held) held.push(JSON.parse(line));  // after a welcome whose gap is being fetched
        else handle(JSON.parse(line));
      }
    };
    socket.onclose = (e) => {
      if (socket !== ws) return;       // a socket we replaced on purpose (room switch)
      ws = null;
      me = null;
      if (e.code === 1008 && lastError === "bad_param") {  // refused: retrying would not help
        refused = true;
        setStatus("closed", `Offline: ${e.reason || "refused"}`);
        return;
      }
      // 1001: the server restarts; 1012: its delivery is back. Both: reconnect now, with since.
      scheduleReconnect(e.code === 1001 || e.code === 1012 ? 0 : undefined);
    };
  }

  function scheduleReconnect(delayMs) {
    if (delayMs === undefined) {
      // exponential backoff with "equal jitter" (half fixed, half random), capped
      const ceiling = Math.min(BACKOFF_CAP_MS, BACKOFF_BASE_MS * 2 ** attempt);
      delayMs = ceiling / 2 + Math.random() * ceiling / 2;
    } else {
      delayMs += Math.random() * BACKOFF_BASE_MS;  // server restart: everyone at once, spread a bit
    }
    attempt += 1;
    const due = Date.now() + delayMs;
    const show = () => setStatus("closed", `Reconnecting in ${Math.max(0, Math.ceil((due - Date.now()) / 1000))} s`);
    show();
    countdown = setInterval(show, 1000);
    retryTimer = setTimeout(connect, delayMs);
  }

  // The device lost its network. Its socket cannot be trusted (it may hang for minutes, or
  // carry on later as if nothing happened): drop it, say so, and wait for the network rather
  // than count down retries. When it is back: a new socket, with `since`, and what was typed
  // meanwhile is sent (once: the server keeps one message per cid).
  addEventListener("offline", () => {
    if (!name || refused) return;      // not connecting anyway
    clearTimeout(retryTimer);
    clearInterval(countdown);
    dropSocket("offline");
    setStatus("closed", "Offline");
  });
  addEventListener("online", () => {
    if (!name || refused || ws) return;  // no name yet (the dialog connects), refused, or connecting
    attempt = 0;
    connect();
  });

  // Close the current socket, if any, on purpose: its onclose sees it is no longer `ws` and
  // schedules nothing.
  function dropSocket(reason) {
    if (!ws) return;
    const old = ws;
    ws = null;
    me = null;
    old.close(1000, reason);
  }

  function send(event) {
    if (ws && ws.readyState === WebSocket.OPEN && me) {
      ws.send(JSON.stringify(event));
      return true;
    }
    return false;
  }

  function setStatus(state, label) {
    statusEl.dataset.state = state;
    statusEl.textContent = label;
  }

  // -- events from the server ---------------------------------------------------------------------
  function handle(event) {
    switch (event.type) {
      case "welcome": return welcome(event);
      case "message": return addMessage(event);
      case "join": return joined(event.user, event.ts);
      case "leave": return left(event.user, event.ts);
      case "presence":  // a big room: a count, not each join and leave
        total = event.member_count;
        return renderMembers();
      case "typing": return showTyping(event.user);
      case "error": return failed(event);
      default: return;  // newer servers may send more: ignore what we do not know
    }
  }

  function welcome(event) {
    me = event.you;
    myIds.add(me.id);
    myUid = me.uid ?? null;
    $("my-name").textContent = me.name;
    attempt = 0;
    members.clear();
    for (const m of event.members) members.set(m.id, { name: m.name, uid: m.uid });
    members.set(me.id, { name: me.name, uid: me.uid });  // a big room's welcome lists only some: always list oneself
    total = (event.member_count ?? 0) > members.size ? event.member_count : null;
    renderMembers();
    if (event.reset) {  // the server's history is not the one we showed (its store lost it): start afresh
      clearLog();
      addSystem("The server's history was reset; this is what it holds now.");
    } else if (event.truncated && lastId !== null) {
      addSystem("Some messages from while you were away are no longer kept.");
    } else if (event.more && lastId !== null && event.history.length) {
      // The welcome carries a bounded number of bytes: the oldest of what came while we were
      // away is fetched first, and what the socket brings meanwhile waits for it.
      held = [];
      return fillGap(ws, event);
    }
    showHistory(event, event.history);
  }

  // A resume's welcome with `more`: the messages after lastId and before the welcome's own,
  // fetched from the API page by page, go in before them. Events that came meanwhile are
  // handled after. Should the API fail, what the welcome has is shown, and says so.
  async function fillGap(socket, event) {
    setStatus("connecting", "Catching up…");
    const first = Number(event.history[0].id);  // ids come as strings: compared as numbers
    const gap = [];
    let complete = false, failed = false;
    for await (const page of pagesAfter(room, lastId, event.epoch, HISTORY_PAGE)) {
      failed = !page;
      if (socket !== ws || !page || page.reset || page.truncated) break;
      const before = page.messages.filter((m) => Number(m.id) < first);
      gap.push(...before);
      complete = before.length < page.messages.length || page.last;  // at the welcome's first, or all
      if (complete) break;
    }
    if (socket !== ws) return;  // dropped or replaced meanwhile: its successor starts again
    if (failed) addSystem("Some of what came while you were away could not be fetched, and is not shown.");
    else if (!complete) addSystem("More came while you were away than fits here: the oldest of it is not shown.");
    showHistory(event, [...gap, ...event.history]);
    const later = held;
    held = null;
    for (const queued of later) handle(queued);
  }

  function showHistory(event, history) {
    // On a resume the history is what came while we were away: it counts as unread. On a first
    // join, what came since this room was last in view gets the "New messages" rule.
    const resumed = lastId !== null;
    if (!resumed) {
      const mark = loadSeen()[event.room];
      newAfter = mark && mark.epoch === (event.epoch ?? null) ? mark.id ?? "0" : null;
    }
    epoch = event.epoch ?? null;
    // History goes in with one insertion (no jump while it loads).
    const batch = document.createDocumentFragment();
    for (const message of history) addMessage(message, batch, resumed);
    append(batch);
    if (!resumed) newAfter = null;  // the rule is for what came while away, not for what comes next
    if (!log.querySelector(".msg, .empty")) showEmpty();
    remember(event.room);
    markSeen();
    setStatus("open", "Live");
    lastError = null;
    resendPending(ws);
    pollRooms();
  }

  // Typed while offline, or sent but not echoed before a drop: the server keeps one per cid.
  // Paced (a burst of 10, then under the server's rate limit) so that a long backlog is not
  // taken for a flood.
  function resendPending(socket, backlog = [...pending.values()], burst = 10) {
    while (backlog.length && burst-- > 0) {
      if (socket !== ws) return;
      const message = backlog.shift();
      if (pending.has(message.cid)) send(message);
    }
    if (backlog.length) setTimeout(() => resendPending(socket, backlog, 1), 600);
  }

  // An error about one of our messages (it carries the cid): a passing condition leaves it
  // pending, to be sent again after the next reconnect; anything else means it never will be.
  function failed(event) {
    lastError = event.code;
    addSystem(event.detail || event.code, "error");
    if (!event.cid || event.code === "unavailable" || event.code === "rate_limited") return;
    if (!pending.delete(event.cid)) return;
    const node = log.querySelector(`[data-cid="${CSS.escape(event.cid)}"]`);
    if (node) {
      node.classList.replace("pending", "failed");
      node.title = `Not sent: ${event.detail || event.code}`;
    }
  }

  // -- the log ------------------------------------------------------------------------------------
  function atBottom() {
    return log.scrollHeight - log.scrollTop - log.clientHeight < 8;
  }

  // Whether the reader is at the newest message, as of their last scroll: when the log gets
  // shorter (an on-screen keyboard opens) a reader who was there stays there.
  let following = true;
  log.addEventListener("scroll", () => { following = atBottom(); }, { passive: true });

  // `node` at the end of the log (or of `into`, a fragment that goes in later, in one piece).
  function append(node, into = null) {
    if (into) return into.append(node);
    const follow = atBottom();       // follow only a reader who was already at the bottom
    log.append(node);
    if (follow) log.scrollTop = log.scrollHeight;
  }

  function clearLog() {
    log.replaceChildren();
    seen.clear();
    lastId = null;
    lastTs = null;
    newAfter = null;
  }

  // A message right after one from the same sender, within GROUP_SECONDS, shows no header.
  function group(node, into, prev = (into && into.lastElementChild) || log.lastElementChild) {
    node.classList.toggle("cont", Boolean(prev && prev.classList.contains("msg") &&
      prev.dataset.user === node.dataset.user &&
      Number(node.dataset.ts) - Number(prev.dataset.ts) < GROUP_SECONDS));
  }

  function unlist(node) {  // take a line out; the one after it may now start a group
    if (!node) return;
    const next = node.nextElementSibling, prev = node.previousElementSibling;
    node.remove();
    if (prev && prev.classList.contains("day") && (!next || next.classList.contains("day"))) {
      prev.remove();  // a day with nothing left under it
    } else if (next && next.classList.contains("msg")) {
      group(next, null, prev);
    }
  }

  // A message (or a join and leave line) goes in under the rule of its day: a new day's first
  // one gets "Today", "Yesterday" or its date above it.
  function insertDated(node, ts, into = null) {
    const day = dayOf(ts);
    node.dataset.day = day;
    const prev = lastDated(into);
    if (!prev || prev.dataset.day !== day) {
      const rule = document.createElement("li");
      rule.className = "rule day";
      rule.dataset.day = day;
      rule.dataset.ts = String(ts);
      rule.append(dayLabel(ts));
      append(rule, into);
    }
  }

  function lastDated(into) {
    for (const list of into ? [into, log] : [log]) {
      for (let n = list.lastElementChild; n; n = n.previousElementSibling) {
        if (n.dataset.day) return n;
      }
    }
    return null;
  }

  function dayOf(ts) {
    const d = new Date(ts * 1000);
    return `${d.getFullYear()}-${d.getMonth() + 1}-${d.getDate()}`;
  }

  function dayLabel(ts) {
    const date = new Date(ts * 1000), today = new Date();
    const midnight = (d) => new Date(d.getFullYear(), d.getMonth(), d.getDate()).getTime();
    const days = Math.round((midnight(today) - midnight(date)) / 86400000);
    if (days === 0) return "Today";
    if (days === 1) return "Yesterday";
    const year = date.getFullYear() === today.getFullYear() ? undefined : "numeric";
    return date.toLocaleDateString([], { weekday: "long", day: "numeric", month: "long", year });
  }

  function relabelDays() {  // "Today" becomes "Yesterday" at midnight
    for (const rule of log.querySelectorAll(".rule.day")) rule.textContent = dayLabel(Number(rule.dataset.ts));
  }

  // The "New messages" rule: one at a time, above the first message that came while the reader
  // was away (in another room, or with the tab hidden).
  function markNew(into) {
    log.querySelector(".rule.new")?.remove();
    const rule = document.createElement("li");
    rule.className = "rule new";
    rule.textContent = "New messages";
    append(rule, into);
  }

  function showEmpty() {
    const li = document.createElement("li");
    li.className = "empty";
    const title = document.createElement("strong");
    title.textContent = `This is the start of #${room}`;
    li.append(title, "No messages yet. Say hello: the first message starts the conversation.");
    log.append(li);
  }

  function isMe(user) {
    return myIds.has(user.id) || (myUid !== null && user.uid === myUid);
  }

  // Mine: sent with this browser's key. A message without a uid (stored before there were any)
  // is known by this page's connection ids and cids.
  function isMine(message) {
    return message.user.uid !== undefined ? message.user.uid === myUid
      : myIds.has(message.user.id) || (message.cid !== undefined && myCids.has(message.cid));
  }

  function addMessage(message, into = null, live = true) {
    // One's own message, shown while on its way, gives way to the stored one, which goes in
    // the room's order (typed offline, it comes after what others said meanwhile).
    if (message.cid && pending.delete(message.cid)) {
      unlist(log.querySelector(`[data-cid="${CSS.escape(message.cid)}"]`));
    }
    if (seen.has(message.id)) return;
    seen.add(message.id);
    const mine = isMine(message);
    const mention = !mine && mentions(message.text).length > 0;
    const quiet = lastTs === null || message.ts - lastTs > QUIET_SECONDS;
    lastId = message.id;
    lastTs = message.ts;
    const node = messageNode(message.user, message.text, message.ts, mine);
    node.classList.toggle("mention", mention);
    log.querySelector(".empty")?.remove();
    insertDated(node, message.ts, into);
    if (!mine && newAfter !== null && newer(message.id, newAfter)) {
      markNew(into);
      newAfter = null;
    }
    group(node, into);
    append(node, into);
    if (live) clearTyping(message.user.id);  // their message came: they are no longer typing
    if (document.hidden) {
      if (!mine && live) countUnread(message, mention, quiet && !into);
    } else if (!into) {
      markSeen();  // a batch is marked once, by the welcome
    }
  }

  // Message ids are decimal strings of the store's integers: longer is newer, then by digits.
  function newer(id, than) {
    return id.length !== than.length ? id.length > than.length : id > than;
  }

  function messageNode(user, body, ts, mine) {
    const li = document.createElement("li");
    li.className = mine ? "msg mine" : `msg ${hue(user)}`;
    li.dataset.user = mine ? "me" : user.uid ?? user.id;  // a person's messages group across reconnects
    li.dataset.ts = String(ts);
    if (!mine) {
      const avatar = document.createElement("span");
      avatar.className = "avatar";
      avatar.setAttribute("aria-hidden", "true");
      avatar.textContent = [...user.name.trim()][0]?.toUpperCase() ?? "?";
      li.append(avatar);
    }
    const meta = document.createElement("div");
    meta.className = "meta";
    const who = document.createElement("span");
    who.className = "who";
    who.textContent = user.name;
    meta.append(who, timeNode(ts));
    const p = document.createElement("div");
    p.className = "body";
    linkify(p, body);
    li.append(meta, p);
    return li;
  }

  // A person's colour (name and avatar): one of eight, from their uid (or name), the same everywhere.
  function hue(user) {
    let h = 0;
    for (const c of user.uid ?? user.name) h = (h * 31 + c.codePointAt(0)) >>> 0;
    return `c${h % 8}`;
  }

  // The time of day; the full date and time on hover (title) or a long press (.reveal).
  function timeNode(ts) {
    const when = document.createElement("time");
    const date = new Date(ts * 1000);
    when.dateTime = date.toISOString();
    when.title = fullDate(date);
    when.textContent = date.toLocaleTimeString([], TIME);
    return when;
  }

  function fullDate(date) {
    return date.toLocaleString([], { dateStyle: "full", timeStyle: "short" });
  }

  // The text into `container` as text nodes, with each http(s) URL in it as a link whose text
  // is the URL, and each mention of oneself marked: nothing in `body` is ever parsed as HTML.
  function linkify(container, body) {
    let at = 0;
    for (const match of body.matchAll(URL_RE)) {
      const url = trimUrl(match[0]);
      if (match.index > at) markMentions(container, body.slice(at, match.index));
      const a = document.createElement("a");
      a.href = url;
      a.textContent = url;
      a.target = "_blank";
      a.rel = "noopener noreferrer nofollow";
      container.append(a);
      at = match.index + url.length;
    }
    if (at < body.length) markMentions(container, body.slice(at));
  }

  function markMentions(container, part) {
    let at = 0;
    for (const [start, end] of mentions(part)) {
      const mark = document.createElement("mark");
      mark.className = "at-me";
      mark.textContent = part.slice(start, end);
      container.append(part.slice(at, start), mark);
      at = end;
    }
    container.append(part.slice(at));
  }

  // Where `text` says "@" and one's name (any case), not followed by more of a word: [start, end] pairs.
  function mentions(text) {
    const who = (me?.name ?? name).toLowerCase();
    if (!who) return [];
    const lower = text.toLowerCase(), at = `@${who}`, found = [];
    for (let i = lower.indexOf(at); i >= 0; i = lower.indexOf(at, i + 1)) {
      if (!/^[\p{L}\p{N}_]/u.test(lower.slice(i + at.length))) found.push([i, i + at.length]);
    }
    return found;
  }

  // Trailing punctuation ends the sentence, not the link; a ")" stays when the link opened one
  // (https://en.wikipedia.org/wiki/Go_(game)).
  function trimUrl(url) {
    for (;;) {
      const last = url.at(-1);
      if (last === ")") {
        if (url.split(")").length <= url.split("(").length) return url;  // balanced: the link's
      } else if (!URL_TAIL.includes(last)) {
        return url;
      }
      url = url.slice(0, -1);  // ends: every match starts with "http://" or "https://"
    }
  }

  function addSystem(textContent, kind) {
    const li = document.createElement("li");
    li.className = kind ? `system ${kind}` : "system";
    li.textContent = textContent;
    append(li);
  }

  // A long press (touch) on a message shows its full date and time, as a hover does with a mouse.
  let pressTimer = null;
  log.addEventListener("pointerdown", (e) => {
    const msg = e.target.closest(".msg");
    if (!msg || e.pointerType === "mouse") return;
    clearTimeout(pressTimer);
    pressTimer = setTimeout(() => reveal(msg), LONG_PRESS_MS);
  });
  for (const type of ["pointerup", "pointercancel", "pointerleave"]) {
    log.addEventListener(type, () => clearTimeout(pressTimer));
  }

  function reveal(msg) {
    const shown = msg.classList.toggle("reveal");
    const when = msg.querySelector("time");
    const date = new Date(when.dateTime);
    when.textContent = shown ? fullDate(date) : date.toLocaleTimeString([], TIME);
  }

  // -- joins and leaves ---------------------------------------------------------------------------
  // One line per run of joins and leaves (COLLAPSE_SECONDS), with its time. A person is their
  // uid: a second tab, or a reload whose new connection joins before the old one leaves, says
  // nothing; a leave followed by a return within QUICK_RETURN_SECONDS is taken back.
  function person(user) {
    return user.uid ?? `id:${user.id}`;
  }

  function hereElsewhere(user) {  // the same person on another connection in this room
    return user.uid !== undefined && [...members].some(([id, m]) => id !== user.id && m.uid === user.uid);
  }

  function joined(user, ts) {
    const again = hereElsewhere(user);
    if (total !== null && !members.has(user.id)) total += 1;
    members.set(user.id, { name: user.name, uid: user.uid });
    renderMembers();
    if (isMe(user) || again) return;
    const leave = lastLeave.get(person(user));
    lastLeave.delete(person(user));
    if (leave && ts - leave.ts < QUICK_RETURN_SECONDS && leave.line.isConnected) {
      presenceLines.get(leave.line).left.delete(person(user));
      return renderPresence(leave.line);
    }
    const line = presenceLine(ts);
    presenceLines.get(line).joined.set(person(user), user.name);
    renderPresence(line, ts);
  }

  function left(user, ts) {
    members.delete(user.id);
    if (total !== null) total = Math.max(0, total - 1);
    renderMembers();
    clearTyping(user.id);
    if (isMe(user) || hereElsewhere(user)) return;
    const line = presenceLine(ts);
    presenceLines.get(line).left.set(person(user), user.name);
    lastLeave.set(person(user), { ts, line });
    renderPresence(line, ts);
  }

  function presenceLine(ts) {  // the last line of the log if it is a recent join/leave line, or a new one
    const last = log.lastElementChild;
    const kept = last && presenceLines.get(last);
    if (kept && ts - kept.since < COLLAPSE_SECONDS) return last;
    const li = document.createElement("li");
    li.className = "system presence";
    presenceLines.set(li, { joined: new Map(), left: new Map(), since: ts });
    insertDated(li, ts);
    append(li);
    return li;
  }

  function renderPresence(li, ts) {
    const { joined: came, left: went } = presenceLines.get(li);
    if (!came.size && !went.size) return unlist(li);
    const parts = [];
    if (came.size) parts.push(`${people([...came.values()])} joined`);
    if (went.size) parts.push(`${people([...went.values()])} left`);
    const said = parts.join(", ");
    const when = ts === undefined ? li.querySelector("time") : timeNode(ts);
    if (came.size < 3 && went.size < 3) return li.replaceChildren(said, " ", when);
    // many: "5 people joined", and who they are on a click
    const details = document.createElement("details");
    const summary = document.createElement("summary");
    summary.textContent = said;
    const names = [];
    if (came.size) names.push(`Joined: ${[...came.values()].join(", ")}.`);
    if (went.size) names.push(`Left: ${[...went.values()].join(", ")}.`);
    details.append(summary, ` ${names.join(" ")}`);
    li.replaceChildren(details, " ", when);
  }

  function people(names) {
    if (names.length === 1) return names[0];
    if (names.length === 2) return `${names[0]} and ${names[1]}`;
    return `${names.length} people`;
  }

  // -- people and typing --------------------------------------------------------------------------
  function renderMembers() {
    // One line per person (their uid): two tabs of one person are one person.
    const byPerson = new Map();
    for (const [id, m] of members) {
      const key = person({ id, uid: m.uid });
      if (!byPerson.has(key) || (me && id === me.id)) byPerson.set(key, { id, name: m.name });
    }
    const sorted = [...byPerson.values()].sort((a, b) => a.name.localeCompare(b.name));
    membersEl.replaceChildren(...sorted.map(({ id, name: memberName }) => {
      const li = document.createElement("li");
      li.textContent = memberName;
      li.dataset.id = id;
      if (me && id === me.id) li.className = "me";
      return li;
    }));
    // A big room lists those its welcome named (some may have left since) and counts all.
    const count = total ?? sorted.length;
    if (count > sorted.length) {
      const more = document.createElement("li");
      more.className = "more";
      more.textContent = `and ${(count - sorted.length).toLocaleString()} more`;
      membersEl.append(more);
    }
    $("member-count").textContent = String(count);
  }

  function showTyping(user) {
    if (isMe(user)) return;
    clearTimeout(typers.get(user.id)?.timer);
    typers.set(user.id, { name: user.name, timer: setTimeout(() => clearTyping(user.id), 3000) });
    renderTyping();
  }

  function clearTyping(id) {
    if (!typers.has(id)) return;
    clearTimeout(typers.get(id).timer);
    typers.delete(id);
    renderTyping();
  }

  function renderTyping() {
    const names = [...typers.values()].map((t) => t.name);
    typingEl.textContent = names.length === 0 ? "" :
      names.length === 1 ? `${names[0]} is typing…` : `${names.join(", ")} are typing…`;
  }

  // -- attention: the title's count, where the reader left off, notifications ---------------------
  function countUnread(message, mention, quiet) {
    unread += 1;
    showTitle();
    if (mention || quiet) notify(message, mention);
  }

  function showTitle() {
    document.title = `${unread ? `(${unread}) ` : ""}Chat · #${room}`;
  }

  // The newest message shown while the page is in view: where the reader is. Not while the tab
  // is hidden: what comes then is new when they are back.
  function markSeen() {
    if (document.hidden || me === null) return;
    const marks = loadSeen();
    marks[room] = { id: lastId, epoch };
    storePerRoom("chat.seen", marks);
  }

  function loadSeen() {
    return loadPerRoom("chat.seen", (v) => v !== null && typeof v === "object" &&
      (v.id === null || (typeof v.id === "string" && ID_RE.test(v.id))) &&
      (v.epoch === null || (typeof v.epoch === "string" && v.epoch.length <= 64)));
  }

  document.addEventListener("visibilitychange", () => {
    if (document.hidden) {
      newAfter = lastId ?? "0";  // what comes now is new when the reader is back
      return;
    }
    newAfter = null;
    unread = 0;
    showTitle();
    relabelDays();
    markSeen();
  });

  // Desktop notifications: asked for on a click, never on load; then, while the tab is hidden,
  // a mention of oneself or a message that breaks a quiet spell raises one.
  function notifyWanted() {
    return "Notification" in window && Notification.permission === "granted" && loadString("chat.notify") === "on";
  }

  function notify(message, mention) {
    if (!notifyWanted()) return;
    const title = mention ? `${message.user.name} mentioned you in #${room}` : `${message.user.name} in #${room}`;
    try {
      const shown = new Notification(title, { body: message.text.slice(0, 240), tag: `chat-${room}` });
      shown.onclick = () => {
        focus();
        shown.close();
      };
    } catch {
      // a browser that shows notifications only through a service worker (Chrome on Android)
    }
  }

  function renderNotify(label = null) {
    const on = notifyWanted();
    $("notify").setAttribute("aria-pressed", String(on));
    $("notify-label").textContent = label ?? (on ? "Notifying" : "Notify me");
  }

  $("notify").addEventListener("click", async () => {
    if (!("Notification" in window)) return renderNotify("Not supported here");
    if (notifyWanted()) {
      store("chat.notify", "off");
      return renderNotify();
    }
    const answer = Notification.permission === "granted" ? "granted" : await Notification.requestPermission();
    if (answer === "granted") store("chat.notify", "on");
    renderNotify(answer === "denied" ? "Blocked by the browser" : null);
  });

  // -- rooms: the list, unread counts, switching ----------------------------------------------------
  function recentRooms() {
    return loadJSON("chat.rooms", []).filter((r) => typeof r === "string" && ROOM_RE.test(r));
  }

  function remember(current) {
    store("chat.rooms", [current, ...recentRooms().filter((r) => r !== current)].slice(0, RECENT_ROOMS));
    renderRooms();
  }

  function renderRooms() {
    // The lists are made anew (each poll): a room's link that had the focus gets it back, or a
    // keyboard user's focus would fall to the page every 30 s.
    const focused = document.activeElement?.closest("#rooms a, #active-rooms a")?.getAttribute("href");
    const recent = recentRooms();
    if (!recent.includes(room)) recent.unshift(room);
    $("rooms").replaceChildren(...recent.map(roomItem));
    const active = [...online].filter(([r]) => !recent.includes(r))
      .sort((a, b) => b[1] - a[1] || a[0].localeCompare(b[0])).slice(0, ACTIVE_ROOMS);
    $("active-rooms").replaceChildren(...active.map(([r]) => roomItem(r)));
    const links = [...document.querySelectorAll("#rooms a, #active-rooms a")];
    if (focused) links.find((a) => a.getAttribute("href") === focused)?.focus();
    $("active-title").hidden = active.length === 0;
    const elsewhere = recent.reduce((sum, r) => sum + (r === room ? 0 : unreadIn.get(r) ?? 0), 0);
    const badge = $("rooms-unread");
    badge.hidden = elsewhere === 0;
    badge.replaceChildren(countText(elsewhere), sr(" unread"));
  }

  function roomItem(r) {
    const li = document.createElement("li");
    const a = document.createElement("a");
    a.href = `/r/${r}${location.search}`;
    a.title = `#${r}`;
    const hash = document.createElement("span");
    hash.className = "hash";
    hash.setAttribute("aria-hidden", "true");
    hash.textContent = "#";
    const label = document.createElement("span");
    label.className = "label";
    label.textContent = r;
    a.append(hash, label);
    const count = r === room ? 0 : unreadIn.get(r) ?? 0;
    if (r === room) {
      a.setAttribute("aria-current", "page");
    } else if (count) {
      a.classList.add("has-unread");
      const badge = document.createElement("span");
      badge.className = "count";
      badge.append(countText(count), sr(" unread"));
      a.append(badge);
    } else if (online.has(r)) {
      const here = document.createElement("span");
      here.className = "online";
      here.textContent = `${online.get(r)} online`;
      a.append(here);
    }
    li.append(a);
    return li;
  }

  function countText(n) {
    return n >= UNREAD_LIMIT ? `${UNREAD_LIMIT - 1}+` : String(n);
  }

  function sr(words) {  // words for a screen reader only
    const span = document.createElement("span");
    span.className = "sr";
    span.textContent = words;
    return span;
  }

  // Unread counts of the other rooms: every ROOMS_POLL_MS (and after each welcome) the rooms
  // with people online, then, for each recent room among them, its messages after its
  // chat.seen mark (the first UNREAD_LIMIT, not one's own). A room with no one online has no
  // new messages to count but a bot's, and keeps the count it had.
  async function pollRooms() {
    const named = new URLSearchParams(recentRooms().map((r) => ["room", r]));  // counted now; the rest may lag
    const listed = await getJSON(`/api/rooms?${named}`);
    if (!listed || !Array.isArray(listed.rooms)) return;
    const rooms = listed.rooms.filter((r) => r && ROOM_RE.test(r.room) && Number.isInteger(r.members));
    online = new Map(rooms.filter((r) => r.members > 0).map((r) => [r.room, r.members]));
    // A recent room is counted again when its newest message is not the one seen there: new
    // ones came (from people who may have gone since), or its history started again.
    const last = new Map(rooms.map((r) => [r.room, Number(r.last)]));
    const marks = loadSeen();
    const moved = (r) => last.has(r) && last.get(r) !== Number(marks[r].id ?? 0);
    const asked = recentRooms().filter((r) => r !== room && marks[r] && moved(r));
    await Promise.all(asked.map((r) => countNew(r, marks[r])));
    renderRooms();
  }

  async function countNew(r, mark) {
    let count = 0;
    let seen = 0;
    // no id: the room was empty, all is new; `reset`: its history was lost and started again,
    // all of it is new (the page holds the last ones)
    const epoch = mark.id !== null ? mark.epoch : null;
    for await (const page of pagesAfter(r, mark.id ?? "0", epoch, UNREAD_LIMIT)) {
      if (!page || r === room) return;  // failed, or moved there meanwhile
      seen += page.messages.length;
      count += page.messages.filter((m) => !(myUid !== null && m?.user?.uid === myUid)).length;
      if (page.last || page.reset || seen >= UNREAD_LIMIT) break;
    }
    unreadIn.set(r, count);
  }

  // Room `r`'s messages after `since` from the API, page by page (up to `limit` each), the
  // next asked from a page's last message. A page is `last` when it holds all there was: short
  // of `limit` and not cut short by the API's bound on a page's bytes (`more`). A failed
  // request yields null, and ends it.
  async function* pagesAfter(r, since, epoch, limit) {
    for (;;) {
      const query = new URLSearchParams({ since, limit: String(limit) });
      if (epoch) query.set("epoch", epoch);
      const page = await getJSON(`/api/rooms/${r}/messages?${query}`);
      if (!page || !Array.isArray(page.messages)) {
        yield null;
        return;
      }
      page.last = !page.messages.length || (page.messages.length < limit && !page.more);
      yield page;
      if (page.last) return;
      since = page.messages[page.messages.length - 1].id;
    }
  }

  // A read of the API, or null when it fails. One refused for its address's pace (429: the
  // server's API_RATE_LIMIT, shared by the tabs and people behind one address, as after a
  // restart) is tried again after the Retry-After it names, a little more at random, a few
  // times: a resume's gap fill must not skip what it could not read yet.
  async function getJSON(url) {
    for (let attempt = 1; ; attempt++) {
      try {
        const response = await fetch(url, { cache: "no-store", headers: { Accept: "application/json" } });
        if (response.status === 429 && attempt < READ_ATTEMPTS) {
          const wait = Number(response.headers.get("Retry-After")) || 1;
          await new Promise((resolve) => setTimeout(resolve, (wait + Math.random()) * 1000));
          continue;
        }
        return response.ok ? await response.json() : null;
      } catch {
        return null;  // offline, or the server is restarting: the next poll tries again
      }
    }
  }

  function switchRoom(next, push) {
    next = next.trim().toLowerCase();
    if (!ROOM_RE.test(next) || next === room) return;
    markSeen();
    room = next;
    if (push) history.pushState({ room }, "", `/r/${room}${location.search}`);
    unread = 0;
    showTitle();
    unreadIn.delete(room);
    renderRooms();
    $("room-name").textContent = `#${room}`;
    text.placeholder = `Message #${room}`;
    loadDraft();
    dropSocket("switching room");
    clearLog();
    epoch = null;
    lastError = null;
    refused = false;
    for (const id of [...typers.keys()]) clearTyping(id);
    lastLeave.clear();
    pending.clear();
    members.clear();
    total = null;
    renderMembers();
    attempt = 0;
    connect();
  }

  addEventListener("popstate", () => {
    const match = location.pathname.match(/^\/r\/([^/]+)$/);
    switchRoom(match ? decodeURIComponent(match[1]) : "lobby", false);
  });
  for (const list of [$("rooms"), $("active-rooms")]) {
    list.addEventListener("click", (e) => {
      const link = e.target.closest("a");
      if (!link || e.ctrlKey || e.metaKey || e.shiftKey) return;  // a new tab: the browser's way
      e.preventDefault();
      closePanel();
      switchRoom(decodeURIComponent(new URL(link.href).pathname.slice(3)), true);
    });
  }

  // Join or create a room by name: "#Walk Phone" is the room walk-phone.
  const roomDialog = $("room-dialog"), roomInput = $("room-input"), roomHint = $("room-hint");
  const ROOM_HINT = [...roomHint.childNodes];  // the template's own words, put back as they were

  function hint(words, bad = false) {  // words of ours (a room name we checked), or the template's
    roomHint.className = bad ? "hint error" : "hint";
    roomHint.replaceChildren(...(words === null ? ROOM_HINT : [words]));
    if (bad) roomInput.setAttribute("aria-invalid", "true");
    else roomInput.removeAttribute("aria-invalid");
  }

  function roomName(typed) {
    return typed.trim().replace(/^#/, "").trim().toLowerCase().replace(/\s+/g, "-");
  }

  $("join-room").addEventListener("click", () => {
    closePanel();
    roomInput.value = "";
    hint(null);
    roomDialog.showModal();
  });
  roomInput.addEventListener("input", () => {
    const next = roomName(roomInput.value);
    if (next === "") hint(null);
    else if (ROOM_RE.test(next)) hint(`You will join #${next}.`);
    else hint("Only letters, digits, - and _ (up to 32).", true);
  });
  $("room-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const next = roomName(roomInput.value);
    if (!ROOM_RE.test(next)) {
      hint("Type a room name: letters, digits, - and _ (up to 32).", true);
      return roomInput.focus();
    }
    roomDialog.close();
    switchRoom(next, true);
    text.focus();
  });
  $("room-cancel").addEventListener("click", () => roomDialog.close());

  // -- drawers: the rooms and the people, over the conversation on a narrow screen ------------------
  // One open at a time, with a backdrop; the rest of the page is inert meanwhile, so the keyboard
  // stays in the drawer. Closed by its button, a tap outside, Escape, or choosing a room.
  const drawers = [
    { panel: $("rooms-panel"), toggle: $("rooms-toggle"), narrow: matchMedia("(max-width: 720px)") },
    { panel: $("members-panel"), toggle: $("members-toggle"), narrow: matchMedia("(max-width: 1023px)") },
  ];
  let openDrawer = null;

  function openPanel(drawer) {
    closePanel();
    openDrawer = drawer;
    drawer.panel.classList.add("open");
    drawer.toggle.setAttribute("aria-expanded", "true");
    backdrop.hidden = false;
    for (const el of document.querySelector(".layout").children) el.inert = el !== drawer.panel && el !== backdrop;
    drawer.panel.querySelector("[data-close]").focus();
  }

  function closePanel({ refocus = true } = {}) {
    if (!openDrawer) return;
    const { panel, toggle } = openDrawer;
    openDrawer = null;
    panel.classList.remove("open");
    toggle.setAttribute("aria-expanded", "false");
    backdrop.hidden = true;
    for (const el of document.querySelector(".layout").children) el.inert = false;
    if (refocus) toggle.focus();
  }

  for (const drawer of drawers) {
    drawer.toggle.addEventListener("click", () => (openDrawer === drawer ? closePanel() : openPanel(drawer)));
    drawer.panel.querySelector("[data-close]").addEventListener("click", () => closePanel());
    drawer.narrow.addEventListener("change", () => {
      if (openDrawer === drawer && !drawer.narrow.matches) closePanel({ refocus: false });  // now a sidebar
    });
  }
  backdrop.addEventListener("click", () => closePanel());
  addEventListener("keydown", (e) => {
    if (e.key === "Escape" && openDrawer) closePanel();
  });

  // -- the composer: a draft per room -------------------------------------------------------------
  let lastTyping = 0;
  text.addEventListener("input", () => {
    saveDraft();
    if (Date.now() - lastTyping > 2000 && text.value.trim()) {
      lastTyping = Date.now();
      send({ type: "typing" });
    }
  });

  function loadDrafts() {
    return loadPerRoom("chat.drafts", (v) => typeof v === "string" && v.length <= 4000);
  }

  function saveDraft() {
    const drafts = loadDrafts();
    if (text.value.trim()) drafts[room] = text.value;
    else delete drafts[room];
    storePerRoom("chat.drafts", drafts);
  }

  function loadDraft() {  // the draft of the room we are now in, or an empty box
    text.value = loadDrafts()[room] ?? "";
    fitText();
  }

  // Enter sends, Shift+Enter starts a new line (not while an input method composes a word).
  text.addEventListener("keydown", (e) => {
    // keyCode 229: the Enter that confirms an input method's word, in Safari
    if (e.key === "Enter" && !e.shiftKey && !e.isComposing && e.keyCode !== 229) {
      e.preventDefault();
      composer.requestSubmit();
    }
  });
  text.addEventListener("input", fitText);

  function fitText() {  // the box grows with its lines, up to a few (then it scrolls)
    text.style.height = "auto";
    text.style.height = `${Math.min(text.scrollHeight, 160)}px`;
  }

  composer.addEventListener("submit", (e) => {
    e.preventDefault();
    const body = text.value.trim();
    if (!body) return;
    const cid = `${Date.now().toString(36)}-${Math.random().toString(36).slice(2, 10)}`;
    const event = { type: "message", text: body, cid };
    const ts = Date.now() / 1000;
    const node = messageNode(me || { name }, body, ts, true);
    node.classList.add("pending");
    node.dataset.cid = cid;
    log.querySelector(".empty")?.remove();
    log.querySelector(".rule.new")?.remove();  // one who writes has read what came before
    insertDated(node, ts);
    group(node, null);
    append(node);
    log.scrollTop = log.scrollHeight;  // one's own message is always shown
    pending.set(cid, event);
    myCids.add(cid);
    store("chat.cids", [...myCids].slice(-MY_CIDS));
    send(event);
    text.value = "";
    saveDraft();
    fitText();
    lastTyping = 0;
  });

  // -- the phone's keyboard ------------------------------------------------------------------------
  // The page is as tall as the visual viewport (what an on-screen keyboard leaves), so the
  // composer stays above the keyboard; a reader at the newest message stays at it. (Times its
  // scale: a pinch-zoom makes the visual viewport smaller, not the page.)
  function fitViewport() {
    const stay = following;
    const height = visualViewport.height * (visualViewport.scale || 1);
    document.documentElement.style.setProperty("--app-height", `${height}px`);
    if (stay) log.scrollTop = log.scrollHeight;
  }
  if (window.visualViewport) {
    visualViewport.addEventListener("resize", fitViewport);
    fitViewport();
  }

  // -- start: a name first (from ?name=, kept from last time, or asked once) ---------------------------
  renderRooms();
  renderNotify();
  loadDraft();
  setInterval(pollRooms, ROOMS_POLL_MS);
  if (name) {
    connect();
  } else {
    const dialog = $("name-dialog");
    setStatus("idle", "Choose a name to join");
    dialog.addEventListener("cancel", (e) => e.preventDefault());  // a name is needed to chat
    $("name-form").addEventListener("submit", (e) => {
      name = $("name-input").value.trim().slice(0, 32);
      if (!name) {
        e.preventDefault();  // keep the dialog open: a name of spaces is no name
        return;
      }
      store("chat.name", name);
      connect();
    });
    dialog.showModal();
  }
})();
