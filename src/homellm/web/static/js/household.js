// The household page (admin keys only): keys and pairing codes, usage, the server.
import { ApiError, get, post, setCsrf, whenSignedOut } from "./api.js";
import { barChart } from "./charts.js";
import { bindSwitch, loadLanguage, locale, t, when } from "./i18n.js";

const $ = (id) => document.getElementById(id);
const LIVE_MS = 3000;

function cell(text, className) {
  const td = document.createElement("td");
  td.textContent = text ?? "";
  if (className) td.className = className;
  return td;
}

function number(n) {
  return n === null || n === undefined ? "-" : Math.round(n).toLocaleString(locale());
}

function gib(bytes) {
  return bytes === null || bytes === undefined ? "-" : `${(bytes / 1024 ** 3).toFixed(1)} GiB`;
}

function showError(err) {
  $("error").textContent = err instanceof Error ? err.message : String(err);
  $("error").hidden = false;
}

function modelList(text) {
  const names = text.split(",").map((s) => s.trim()).filter(Boolean);
  return names.length ? names : null;
}

// ---- keys and pairing codes ---------------------------------------------------------------------

async function drawKeys() {
  const data = await get("/app/api/admin/keys");
  const rows = data.keys.map((key) => {
    const tr = document.createElement("tr");
    tr.dataset.key = key.name;
    const state = key.revoked_at ? t("Revoked") : key.active ? t("Active") : t("Expired");
    tr.append(
      cell(key.name, "name"),
      cell(key.models ? key.models.join(", ") : t("every model")),
      cell(key.admin ? t("Yes") : ""),
      cell(when(key.expires_at)),
      cell(key.last_used_at ? when(key.last_used_at) : t("not used yet")),
      cell(state, `state ${key.revoked_at ? "revoked" : key.active ? "active" : "expired"}`),
    );
    const actions = document.createElement("td");
    if (!key.revoked_at) {
      const revoke = document.createElement("button");
      revoke.type = "button";
      revoke.className = "danger revoke";
      revoke.textContent = t("Revoke");
      revoke.addEventListener("click", async () => {
        if (!confirm(t("Revoke {name}? Devices using it are signed out at once.", { name: key.name }))) return;
        try {
          await post("/app/api/admin/keys/revoke", { name: key.name });
          await drawKeys();
        } catch (err) {
          showError(err);
        }
      });
      actions.append(revoke);
    }
    tr.append(actions);
    return tr;
  });
  $("key-table").tBodies[0].replaceChildren(...rows);
  const codes = data.codes.map((code) => {
    const li = document.createElement("li");
    li.textContent = t("Open code {nameplate}…, until {until}", { nameplate: code.nameplate, until: when(code.expires_at) }) + " ";
    const withdraw = document.createElement("button");
    withdraw.type = "button";
    withdraw.textContent = t("Withdraw");
    withdraw.addEventListener("click", async () => {
      await post("/app/api/admin/codes/withdraw", { id: code.id }).catch(showError);
      $("code-made").hidden = true;
      await drawKeys();
    });
    li.append(withdraw);
    return li;
  });
  $("code-list").replaceChildren(...codes);
}

function bindKeyForms() {
  $("key-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    $("error").hidden = true;
    try {
      const made = await post("/app/api/admin/keys", {
        name: $("key-name").value.trim(),
        models: modelList($("key-models").value),
        admin: $("key-admin").checked,
        expires: $("key-expires").value || null,
      });
      $("key-secret").textContent = made.secret;
      $("key-qr").src = made.qr;
      $("key-made").hidden = false;
      $("key-form").reset();
      await drawKeys();
    } catch (err) {
      showError(err);
    }
  });
  $("code-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    $("error").hidden = true;
    try {
      const made = await post("/app/api/admin/codes", { models: modelList($("code-models").value) });
      $("code-text").textContent = made.code;
      $("code-until").textContent = t("(until {until}, once)", { until: when(made.expires_at) });
      $("code-qr").src = made.qr;
      $("code-made").hidden = false;
      await drawKeys();
    } catch (err) {
      showError(err);
    }
  });
}

// ---- usage --------------------------------------------------------------------------------------

function pivot(rows, field, value) {
  const days = [...new Set(rows.map((r) => r.day))].sort();
  const names = [...new Set(rows.map((r) => r[field]))].sort();
  const series = names.map((name) => ({
    name,
    values: days.map((day) => rows.filter((r) => r.day === day && r[field] === name).reduce((s, r) => s + value(r), 0)),
  }));
  return { days, series };
}

async function drawUsage() {
  const data = await get(`/app/api/admin/usage/${$("usage-days").value}`);
  const empty = t("No requests in this period.");
  const requests = pivot(data.daily, "key", (r) => r.requests);
  barChart($("chart-requests"), requests.days, requests.series, empty);
  const tokens = pivot(data.daily, "model", (r) => r.prompt_tokens + r.completion_tokens);
  barChart($("chart-tokens"), tokens.days, tokens.series, empty);
  const models = data.by_model.filter((m) => m.avg_ttft_ms !== null);
  barChart($("chart-ttft"), models.map((m) => m.model), [{ name: t("Time to first token"), values: models.map((m) => m.avg_ttft_ms) }], empty);
  $("by-key").tBodies[0].replaceChildren(
    ...data.by_key.map((k) => {
      const tr = document.createElement("tr");
      tr.append(cell(k.key), cell(number(k.requests)), cell(number(k.errors)), cell(number(k.prompt_tokens)),
        cell(number(k.completion_tokens)), cell(number(k.avg_ttft_ms)));
      return tr;
    }),
  );
  drawLive(data.live);
}

function drawLive(live) {
  const rows = live.map((s) => {
    const tr = document.createElement("tr");
    tr.append(cell(s.key), cell(s.model || s.route), cell(s.seconds.toFixed(1)),
      cell(s.streaming ? t("answering") : t("waiting for the first token")));
    return tr;
  });
  if (!rows.length) {
    const tr = document.createElement("tr");
    const td = cell(t("Nothing is running."));
    td.colSpan = 4;
    tr.append(td);
    rows.push(tr);
  }
  $("live-table").tBodies[0].replaceChildren(...rows);
}

// ---- the server ---------------------------------------------------------------------------------

async function drawServer() {
  const data = await get("/app/api/admin/server");
  $("backend").textContent = data.backend.describe;
  $("health").textContent = data.backend.health.ok ? t("answering") : t("down: {detail}", { detail: data.backend.health.detail });
  $("health").className = `badge ${data.backend.health.ok ? "ok" : "fail"}`;
  $("server-fp").textContent = data.fingerprint || t("(this server serves plain HTTP)");
  const gpus = data.gpus.map((g) => {
    const box = document.createElement("div");
    box.className = "gpu";
    const title = document.createElement("p");
    const util = g.utilization === null ? "" : t(", {n}% busy", { n: g.utilization });
    title.textContent = t("{name}: {used} used, {free} free{util}", { name: g.name, used: gib(g.memory_used), free: gib(g.memory_free), util });
    const meter = document.createElement("meter");
    meter.min = 0;
    meter.max = g.memory_total;
    meter.value = g.memory_used;
    box.append(title, meter);
    return box;
  });
  if (!gpus.length) {
    const p = document.createElement("p");
    p.className = "small";
    p.textContent = t("No NVIDIA GPU found (NVML): the model runs on the CPU or a GPU homellm cannot read.");
    gpus.push(p);
  }
  $("gpus").replaceChildren(...gpus);
  $("loaded").tBodies[0].replaceChildren(
    ...data.loaded.map((m) => {
      const tr = document.createElement("tr");
      tr.append(cell(m.name), cell(gib(m.size)), cell(gib(m.size_vram)), cell(number(m.context_length)));
      return tr;
    }),
  );
  $("available").tBodies[0].replaceChildren(
    ...data.models.map((m) => {
      const tr = document.createElement("tr");
      tr.append(cell(m.name), cell(gib(m.size)), cell((m.details || {}).parameter_size || "-"),
        cell((m.details || {}).quantization_level || "-"));
      return tr;
    }),
  );
  $("doctor").replaceChildren(
    ...data.doctor.map((f) => {
      const li = document.createElement("li");
      li.className = `finding ${f.status}`;
      const head = document.createElement("strong");
      head.textContent = `${f.status === "ok" ? "✓" : f.status === "warn" ? "!" : "✗"} ${f.check}`;
      const detail = document.createElement("span");
      detail.textContent = ` ${f.detail}`;
      li.append(head, detail);
      if (f.fix) {
        const fix = document.createElement("p");
        fix.className = "fix";
        fix.textContent = t("Fix: {fix}", { fix: f.fix });
        li.append(fix);
      }
      return li;
    }),
  );
}

// ---- the page -----------------------------------------------------------------------------------

async function drawAll() {
  await Promise.all([drawKeys(), drawUsage(), drawServer()]);
}

async function main() {
  await loadLanguage();
  bindSwitch($("lang"));
  whenSignedOut(() => location.assign("/app/"));
  try {
    const me = await get("/app/api/me");
    setCsrf(me.csrf);
  } catch (err) {
    if (err instanceof ApiError && err.status === 401) return;
    throw err;
  }
  bindKeyForms();
  $("usage-days").addEventListener("change", () => drawUsage().catch(showError));
  $("refresh-server").addEventListener("click", () => drawServer().catch(showError));
  document.addEventListener("homellm:language", () => drawAll().catch(showError));
  await drawAll().catch(showError);
  document.body.dataset.ready = "true";
  setInterval(() => {
    if (document.visibilityState === "visible") get(`/app/api/admin/usage/${$("usage-days").value}`).then((d) => drawLive(d.live)).catch(() => {});
  }, LIVE_MS);
}

main();
