// Assistant replies are Markdown from a model: rendered with marked, then sanitized
// by DOMPurify, since a model can write any HTML.
import DOMPurify from "dompurify";
import { marked } from "marked";

marked.setOptions({ gfm: true, breaks: true });

// A link's text can claim any address: its title shows where it really goes (the
// click itself is handled by the chat view, which opens web links in the browser).
DOMPurify.addHook("afterSanitizeAttributes", (node) => {
  if (node.tagName === "A" && node.hasAttribute("href")) {
    node.setAttribute("title", node.getAttribute("href") ?? "");
    node.setAttribute("rel", "noopener noreferrer");
  }
});

/** Safe HTML for a (possibly half-streamed) Markdown reply. */
export function renderMarkdown(text: string): string {
  const html = marked.parse(text, { async: false }) as string;
  return DOMPurify.sanitize(html, { USE_PROFILES: { html: true } });
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
