// shortrec feed demo: one card at a time; every action posts a real event and the next
// card comes from a fresh feed request, so the page shows the feed adapting.
// Plain ES2020, no build step, no external resources. See docs/demo.md.
"use strict";

(() => {
  // API root: everything before /demo (the page may sit behind a path prefix)
  const ROOT = location.pathname.replace(/\/demo\/?$/, "");
  const PAGE = 6; // videos per feed request: the card plus the "next page" topic mix
  const MAX_EXCLUDE = 1000; // the API's bound on context.exclude
  const NEW_USER = "__new__";
  const SKIP_WATCH_S = 0.8; // a quick swipe: under the service's 2 s skip threshold
  const FALLBACK_DURATION_S = 15;

  const state = {
    user: "",
    session: 0,
    queue: [], // [{item, video, requestId, modelVersion}]
    shown: [], // video_idx already shown in this session (sent as context.exclude)
    busy: false,
    events: 0,
  };
  const $ = (id) => document.getElementById(id);

  /** A random non-negative integer below 2**53 (exact in JSON and in JavaScript). */
  function randomId() {
    const a = new Uint32Array(2);
    crypto.getRandomValues(a);
    return (a[0] & 0x1fffff) * 2 ** 32 + a[1];
  }

  async function api(path, init) {
    const resp = await fetch(ROOT + path, init);
    const body = await resp.json().catch(() => null);
    if (!resp.ok) {
      const detail = body && body.detail ? body.detail : resp.statusText;
      throw new Error(`${path.split("?")[0]}: ${resp.status} ${detail}`);
    }
    return body;
  }

  function postJSON(path, payload) {
    return api(path, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(payload),
    });
  }

  function setState(s, text) {
    document.body.dataset.state = s;
    if (text !== undefined) $("status").textContent = text;
  }

  /** Hue of a topic: the same topic always gets the same colour (golden-angle spread). */
  function hue(name) {
    let h = 0;
    for (const ch of name || "?") h = (h * 31 + ch.codePointAt(0)) >>> 0;
    return Math.round((h * 137.508) % 360);
  }

  function fmtDuration(s) {
    if (s === null || s === undefined) return "–:––";
    const t = Math.round(s);
    return `${Math.floor(t / 60)}:${String(t % 60).padStart(2, "0")}`;
  }

  function why(item) {
    const parts = [`<b>Why this video:</b> ${escapeHtml(item.reason)}`];
    parts.push(`sources ${item.sources.map(escapeHtml).join(", ") || "none"}`);
    const heads = Object.entries(item.heads)
      .sort(([a], [b]) => a.localeCompare(b))
      .map(([k, v]) => `${escapeHtml(k)} ${v.toFixed(2)}`);
    if (heads.length) parts.push(heads.join(" · "));
    parts.push(`score ${item.score.toFixed(3)}`);
    return parts.join(" — ");
  }

  function escapeHtml(s) {
    return String(s).replace(/[&<>"']/g, (c) => ({
      "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;",
    })[c]);
  }

  function render() {
    const card = $("card");
    const cur = state.queue[0];
    for (const b of ["skip", "watch", "like"]) $(b).disabled = state.busy || !cur;
    if (!cur) {
      card.dataset.videoIdx = "";
      $("title").textContent = "Nothing left to show: pick another user.";
      for (const id of ["creator", "why", "video-topic", "video-duration"]) $(id).textContent = "";
      $("tags").replaceChildren();
      renderMix();
      return;
    }
    const { item, video } = cur;
    card.dataset.videoIdx = String(item.video_idx);
    card.dataset.requestId = String(cur.requestId);
    card.dataset.category = video.category || "";
    $("title").textContent = video.title;
    $("creator").textContent = `@${video.creator}`;
    $("tags").replaceChildren(
      ...video.tags.map((t) => {
        const li = document.createElement("li");
        li.textContent = `#${t}`;
        return li;
      }),
    );
    const h = hue(video.category);
    $("video").style.background =
      `linear-gradient(160deg, hsl(${h} 70% 48%), hsl(${(h + 40) % 360} 65% 22%))`;
    $("video-topic").textContent = video.category || "no topic";
    $("video-duration").textContent = fmtDuration(video.duration_s);
    $("why").innerHTML = why(item);
    renderMix();
  }

  /** The topic mix of the page just fetched: skip a topic a few times and its bar shrinks. */
  function renderMix() {
    const counts = new Map();
    for (const { video } of state.queue) {
      const c = video.category || "no topic";
      counts.set(c, (counts.get(c) || 0) + 1);
    }
    const rows = [...counts.entries()].sort((a, b) => b[1] - a[1] || a[0].localeCompare(b[0]));
    $("mix").replaceChildren(
      ...rows.map(([name, n]) => {
        const li = document.createElement("li");
        li.dataset.category = name;
        const label = document.createElement("span");
        label.textContent = name;
        const bar = document.createElement("span");
        bar.className = "bar-fill";
        bar.style.width = `${(100 * n) / PAGE}%`;
        bar.style.background = `hsl(${hue(name)} 70% 50%)`;
        const num = document.createElement("span");
        num.className = "n";
        num.textContent = String(n);
        li.append(label, bar, num);
        return li;
      }),
    );
  }

  /** Fetch the next page for the current user and session, then its human metadata. */
  async function refill() {
    const page = await postJSON("/v1/feed", {
      user_id: state.user,
      session_id: state.session,
      n: PAGE,
      context: { exclude: state.shown.slice(-MAX_EXCLUDE) },
    });
    let videos = new Map();
    if (page.items.length) {
      const q = new URLSearchParams();
      for (const it of page.items) q.append("ids", String(it.video_idx));
      const meta = await api(`/v1/videos?${q}`);
      videos = new Map(meta.items.map((v) => [v.video_idx, v]));
    }
    state.queue = page.items.map((item) => ({
      item,
      video: videos.get(item.video_idx) || {
        video_idx: item.video_idx, title: `video ${item.video_idx}`, creator: "unknown",
        category: null, tags: [], duration_s: null, named: false,
      },
      requestId: page.request_id,
      modelVersion: page.model_version,
    }));
    const fb = page.fallbacks.length ? ` · fallbacks: ${page.fallbacks.join(", ")}` : "";
    setState(
      "ready",
      `user ${state.user} · session ${state.session} · model ${page.model_version}` +
        ` · ${state.events} events${fb}`,
    );
  }

  const ACTIONS = {
    skip: (dur) => ({ watch_time_s: Math.min(SKIP_WATCH_S, dur), skipped: true, liked: false }),
    watch: (dur) => ({ watch_time_s: dur, skipped: false, liked: false }),
    like: (dur) => ({ watch_time_s: dur, skipped: false, liked: true }),
  };

  async function act(kind) {
    const cur = state.queue[0];
    if (state.busy || !cur) return;
    state.busy = true;
    render();
    try {
      const dur = cur.video.duration_s || FALLBACK_DURATION_S;
      const a = ACTIONS[kind](dur);
      await postJSON("/v1/events", {
        events: [{
          event_id: randomId(),
          user_id: state.user,
          session_id: state.session,
          video_idx: cur.item.video_idx,
          request_id: cur.requestId,
          watch_time_s: a.watch_time_s,
          watch_ratio: Math.min(a.watch_time_s / dur, 1000),
          skipped: a.skipped,
          liked: a.liked,
        }],
      });
      state.events += 1;
      state.shown.push(cur.item.video_idx);
      const li = document.createElement("li");
      li.className = `act-${kind}`;
      const verb = { skip: "skipped", watch: "watched", like: "liked" }[kind];
      li.textContent = `${verb}: ${cur.video.title} (${cur.video.category || "no topic"})`;
      $("log").prepend(li);
      setState("loading");
      await refill();
    } catch (e) {
      setState("error", String(e.message || e));
    } finally {
      state.busy = false;
      render();
    }
  }

  async function startUser(choice) {
    state.user = choice === NEW_USER ? `new-${randomId().toString(36)}` : choice;
    state.session = randomId();
    state.shown = [];
    state.queue = [];
    state.events = 0;
    $("log").replaceChildren();
    setState("loading", `loading a feed for ${state.user}…`);
    render();
    try {
      await refill();
    } catch (e) {
      setState("error", String(e.message || e));
    }
    render();
  }

  async function loadUsers() {
    const picker = $("user");
    const opt = (value, label) => {
      const o = document.createElement("option");
      o.value = value;
      o.textContent = label;
      return o;
    };
    picker.replaceChildren(opt(NEW_USER, "New user (cold start)"));
    const known = await api("/v1/demo/users?n=50");
    for (const u of known.users) picker.append(opt(u, u));
    const wanted = new URLSearchParams(location.search).get("user");
    if (wanted && wanted !== NEW_USER) {
      if (!known.users.includes(wanted)) picker.append(opt(wanted, wanted));
      picker.value = wanted;
    } else {
      picker.value = known.users.length && wanted !== NEW_USER ? known.users[0] : NEW_USER;
    }
  }

  async function main() {
    for (const kind of Object.keys(ACTIONS)) $(kind).addEventListener("click", () => act(kind));
    document.addEventListener("keydown", (e) => {
      if (e.target instanceof HTMLSelectElement || e.altKey || e.ctrlKey || e.metaKey) return;
      const kind = { ArrowDown: "skip", s: "skip", j: "skip", w: "watch", ArrowRight: "watch", l: "like" }[e.key];
      if (kind) {
        e.preventDefault();
        act(kind);
      }
    });
    $("user").addEventListener("change", (e) => startUser(e.target.value));
    try {
      await loadUsers();
    } catch (e) {
      setState("error", String(e.message || e));
      return;
    }
    await startUser($("user").value);
  }

  main();
})();
