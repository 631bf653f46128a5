import { describe, expect, it } from "vitest";
import { renderMarkdown } from "./markdown";

describe("renderMarkdown", () => {
  it("renders code blocks, inline code and emphasis", () => {
    const html = renderMarkdown("Use **bold** and `x`:\n\n```rust\nfn main() {}\n```");
    expect(html).toContain("<strong>bold</strong>");
    expect(html).toContain("<code>x</code>");
    expect(html).toContain('<code class="language-rust">fn main() {}');
  });
  it("drops scripts and event handlers a model might write", () => {
    const html = renderMarkdown('<img src=x onerror="alert(1)"><script>alert(2)</script>hi');
    expect(html).not.toContain("onerror");
    expect(html).not.toContain("<script");
    expect(html).toContain("hi");
  });
  it("shows a link's real address and drops javascript: links", () => {
    const html = renderMarkdown("[docs](https://example.com/x) and [y](javascript:alert(1))");
    expect(html).toContain('href="https://example.com/x"');
    expect(html).toContain('title="https://example.com/x"');
    expect(html).not.toContain("javascript:");
  });
  it("copes with a half-streamed code fence", () => {
    expect(renderMarkdown("```py\nprint(1")).toContain("print(1");
  });
});
