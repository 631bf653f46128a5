// Assistant replies are Markdown from a model: rendered with marked, then sanitized
// by DOMPurify, since a model can write any HTML.
import DOMPurify from "dompurify";
import { marked } from "marked";

marked.setOptions({ gfm: true, breaks: true });

/** Safe HTML for a (possibly half-streamed) Markdown reply. */
export function renderMarkdown(text: string): string {
  const html = marked.parse(text, { async: false }) as string;
  return DOMPurify.sanitize(html, { USE_PROFILES: { html: true } });
}
