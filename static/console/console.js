// The console's live parts, one small module: the task view follows /ws/tasks/<id>/ and the
// history follows /ws/tasks/. Pages work without it (links and forms); this only adds live updates.
// Everything from the server is put in the page as text (textContent), never as HTML, except the
// server-rendered, sanitised partials fetched from our own origin.

const wsURL = (path) => `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}${path}`;
const REFUSED = 4403;
const RUNNING = new Set(["pending", "executing", "paused"]);

// A socket that reconnects with backoff while `wanted()` says so; frames go to onFrame(JSON).
function socket(path, onFrame, { wanted = () => true, onClosed = () => {} } = {}) {
  let ws = null;
  let delay = 500;
  let stopped = false;
  const open = () => {
    if (stopped || !wanted()) return;
    ws = new WebSocket(wsURL(typeof path === "function" ? path() : path));
    ws.onopen = () => { delay = 500; };
    ws.onmessage = (m) => onFrame(JSON.parse(m.data));
    ws.onclose = (ev) => {
      ws = null;
      onClosed(ev);
      if (!stopped && ev.code !== REFUSED && wanted()) {
        setTimeout(open, delay);
        delay = Math.min(delay * 2, 30000);
      }
    };
  };
  open();
  return {
    reopen() { if (!ws) open(); },
    close() { stopped = true; if (ws) ws.close(); },
  };
}

function fill(node, slot, text) {
  for (const el of node.querySelectorAll(`[data-slot="${slot}"]`)) el.textContent = text ?? "";
}

function clone(id) {
  return document.getElementById(id).content.cloneNode(true);
}

function pretty(value) {
  if (value === null || value === undefined) return "";
  return typeof value === "string" ? value : JSON.stringify(value, null, 2);
}

function setStatus(root, status) {
  const badge = root.querySelector('[data-bind="status"]');
  if (badge) { badge.textContent = status; badge.className = `badge status-${status}`; }
  root.dataset.status = status;
}

function setInternal(root, value) {
  const cell = root.querySelector('[data-bind="internal_status"]');
  if (!cell) return;
  cell.replaceChildren();
  const span = document.createElement("span");
  span.className = value ? "badge internal" : "muted";
  span.textContent = value || "none";
  cell.append(span);
}

// ---- the live task view ---------------------------------------------------------------------

function taskPage() {
  let root = document.getElementById("live");
  const taskId = root.dataset.task;
  const servers = JSON.parse(document.getElementById("tool-servers")?.textContent || "{}");
  let since = Number(root.dataset.since || 0);
  let finished = root.dataset.finished === "true";
  let started = Date.parse(root.dataset.started) || null;
  let text = null; // the agent message being streamed into
  let turns = root.querySelectorAll(".turn-mark[data-turn]").length;
  const timeline = () => root.querySelector("#timeline");
  const lastChild = timeline().lastElementChild;
  if (lastChild?.matches(".msg.agent") && lastChild.querySelector("[data-streaming]")) {
    text = lastChild.querySelector("[data-streaming]");
  }

  const step = (what) => {
    const el = root.querySelector('[data-bind="step"]');
    if (el) el.textContent = what;
  };

  async function refresh() {
    const r = await fetch(`/tasks/${taskId}/?partial=live`, { headers: { "HX-Request": "true" } });
    if (!r.ok) return;
    const holder = document.createElement("div");
    holder.innerHTML = await r.text(); // our own server-rendered, sanitised partial
    const fresh = holder.firstElementChild;
    root.replaceWith(fresh);
    root = fresh;
    if (window.htmx) window.htmx.process(root);
    since = Number(root.dataset.since || since);
    finished = root.dataset.finished === "true";
    started = Date.parse(root.dataset.started) || started;
    turns = root.querySelectorAll(".turn-mark[data-turn]").length;
    const last = timeline().lastElementChild;
    text = last?.matches(".msg.agent") ? last.querySelector("[data-streaming]") : null;
    if (!finished) events.reopen();
  }

  function snapshot(data) {
    if (!data || typeof data !== "object") return;
    if (data.turns && data.turns > turns) {
      turns = data.turns;
      const node = clone("tpl-turn");
      fill(node, "n", String(turns));
      fill(node, "text", data.input?.text || "");
      timeline().append(node);
      text = null;
    }
    setStatus(root, data.status);
    setInternal(root, data.internal_status);
    if (data.started_at) started = Date.parse(data.started_at);
    if (data.status === "executing") step("Working…");
    if (data.status === "paused") step("Waiting for a sign-in…");
  }

  function apply(e) {
    const d = e.data;
    switch (e.type) {
      case "task_created":
      case "task_updated":
        snapshot(d);
        break;
      case "chunk":
        if (!text) {
          timeline().append(clone("tpl-text"));
          text = timeline().lastElementChild.querySelector("[data-streaming]");
        }
        text.textContent += typeof d === "string" ? d : "";
        step("Writing the answer…");
        break;
      case "think":
      case "analyze": {
        text = null;
        const node = clone("tpl-think");
        fill(node, "title", d?.title || "Thinking");
        fill(node, "thought", d?.thought || "");
        timeline().append(node);
        step("Thinking…");
        break;
      }
      case "tool_call_request": {
        text = null;
        const node = clone("tpl-tool");
        const card = node.firstElementChild;
        card.dataset.tool = d?.tool_call_id || `seq-${e.seq}`;
        card.dataset.started = e.time;
        const server = servers[d?.graph_node_id] || d?.graph_node_id || "";
        fill(node, "name", d?.tool_name || "tool");
        fill(node, "server", server ? ` on ${server}` : "");
        fill(node, "server-name", server || "—");
        fill(node, "args", pretty(d?.payload) || "{}");
        timeline().append(node);
        step(`Calling ${d?.tool_name || "a tool"}…`);
        break;
      }
      case "tool_call_result": {
        text = null;
        const card = [...timeline().querySelectorAll("details.tool")].find((c) => c.dataset.tool === d?.tool_call_id);
        if (!card) break;
        const state = d?.status || (d?.is_error ? "failed" : "completed");
        card.dataset.state = state;
        fill(card, "state", state);
        fill(card, "result", pretty(d?.result));
        fill(card, "result-label", d?.is_error ? "Error" : "Result");
        if (card.dataset.started) {
          const secs = (Date.parse(e.time) - Date.parse(card.dataset.started)) / 1000;
          fill(card, "duration", `· ${secs.toFixed(2)} s`);
        }
        step("Working…");
        break;
      }
      case "sub_agent_trigger": {
        text = null;
        const node = clone("tpl-sub");
        const link = node.querySelector('[data-slot="link"]');
        link.textContent = (d?.query || "sub-agent").slice(0, 80);
        if (d?.sub_task_id) link.href = `/tasks/${encodeURIComponent(d.sub_task_id)}/`;
        timeline().append(node);
        step("Waiting for a sub-agent…");
        break;
      }
      case "auth_event": {
        const node = clone("tpl-auth");
        const server = d?.data?.server_name || "";
        const ready = d?.type === "token_ready";
        fill(node, "message", ready ? `Signed in${server ? ` to ${server}` : ""}; the task carries on.`
          : `Sign-in needed${server ? ` for ${server}` : ""}: ${d?.data?.message || d?.type || ""}`);
        const url = String(d?.data?.url || "");
        const signin = node.querySelector('[data-slot="signin"]');
        if (!ready && /^(https?:\/\/|\/(?!\/))/.test(url)) { signin.href = url; signin.hidden = false; }  // never javascript:
        timeline().append(node);
        if (d?.type === "login_required") step("Waiting for a sign-in…");
        break;
      }
      case "task_finished":
        text = null;
        finished = true;
        snapshot(d);
        step("");
        break;
    }
  }

  const events = socket(
    () => `/ws/tasks/${encodeURIComponent(taskId)}/?since=${since}`,
    (e) => {
      if (e.seq <= since) return; // never twice
      since = e.seq;
      apply(e);
    },
    {
      wanted: () => !finished,
      onClosed: () => { if (finished) refresh(); }, // the server closes after task_finished
    },
  );

  // A follow-up sent by someone else: the list socket says the task runs again.
  socket("/ws/tasks/", (change) => {
    if (change.id !== taskId) return;
    if (finished && RUNNING.has(change.status)) { finished = false; refresh(); }
  });

  setInterval(() => {
    const el = root.querySelector('[data-bind="elapsed"]');
    if (el && started && !finished) el.textContent = `${Math.max(0, Math.round((Date.now() - started) / 1000))} s`;
  }, 1000);
}

// ---- the live history list ------------------------------------------------------------------

function historyPage(results) {
  let timer = null;
  async function refresh() {
    timer = null;
    const current = document.getElementById("results");
    const checked = new Set([...document.querySelectorAll('input[name="task"]:checked')].map((i) => i.value));
    const r = await fetch(current.dataset.refresh, { headers: { "HX-Request": "true" } });
    if (!r.ok) return;
    const holder = document.createElement("div");
    holder.innerHTML = await r.text(); // our own server-rendered partial
    const fresh = holder.querySelector("#results");
    if (!fresh) return;
    for (const box of fresh.querySelectorAll('input[name="task"]')) box.checked = checked.has(box.value);
    current.replaceWith(fresh);
  }
  socket("/ws/tasks/", (change) => {
    const row = document.querySelector(`#results tr[data-task="${CSS.escape(change.id)}"]`);
    if (row) {
      const badge = row.querySelector('[data-field="status"]');
      badge.textContent = change.status;
      badge.className = `badge status-${change.status}`;
      const internal = row.querySelector('[data-field="internal_status"]');
      internal.replaceChildren();
      if (change.internal_status) {
        const span = document.createElement("span");
        span.className = "badge internal";
        span.textContent = change.internal_status;
        internal.append(span);
      }
      row.classList.remove("flash");
      void row.offsetWidth; // restart the highlight
      row.classList.add("flash");
    }
    if (!timer) timer = setTimeout(refresh, 1500); // new rows and counts come from the server
  });
}

const live = document.getElementById("live");
if (live) taskPage();
const results = document.querySelector("[data-live-list]");
if (results) historyPage(results);

// Copy buttons (a new key, graph item ids): copy the text of the element the button names.
for (const button of document.querySelectorAll("button[data-copy]")) {
  button.hidden = false;
  button.addEventListener("click", async () => {
    const source = document.getElementById(button.dataset.copy);
    try {
      await navigator.clipboard.writeText(source.value ?? source.textContent);
      button.textContent = "Copied";
    } catch {
      if (source.select) source.select(); // no clipboard permission: select it for Ctrl+C
      button.textContent = "Press Ctrl+C";
    }
  });
}
