// Requests to the gateway: JSON in and out, in the page's language, with the session's CSRF token on every
// request that changes something. The session itself is an HttpOnly cookie the page never sees.
import { currentLanguage } from "./i18n.js";

let csrf = null;
let onSignedOut = null;

export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

export function setCsrf(token) {
  csrf = token;
}

export function whenSignedOut(handler) {
  onSignedOut = handler;
}

function headersFor(method, withBody) {
  const headers = { "Accept-Language": currentLanguage() };
  if (withBody) headers["Content-Type"] = "application/json";
  if (method !== "GET" && method !== "HEAD" && csrf) headers["X-CSRF-Token"] = csrf;
  return headers;
}

async function failure(answer) {
  let message = `${answer.status}`;
  try {
    const data = await answer.json();
    const error = data.error;
    message = typeof error === "string" ? error : (error && error.message) || message;
  } catch {
    // not JSON: keep the status
  }
  const err = new ApiError(answer.status, message);
  if (answer.status === 401 && onSignedOut) onSignedOut(message);
  return err;
}

export async function call(method, url, body, options = {}) {
  const answer = await fetch(url, {
    method,
    headers: headersFor(method, body !== undefined),
    body: body === undefined ? undefined : JSON.stringify(body),
    credentials: "same-origin",
    signal: options.signal,
  });
  if (!answer.ok) throw await failure(answer);
  return options.stream ? answer : answer.json();
}

export const get = (url) => call("GET", url);
export const post = (url, body = {}) => call("POST", url, body);
