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
