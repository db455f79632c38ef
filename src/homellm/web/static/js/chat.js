// The chat page: getting in (a pairing code or key from the QR code's fragment, or a pasted key), then
// streaming chat with the models this device's key may use. Nothing here executes model output: it is
// rendered by markdown.js, which builds text nodes only.
import { ApiError, call, get, post, setCsrf, whenSignedOut } from "./api.js";
import { deleteConversation, listConversations, newConversation, saveConversation } from "./history.js";
import { bindSwitch, loadLanguage, t } from "./i18n.js";
import { render } from "./markdown.js";

const $ = (id) => document.getElementById(id);
const LAST_MODEL = "homellm.model";
const POLL_MS = 5000;

const state = { me: null, models: [], conversation: null, running: null, poll: null };

function show(screen) {
  for (const id of ["pairing", "signin", "chat"]) $(id).hidden = id !== screen;
  document.body.dataset.screen = screen;
}

function fail(where, err) {
  where.textContent = err instanceof Error ? err.message : String(err);
  where.hidden = false;
}

function deviceName() {
  const ua = navigator.userAgent;
  const kinds = [["iPhone", /iPhone/], ["iPad", /iPad/], ["Android", /Android/], ["Mac", /Macintosh/],
    ["Windows", /Windows/], ["Linux", /Linux/]];
  const found = kinds.find(([, pattern]) => pattern.test(ua));
  return `${found ? found[0] : "browser"}-web`;
}

// ---- getting in ---------------------------------------------------------------------------------

function takeFragment() {
  // the code or key travels in the fragment (never sent to a server); drop it from the address bar and history
  const params = new URLSearchParams(location.hash.slice(1));
  if (location.hash) history.replaceState(null, "", location.pathname + location.search);
  return { pair: params.get("pair"), key: params.get("key"), fp: params.get("fp") };
}

function showPairing(code, fingerprint) {
  show("pairing");
  $("pair-fp").textContent = fingerprint || t("(the QR code named no certificate)");
  $("pair-device").value = deviceName();
  $("pair-form").onsubmit = async (event) => {
    event.preventDefault();
    $("pair-error").hidden = true;
    $("pair-go").disabled = true;
    try {
      await post("/app/api/pair", { code, device: $("pair-device").value });
      await start();
    } catch (err) {
      fail($("pair-error"), err);
    } finally {
      $("pair-go").disabled = false;
    }
  };
}

async function showSignIn(reason) {
  stopPolling();
  show("signin");
  $("signin-reason").textContent = reason || "";
  $("signin-reason").hidden = !reason;
  try {
    const info = await get("/app/api/info");
    $("signin-fp").textContent = info.fingerprint || t("(this server serves plain HTTP)");
  } catch {
    $("signin-fp").textContent = "?";
  }
  $("signin-form").onsubmit = async (event) => {
    event.preventDefault();
    $("signin-error").hidden = true;
    try {
      await post("/app/api/session", { key: $("signin-key").value.trim() });
      $("signin-key").value = "";
      await start();
    } catch (err) {
      fail($("signin-error"), err);
    }
  };
}

whenSignedOut((message) => {
  if (state.me) {
    state.me = null;
    abortRunning();
    showSignIn(message);
  }
});

async function start() {
  let me;
  try {
    me = await get("/app/api/me");
  } catch (err) {
    if (err instanceof ApiError && err.status === 401) return showSignIn("");
    throw err;
  }
  state.me = me;
  setCsrf(me.csrf);
  $("who").textContent = me.name;
  $("household-link").hidden = !me.admin;
  show("chat");
  await loadModels();
  await openConversation((await listConversations(me.name))[0] || null);
  await drawHistory();
  startPolling();
  $("input").focus();
}

function startPolling() {
  stopPolling();
  // a revoked key ends this page's session: the next look at /app/api/me answers 401 and the page signs out
  state.poll = setInterval(() => {
    if (document.visibilityState === "visible" && state.me) get("/app/api/me").catch(() => {});
  }, POLL_MS);
}

function stopPolling() {
  if (state.poll) clearInterval(state.poll);
  state.poll = null;
}

// ---- models and conversations -----------------------------------------------------------------

async function loadModels() {
  const tags = await get("/api/tags"); // the gateway lists only the models this key may use
  state.models = (tags.models || []).map((m) => m.name);
  const select = $("model");
  select.replaceChildren(...state.models.map((name) => new Option(name, name)));
  const last = localStorage.getItem(LAST_MODEL);
  select.value = state.models.includes(last) ? last : state.models[0] || "";
  $("no-models").hidden = state.models.length > 0;
}

async function openConversation(conversation) {
  abortRunning();
  state.conversation = conversation || newConversation($("model").value, state.me?.name);
  if (state.models.includes(state.conversation.model)) $("model").value = state.conversation.model;
  $("system").value = state.conversation.system || "";
  drawMessages();
}

async function drawHistory() {
  const list = $("history-list");
  const items = [];
  for (const c of await listConversations(state.me?.name)) {
    const row = document.createElement("li");
    const open = document.createElement("button");
    open.type = "button";
    open.className = "history-open";
    open.textContent = c.title || t("New chat");
    if (state.conversation && c.id === state.conversation.id) row.className = "current";
    open.addEventListener("click", async () => {
      await openConversation(c);
      await drawHistory();
      document.body.classList.remove("history-open");
    });
    const remove = document.createElement("button");
    remove.type = "button";
    remove.className = "history-delete icon";
    remove.textContent = "×";
    remove.setAttribute("aria-label", t("Delete this conversation"));
    remove.addEventListener("click", async () => {
      await deleteConversation(c.id);
      if (state.conversation && state.conversation.id === c.id) await openConversation(null);
      await drawHistory();
    });
    row.append(open, remove);
    items.push(row);
  }
  list.replaceChildren(...items);
}

function messageNode(message) {
  const box = document.createElement("article");
  box.className = `message ${message.role}`;
  if (message.state) box.dataset.state = message.state; // streaming, done, stopped or failed
  const body = document.createElement("div");
  body.className = "body";
  if (message.role === "assistant") body.append(render(message.content));
  else body.textContent = message.content;
  box.append(body);
  if (message.note) {
    const note = document.createElement("p");
    note.className = "note";
    note.textContent = message.note;
    box.append(note);
  }
  return box;
}

function drawMessages() {
  const list = $("messages");
  const messages = state.conversation.messages;
  list.replaceChildren(...messages.map(messageNode));
  if (!messages.length) {
    const empty = document.createElement("p");
    empty.className = "empty";
    empty.textContent = t("Ask anything. Answers come from the model on your home server.");
    list.append(empty);
  }
  const last = messages[messages.length - 1];
  $("regenerate").hidden = !(last && last.role === "assistant") || Boolean(state.running);
  list.scrollTop = list.scrollHeight;
}

// ---- asking -------------------------------------------------------------------------------------

function abortRunning() {
  if (state.running) state.running.abort();
}

function setRunning(controller) {
  state.running = controller;
  $("send").hidden = Boolean(controller);
  $("stop").hidden = !controller;
  document.body.classList.toggle("answering", Boolean(controller));
}

async function ask() {
  const conversation = state.conversation;
  const model = $("model").value;
  if (!model || state.running) return;
  conversation.model = model;
  conversation.system = $("system").value;
  const history = conversation.messages.filter((m) => !m.failed).map(({ role, content }) => ({ role, content }));
  const messages = conversation.system.trim() ? [{ role: "system", content: conversation.system }, ...history] : history;
  const answer = { role: "assistant", content: "", model };
  conversation.messages.push(answer);
  drawMessages();
  const node = $("messages").lastElementChild;
  const body = node.querySelector(".body");
  const controller = new AbortController();
  setRunning(controller);
  let pending = false;
  const paint = () => {
    pending = false;
    body.replaceChildren(render(answer.content));
    $("messages").scrollTop = $("messages").scrollHeight;
  };
  try {
    const response = await call("POST", "/api/chat", { model, messages, stream: true }, { signal: controller.signal, stream: true });
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, { stream: true });
      let cut;
      while ((cut = buffer.indexOf("\n")) >= 0) {
        const line = buffer.slice(0, cut).trim();
        buffer = buffer.slice(cut + 1);
        if (!line) continue;
        const record = JSON.parse(line);
        if (record.error) throw new Error(record.error);
        if (record.message && record.message.content) {
          answer.content += record.message.content;
          node.dataset.state = "streaming";
          if (!pending) {
            pending = true;
            requestAnimationFrame(paint);
          }
        }
      }
    }
    answer.state = "done";
  } catch (err) {
    if (err.name === "AbortError") {
      answer.state = "stopped";
      answer.note = t("Stopped.");
    } else {
      answer.state = "failed";
      answer.note = err.message;
      answer.failed = !answer.content;
    }
  } finally {
    setRunning(null);
  }
  if (!conversation.title) {
    const first = conversation.messages.find((m) => m.role === "user");
    conversation.title = first ? first.content.slice(0, 60) : "";
  }
  await saveConversation(conversation);
  if (conversation === state.conversation) drawMessages();
  await drawHistory();
}

async function send() {
  const text = $("input").value;
  if (!text.trim() || state.running) return;
  $("input").value = "";
  state.conversation.messages.push({ role: "user", content: text });
  await ask();
}

async function regenerate() {
  const messages = state.conversation.messages;
  if (state.running || !messages.length || messages[messages.length - 1].role !== "assistant") return;
  messages.pop();
  await ask();
}

// ---- the page -----------------------------------------------------------------------------------

function bind() {
  bindSwitch($("lang"));
  let composing = false;
  const input = $("input");
  input.addEventListener("compositionstart", () => (composing = true));
  input.addEventListener("compositionend", () => (composing = false));
  input.addEventListener("keydown", (event) => {
    if (event.key !== "Enter" || event.shiftKey) return; // Shift+Enter: a new line
    // Enter that confirms a Japanese (IME) conversion must not send: isComposing, or keyCode 229 (Safari)
    if (event.isComposing || event.keyCode === 229 || composing) return;
    event.preventDefault();
    send();
  });
  $("composer").addEventListener("submit", (event) => {
    event.preventDefault();
    send();
  });
  $("stop").addEventListener("click", abortRunning);
  $("regenerate").addEventListener("click", regenerate);
  $("model").addEventListener("change", () => {
    localStorage.setItem(LAST_MODEL, $("model").value);
    if (state.conversation) state.conversation.model = $("model").value;
  });
  $("system").addEventListener("change", () => {
    if (state.conversation) state.conversation.system = $("system").value;
  });
  $("new-chat").addEventListener("click", async () => {
    await openConversation(null);
    await drawHistory();
    document.body.classList.remove("history-open");
    input.focus();
  });
  $("menu").addEventListener("click", () => document.body.classList.toggle("history-open"));
  $("logout").addEventListener("click", async () => {
    try {
      await post("/app/api/logout");
    } finally {
      state.me = null;
      setCsrf(null);
      showSignIn(t("You are signed out."));
    }
  });
  document.addEventListener("homellm:language", () => {
    if (state.conversation && document.body.dataset.screen === "chat") {
      drawMessages();
      drawHistory();
    }
  });
}

async function signedIn() {
  try {
    await get("/app/api/me");
    return true;
  } catch {
    return false;
  }
}

async function main() {
  await loadLanguage();
  bind();
  const fragment = takeFragment();
  if (fragment.pair) return showPairing(fragment.pair, fragment.fp);
  // a key in the link signs in a browser that has no session, and never replaces one: any page can open
  // such a link, and would otherwise sign this browser in as the key of whoever made it
  if (fragment.key && !(await signedIn())) {
    try {
      await post("/app/api/session", { key: fragment.key });
    } catch (err) {
      await showSignIn(err.message);
      return;
    }
  }
  await start();
}

main();
