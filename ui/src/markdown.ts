// Assistant replies are Markdown from a model: rendered with marked, then sanitized
// by DOMPurify, since a model can write any HTML.
// Code blocks that name their language are highlighted by highlight.js (its common
// languages); others are shown plain rather than guessed, which would cost time on
// every streamed update.
import DOMPurify from "dompurify";
import hljs from "highlight.js/lib/common";
import { marked } from "marked";
import markedKatex from "marked-katex-extension";

marked.setOptions({ gfm: true, breaks: true });
// Math: $…$ inline and $$…$$ on its own lines, rendered by KaTeX to MathML, which the
// webview lays out itself: KaTeX's HTML output needs inline style attributes, which
// the app's CSP (style-src 'self') refuses, and fonts. Bad TeX shows as written
// rather than failing. The standard rules (no space inside the dollars) keep
// "$5 and $10" as text.
marked.use(markedKatex({ throwOnError: false, output: "mathml" }));

const escapeHtml = (s: string) => s.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;").replace(/"/g, "&quot;");

marked.use({
  renderer: {
    code({ text, lang }) {
      const language = (lang ?? "").trim().split(/\s+/)[0].toLowerCase();
      const known = language !== "" && hljs.getLanguage(language) !== undefined;
      const body = known ? hljs.highlight(text, { language, ignoreIllegals: true }).value : escapeHtml(text);
      const cls = language ? ` class="hljs language-${escapeHtml(language)}"` : ' class="hljs"';
      return `<pre><code${cls}>${body}\n</code></pre>\n`;
    },
  },
});

// A link's text can claim any address: its title shows where it really goes (the
// click itself is handled by the chat view, which opens web links in the browser).
DOMPurify.addHook("afterSanitizeAttributes", (node) => {
  if (node.tagName === "A" && node.hasAttribute("href")) {
    node.setAttribute("title", node.getAttribute("href") ?? "");
    node.setAttribute("rel", "noopener noreferrer");
  }
});

/** Safe HTML for a (possibly half-streamed) Markdown reply. Each code block gets a
 * copy button (added after sanitizing: it is ours, not the model's). */
export function renderMarkdown(text: string): string {
  const html = marked.parse(text, { async: false }) as string;
  const safe = DOMPurify.sanitize(html, { USE_PROFILES: { html: true, mathMl: true } });
  return safe.replace(/<pre>/g, '<pre><button class="copy-code" type="button" title="Copy the code">copy</button>');
}

/**
 * A streaming reply cut where it can be rendered piecewise: `blocks` are the parts
 * ending at each blank line outside a code fence that more text follows (they will
 * not change as tokens arrive), `tail` the rest. Rendering each block once and only
 * `tail` on each update keeps the work per token constant instead of growing with
 * the reply (whole re-renders halved decode speed in the app on 2 cores). The
 * finished reply is rendered whole, once.
 */
export function splitBlocks(text: string): { blocks: string[]; tail: string } {
  const cuts: number[] = [];
  let fence: string | null = null;
  let start = 0;
  let blank = false;
  while (start <= text.length) {
    const nl = text.indexOf("\n", start);
    const end = nl < 0 ? text.length : nl;
    const line = text.slice(start, end);
    const isBlank = line.trim() === "";
    // A blank line outside any fence, then text: the blocks before it are closed.
    if (fence === null && blank && !isBlank) cuts.push(start);
    const marker = /^ {0,3}(`{3,}|~{3,})/.exec(line)?.[1];
    if (marker && (fence === null || (marker[0] === fence[0] && marker.length >= fence.length))) {
      fence = fence === null ? marker : null;
    }
    blank = isBlank && fence === null;
    if (nl < 0) break;
    start = nl + 1;
  }
  const blocks: string[] = [];
  let from = 0;
  for (const c of cuts) {
    blocks.push(text.slice(from, c));
    from = c;
  }
  return { blocks, tail: text.slice(from) };
}
