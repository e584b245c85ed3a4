// The chat page: one WebSocket to /ws, events one JSON object per line in each frame.
// User text is always inserted as text (textContent, or text nodes beside the <a> of a link),
// never as HTML.
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const log = $("log"), statusEl = $("status"), membersEl = $("members"), typingEl = $("typing");
  const text = $("text"), composer = $("composer");
  const params = new URLSearchParams(location.search);

  const BACKOFF_BASE_MS = 500, BACKOFF_CAP_MS = 30000;
  const GROUP_SECONDS = 300;         // a sender's messages this close together share one header
  const RECENT_ROOMS = 8;            // rooms remembered in the switcher
  const MY_CIDS = 500;               // cids of one's own last messages, kept across reloads
  const ROOM_RE = /^[a-z0-9_-]{1,32}$/;  // the protocol's room names
  // http(s) links in message text; trailing punctuation belongs to the sentence, not the link
  const URL_RE = /\bhttps?:\/\/[^\s<>"'`]+/gi, URL_TAIL = ".,;:!?]}'\"";

  let name = (params.get("name") || localStorage.getItem("chat.name") || "").trim();
  let room = document.body.dataset.room || "lobby";
  let ws = null, attempt = 0, retryTimer = null, countdown = null;
  let me = null;                     // {id, name} of the current connection
  let lastError = null;              // code of the last error event: says why a 1008 came
  let refused = false;               // the server refused our parameters: retrying would not help
  const myIds = new Set();           // every id this page has had: own messages stay "mine"
  const myKey = loadKey();           // this browser's secret: its uid (public) is the sender of its messages
  let myUid = null;                  // from the welcome
  const myCids = new Set(loadList("chat.cids").filter((c) => typeof c === "string"));  // and after a reload
  const seen = new Set();            // message ids shown in this room (a resume shows none twice)
  let lastId = null;                 // newest message id shown, for ?since= on reconnect
  let epoch = null;                  // the welcome's epoch that lastId belongs to (&epoch=)
  const members = new Map();         // id -> name
  let total = null;                   // a big room's member count, as told; null: members.size
  const pending = new Map();         // cid -> message event not yet echoed; resent on every welcome
  const typers = new Map();          // id -> timer clearing "is typing"
  let unread = 0;                    // messages that came while the tab was hidden (in the title)

  // -- connection ---------------------------------------------------------------------------
  function connect() {
    clearTimeout(retryTimer);
    clearInterval(countdown);
    dropSocket("reconnecting");  // never two sockets: the one in progress gives way
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
        if (line) handle(JSON.parse(line));
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
      case "join":
        if (total !== null && !members.has(event.user.id)) total += 1;
        members.set(event.user.id, event.user.name);
        renderMembers();
        if (!myIds.has(event.user.id)) addSystem(`${event.user.name} joined`);
        return;
      case "leave":
        members.delete(event.user.id);
        if (total !== null) total = Math.max(0, total - 1);
        renderMembers();
        clearTyping(event.user.id);
        if (!myIds.has(event.user.id)) addSystem(`${event.user.name} left`);
        return;
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
    attempt = 0;
    members.clear();
    for (const m of event.members) members.set(m.id, m.name);
    members.set(me.id, me.name);  // a big room's welcome lists only some: always list oneself
    total = (event.member_count ?? 0) > members.size ? event.member_count : null;
    renderMembers();
    if (event.reset) {  // the server's history is not the one we showed (its store lost it): start afresh
      log.replaceChildren();
      seen.clear();
      lastId = null;
      addSystem("The server's history was reset; this is what it holds now.");
    } else if (event.truncated && lastId !== null) {
      addSystem("Some messages from while you were away are no longer kept.");
    }
    epoch = event.epoch ?? null;
    // History goes in with one insertion (no jump while it loads); on a resume it is what
    // came while we were away, so it counts as unread.
    const resumed = lastId !== null;
    const batch = document.createDocumentFragment();
    for (const message of event.history) addMessage(message, batch, resumed);
    append(batch);
    remember(event.room);
    setStatus("open", "Live");
    lastError = null;
    resendPending(ws);
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

  // `node` at the end of the log (or of `into`, a fragment that goes in later, in one piece).
  function append(node, into = null) {
    if (into) return into.append(node);
    const follow = atBottom();       // follow only a reader who was already at the bottom
    log.append(node);
    if (follow) log.scrollTop = log.scrollHeight;
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
    if (next && next.classList.contains("msg")) group(next, null, prev);
  }

  function addMessage(message, into = null, countUnread = true) {
    // One's own message, shown while on its way, gives way to the stored one, which goes in
    // the room's order (typed offline, it comes after what others said meanwhile).
    if (message.cid && pending.delete(message.cid)) {
      unlist(log.querySelector(`[data-cid="${CSS.escape(message.cid)}"]`));
    }
    if (seen.has(message.id)) return;
    seen.add(message.id);
    lastId = message.id;
    // Mine: sent with this browser's key. A message without a uid (stored before there were
    // any) is known by this page's connection ids and cids.
    const mine = message.user.uid !== undefined ? message.user.uid === myUid
      : myIds.has(message.user.id) || (message.cid !== undefined && myCids.has(message.cid));
    const node = messageNode(message.user, message.text, message.ts, mine);
    group(node, into);
    append(node, into);
    if (!mine && countUnread && document.hidden) {
      unread += 1;
      showTitle();
    }
  }

  function messageNode(user, body, ts, mine) {
    const li = document.createElement("li");
    li.className = mine ? "msg mine" : "msg";
    li.dataset.user = mine ? "me" : user.id;  // my messages group across reconnects (new ids)
    li.dataset.ts = String(ts);
    const meta = document.createElement("div");
    meta.className = "meta";
    const who = document.createElement("span");
    who.className = "who";
    who.textContent = user.name;
    const when = document.createElement("time");
    const date = new Date(ts * 1000);
    when.dateTime = date.toISOString();
    when.title = date.toLocaleString();
    when.textContent = date.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
    meta.append(who, when);
    const p = document.createElement("div");
    p.className = "body";
    linkify(p, body);
    li.append(meta, p);
    return li;
  }

  // The text into `container` as text nodes, with each http(s) URL in it as a link whose text
  // is the URL: nothing in `body` is ever parsed as HTML.
  function linkify(container, body) {
    let at = 0;
    for (const match of body.matchAll(URL_RE)) {
      const url = trimUrl(match[0]);
      if (match.index > at) container.append(body.slice(at, match.index));
      const a = document.createElement("a");
      a.href = url;
      a.textContent = url;
      a.target = "_blank";
      a.rel = "noopener noreferrer nofollow";
      container.append(a);
      at = match.index + url.length;
    }
    if (at < body.length) container.append(body.slice(at));
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

  function showTitle() {
    document.title = `${unread ? `(${unread}) ` : ""}Chat · #${room}`;
  }

  document.addEventListener("visibilitychange", () => {
    if (!document.hidden && unread) {
      unread = 0;
      showTitle();
    }
  });

  // -- recent rooms ---------------------------------------------------------------------------------
  function recentRooms() {
    return loadList("chat.rooms").filter((r) => typeof r === "string" && ROOM_RE.test(r));
  }

  function loadList(key) {  // a list kept in localStorage, or [] (none, unreadable, edited by hand)
    try {
      const list = JSON.parse(localStorage.getItem(key) || "[]");
      return Array.isArray(list) ? list : [];
    } catch {
      return [];
    }
  }

  function remember(current) {
    const rooms = [current, ...recentRooms().filter((r) => r !== current)].slice(0, RECENT_ROOMS);
    store("chat.rooms", JSON.stringify(rooms));
    renderRooms(rooms);
  }

  // This browser's key, made once and kept: a secret (16 to 64 of A-Z a-z 0-9 _ -).
  function loadKey() {
    let key = null;
    try {
      key = localStorage.getItem("chat.key");
    } catch {
      // storage off: a key for this page's life
    }
    if (!/^[A-Za-z0-9_-]{16,64}$/.test(key || "")) {
      const bytes = crypto.getRandomValues(new Uint8Array(18));
      key = btoa(String.fromCharCode(...bytes)).replace(/\+/g, "-").replace(/\//g, "_");
      store("chat.key", key);
    }
    return key;
  }

  function store(key, value) {
    try {
      localStorage.setItem(key, value);
    } catch {
      // full, or storage is off (private mode): the page works, it just forgets next time
    }
  }

  function renderRooms(rooms = recentRooms()) {
    $("rooms").replaceChildren(...rooms.map((r) => {
      const li = document.createElement("li");
      const a = document.createElement("a");
      a.href = `/r/${r}${location.search}`;
      a.textContent = `#${r}`;
      if (r === room) a.setAttribute("aria-current", "page");
      li.append(a);
      return li;
    }));
  }

  function addSystem(textContent, kind) {
    const li = document.createElement("li");
    li.className = kind ? `system ${kind}` : "system";
    li.textContent = textContent;
    append(li);
  }

  function renderMembers() {
    const sorted = [...members].sort((a, b) => a[1].localeCompare(b[1]));
    membersEl.replaceChildren(...sorted.map(([id, memberName]) => {
      const li = document.createElement("li");
      li.textContent = memberName;
      li.dataset.id = id;
      if (me && id === me.id) li.className = "me";
      return li;
    }));
    // A big room lists those its welcome named (some may have left since) and counts all.
    const count = total ?? members.size;
    if (count > members.size) {
      const more = document.createElement("li");
      more.className = "more";
      more.textContent = `and ${(count - members.size).toLocaleString()} more`;
      membersEl.append(more);
    }
    $("member-count").textContent = String(count);
  }

  function showTyping(user) {
    if (myIds.has(user.id)) return;
    clearTimeout(typers.get(user.id)?.timer);
    typers.set(user.id, { name: user.name, timer: setTimeout(() => clearTyping(user.id), 3000) });
    renderTyping();
  }

  function clearTyping(id) {
    clearTimeout(typers.get(id)?.timer);
    typers.delete(id);
    renderTyping();
  }

  function renderTyping() {
    const names = [...typers.values()].map((t) => t.name);
    typingEl.textContent = names.length === 0 ? "" :
      names.length === 1 ? `${names[0]} is typing…` : `${names.join(", ")} are typing…`;
  }

  // -- the user's actions ---------------------------------------------------------------------------
  let lastTyping = 0;
  text.addEventListener("input", () => {
    if (Date.now() - lastTyping > 2000 && text.value.trim()) {
      lastTyping = Date.now();
      send({ type: "typing" });
    }
  });

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
    const node = messageNode(me || { name }, body, Date.now() / 1000, true);
    node.classList.add("pending");
    node.dataset.cid = cid;
    group(node, null);
    append(node);
    log.scrollTop = log.scrollHeight;  // one's own message is always shown
    pending.set(cid, event);
    myCids.add(cid);
    store("chat.cids", JSON.stringify([...myCids].slice(-MY_CIDS)));
    send(event);
    text.value = "";
    fitText();
    lastTyping = 0;
  });

  function switchRoom(next, push) {
    next = next.trim().toLowerCase();
    if (!ROOM_RE.test(next) || next === room) return;
    room = next;
    if (push) history.pushState({ room }, "", `/r/${room}${location.search}`);
    unread = 0;
    showTitle();
    renderRooms();
    $("room-input").value = room;
    dropSocket("switching room");
    log.replaceChildren();
    seen.clear();
    lastId = null;
    epoch = null;
    lastError = null;
    refused = false;
    for (const id of [...typers.keys()]) clearTyping(id);
    pending.clear();
    members.clear();
    total = null;
    renderMembers();
    attempt = 0;
    connect();
  }

  $("room-form").addEventListener("submit", (e) => {
    e.preventDefault();
    switchRoom($("room-input").value, true);
  });
  addEventListener("popstate", () => {
    const match = location.pathname.match(/^\/r\/([^/]+)$/);
    switchRoom(match ? decodeURIComponent(match[1]) : "lobby", false);
  });
  $("rooms").addEventListener("click", (e) => {
    const link = e.target.closest("a");
    if (!link || e.ctrlKey || e.metaKey || e.shiftKey) return;  // a new tab: the browser's way
    e.preventDefault();
    switchRoom(decodeURIComponent(new URL(link.href).pathname.slice(3)), true);
    showPanel(false);
  });

  function showPanel(open) {
    $("members-panel").classList.toggle("open", open);
    $("members-toggle").setAttribute("aria-expanded", String(open));
  }

  $("members-toggle").addEventListener("click", () => showPanel(!$("members-panel").classList.contains("open")));
  addEventListener("keydown", (e) => {
    if (e.key === "Escape" && $("members-panel").classList.contains("open")) {
      showPanel(false);
      $("members-toggle").focus();
    }
  });

  // -- start: a name first (from ?name=, kept from last time, or asked once) ---------------------------
  renderRooms();
  if (name) {
    connect();
  } else {
    const dialog = $("name-dialog");
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
