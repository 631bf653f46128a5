import { describe, expect, it } from "vitest";
import { renderMarkdown, splitBlocks } from "./markdown";

describe("renderMarkdown", () => {
  it("renders code blocks, inline code and emphasis", () => {
    const html = renderMarkdown("Use **bold** and `x`:\n\n```rust\nfn main() {}\n```");
    expect(html).toContain("<strong>bold</strong>");
    expect(html).toContain("<code>x</code>");
    expect(html).toContain('<code class="hljs language-rust"><span class="hljs-keyword">fn</span> <span class="hljs-title function_">main</span>() {}');
  });
  it("gives each code block a copy button and leaves unnamed languages plain", () => {
    const html = renderMarkdown("```\n<b>x</b> && y\n```");
    expect(html).toContain('<pre><button class="copy-code" type="button" title="Copy the code">copy</button><code class="hljs">&lt;b&gt;x&lt;/b&gt; &amp;&amp; y');
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
  it("renders math, and leaves prices alone", () => {
    const inline = renderMarkdown("Euler: $e^{i\\pi}+1=0$.");
    expect(inline).toContain("<math");
    expect(inline).toContain("<msup><mi>e</mi>");
    expect(renderMarkdown("$$\n\\int_0^1 x\\,dx\n$$")).toContain('display="block"');
    expect(renderMarkdown("It costs $5 and $10.")).not.toContain("<math");
    expect(renderMarkdown("Bad: $\\frac{$ ok")).not.toContain("<script");
  });
  it("copes with a half-streamed code fence", () => {
    expect(renderMarkdown("```py\nprint(1").replace(/<[^>]+>/g, "")).toContain("print(1");
  });
});

describe("splitBlocks", () => {
  const stable = (t: string) => splitBlocks(t).blocks.join("");
  it("cuts at each blank line that more text follows", () => {
    const t = "# Title\n\nFirst paragraph.\n\nSecond, still strea";
    const { blocks, tail } = splitBlocks(t);
    expect(blocks).toEqual(["# Title\n\n", "First paragraph.\n\n"]);
    expect(tail).toBe("Second, still strea");
  });
  it("never cuts inside a code fence", () => {
    expect(stable("Intro.\n\n```py\nx = 1\n\ny = 2\n")).toBe("Intro.\n\n");
    const closed = "Intro.\n\n```py\nx = 1\n\ny = 2\n```\n\nAfter";
    expect(splitBlocks(closed).tail).toBe("After");
    expect(splitBlocks("~~~\na\n\n```\nb\n").blocks).toEqual([]);
  });
  it("keeps everything in the tail until a block is closed", () => {
    expect(stable("one line")).toBe("");
    expect(stable("para\n\n")).toBe("");
  });
  it("renders piecewise to what the whole renders, for blocks that stand alone", () => {
    const t = "Some **bold**.\n\n- a\n- b\n\n```js\nlet x;\n\n```\n\nEnd.";
    const { blocks, tail } = splitBlocks(t);
    expect(blocks.length).toBe(3);
    expect([...blocks, tail].map(renderMarkdown).join("")).toBe(renderMarkdown(t));
  });
});
