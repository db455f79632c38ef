// A small, strict Markdown renderer for model output, which is untrusted text.
//
// It never parses HTML and never assigns innerHTML: every piece of text becomes a Text node, and the only
// elements it makes are the ones listed here. Raw HTML in the output (<img onerror=...>, <script>) is shown
// as the characters it is. Links are made only for absolute http:, https: and mailto: URLs (javascript:,
// data: and relative URLs stay text), open in a new tab without a referrer, and no image is ever loaded.
import { t } from "./i18n.js";

const MAX_DEPTH = 4;
const SAFE_SCHEMES = new Set(["http:", "https:", "mailto:"]);
// Every span is bounded (emphasis 500 characters, code 2000): an unbounded lazy span rescans the rest of the
// line from every opening marker, so a long line of "**a " (model output) took quadratic time (64 KB: a second
// per repaint, 1 MB: minutes); bounded, 1 MB takes under a second.
const INLINE =
  /(`+)([^`][\s\S]{0,2000}?)\1(?!`)|\*\*(?=\S)([\s\S]{0,500}?\S)\*\*|__(?=\S)([\s\S]{0,500}?\S)__|\*(?=[^\s*])([^*]{0,500}?[^\s*])\*|!?\[([^\]\n]{1,500})\]\(\s*<?([^)\s>]{1,2000})>?(?:\s+"[^"\n]*")?\s*\)|(https?:\/\/[^\s<>"'`]+[^\s<>"'`.,;:!?)\]])/g;

function el(tag, className) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  return node;
}

export function safeUrl(text) {
  let url;
  try {
    url = new URL(text);
  } catch {
    return null;
  }
  return SAFE_SCHEMES.has(url.protocol) ? url.href : null;
}

function link(label, href, depth) {
  const url = safeUrl(href);
  if (url === null) return document.createTextNode(label === href ? href : `${label} (${href})`);
  const a = el("a");
  a.href = url;
  a.rel = "noopener noreferrer nofollow";
  a.target = "_blank";
  a.append(...inline(label, depth + 1));
  return a;
}

export function inline(text, depth = 0) {
  if (depth > MAX_DEPTH) return [document.createTextNode(text)];
  const out = [];
  let last = 0;
  INLINE.lastIndex = 0;
  const pattern = new RegExp(INLINE.source, "g");
  let m;
  while ((m = pattern.exec(text)) !== null) {
    if (m.index > last) out.push(document.createTextNode(text.slice(last, m.index)));
    if (m[1]) {
      const code = el("code");
      code.textContent = m[2];
      out.push(code);
    } else if (m[3] !== undefined || m[4] !== undefined) {
      const strong = el("strong");
      strong.append(...inline(m[3] ?? m[4], depth + 1));
      out.push(strong);
    } else if (m[5] !== undefined) {
      const em = el("em");
      em.append(...inline(m[5], depth + 1));
      out.push(em);
    } else if (m[6] !== undefined) {
      out.push(link(m[6], m[7], depth)); // an image is shown as a link to it, never loaded
    } else {
      out.push(link(m[8], m[8], depth));
    }
    last = pattern.lastIndex;
  }
  if (last < text.length) out.push(document.createTextNode(text.slice(last)));
  return out;
}

function codeBlock(language, lines) {
  const box = el("div", "code");
  const head = el("div", "code-head");
  const name = el("span", "code-lang");
  name.textContent = language;
  const copy = el("button", "copy");
  copy.type = "button";
  copy.textContent = t("Copy");
  const text = lines.join("\n");
  copy.addEventListener("click", async () => {
    try {
      await navigator.clipboard.writeText(text);
      copy.textContent = t("Copied");
    } catch {
      copy.textContent = t("Copy failed");
    }
    setTimeout(() => (copy.textContent = t("Copy")), 1500);
  });
  head.append(name, copy);
  const pre = el("pre");
  const code = el("code");
  code.textContent = text;
  pre.append(code);
  box.append(head, pre);
  return box;
}

const FENCE = /^\s{0,3}(`{3,}|~{3,})\s*([\w+#.-]{0,30})/;
const HEADING = /^\s{0,3}(#{1,6})\s+(.*?)\s*#*\s*$/;
const RULE = /^\s{0,3}([-*_])(\s*\1){2,}\s*$/;
const BULLET = /^\s{0,3}[-*+]\s+(.*)$/;
const NUMBERED = /^\s{0,3}(\d{1,9})[.)]\s+(.*)$/;
const QUOTE = /^\s{0,3}>\s?(.*)$/;

export function render(source, depth = 0) {
  const root = document.createDocumentFragment();
  const lines = String(source).replace(/\r\n?/g, "\n").split("\n");
  let i = 0;
  while (i < lines.length) {
    const line = lines[i];
    const fence = FENCE.exec(line);
    if (fence) {
      const body = [];
      i++;
      while (i < lines.length && !lines[i].trim().startsWith(fence[1])) body.push(lines[i++]);
      i++; // the closing fence (a stream may not have sent it yet)
      root.append(codeBlock(fence[2], body));
      continue;
    }
    if (!line.trim()) {
      i++;
      continue;
    }
    const heading = HEADING.exec(line);
    if (heading) {
      const h = el(`h${Math.min(heading[1].length + 2, 6)}`);
      h.append(...inline(heading[2]));
      root.append(h);
      i++;
      continue;
    }
    if (RULE.test(line)) {
      root.append(el("hr"));
      i++;
      continue;
    }
    if (QUOTE.test(line) && depth < MAX_DEPTH) {
      const quoted = [];
      while (i < lines.length && QUOTE.test(lines[i])) quoted.push(QUOTE.exec(lines[i++])[1]);
      const q = el("blockquote");
      q.append(render(quoted.join("\n"), depth + 1));
      root.append(q);
      continue;
    }
    const listKind = BULLET.test(line) ? BULLET : NUMBERED.test(line) ? NUMBERED : null;
    if (listKind) {
      const list = el(listKind === BULLET ? "ul" : "ol");
      if (listKind === NUMBERED) list.start = Number(NUMBERED.exec(line)[1]);
      while (i < lines.length && listKind.test(lines[i])) {
        const m = listKind.exec(lines[i++]);
        const item = el("li");
        item.append(...inline(listKind === BULLET ? m[1] : m[2]));
        list.append(item);
      }
      root.append(list);
      continue;
    }
    const paragraph = el("p");
    const start = i;
    while (
      i < lines.length &&
      lines[i].trim() &&
      !FENCE.test(lines[i]) &&
      !HEADING.test(lines[i]) &&
      !(i > start && (BULLET.test(lines[i]) || NUMBERED.test(lines[i]) || QUOTE.test(lines[i])))
    ) {
      if (i > start) paragraph.append(el("br"));
      paragraph.append(...inline(lines[i++]));
    }
    root.append(paragraph);
  }
  return root;
}
