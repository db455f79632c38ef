// The page's words in English or Japanese. The catalog comes from the server (GET /app/api/i18n), made
// from the same gettext catalog as the command line's messages. The language follows the browser's
// Accept-Language until the switch picks one; that choice is kept on this device (localStorage).
const KEY = "homellm.lang";
let messages = {};
let lang = "en";

export function t(message, vars) {
  let text = messages[message] || message;
  if (vars) text = text.replace(/\{(\w+)\}/g, (whole, name) => (name in vars ? String(vars[name]) : whole));
  return text;
}

export function currentLanguage() {
  return lang;
}

export function locale() {
  return lang === "ja" ? "ja-JP" : "en-US";
}

export function applyTo(root) {
  for (const el of root.querySelectorAll("[data-i18n]")) el.textContent = t(el.dataset.i18n);
  for (const el of root.querySelectorAll("[data-i18n-placeholder]")) el.placeholder = t(el.dataset.i18nPlaceholder);
  for (const el of root.querySelectorAll("[data-i18n-title]")) el.title = t(el.dataset.i18nTitle);
  for (const el of root.querySelectorAll("[data-i18n-label]")) el.setAttribute("aria-label", t(el.dataset.i18nLabel));
}

export async function loadLanguage() {
  const chosen = localStorage.getItem(KEY);
  const headers = chosen ? { "Accept-Language": chosen } : {};
  const answer = await fetch("/app/api/i18n", { headers, credentials: "same-origin" });
  const data = await answer.json();
  messages = data.messages || {};
  lang = data.lang || "en";
  document.documentElement.lang = lang;
  applyTo(document);
  for (const select of document.querySelectorAll("select.lang")) select.value = lang;
  document.dispatchEvent(new CustomEvent("homellm:language", { detail: lang }));
}

export function bindSwitch(select) {
  select.addEventListener("change", async () => {
    localStorage.setItem(KEY, select.value);
    await loadLanguage();
  });
}

export function when(seconds) {
  if (seconds === null || seconds === undefined) return t("no expiry");
  return new Date(seconds * 1000).toLocaleString(locale(), { dateStyle: "medium", timeStyle: "short" });
}
