// @vitest-environment jsdom
import { describe, expect, it } from "vitest";
import { admit, isImagePath, noImagesReason, pastedImages, sniffType, splitDrop } from "./attachments";

const limits = { tokens_per_image: 256, max_per_message: 8, max_bytes: 20 * 1024 * 1024 };
const b64 = (bytes: number[] | string) =>
  btoa(typeof bytes === "string" ? bytes : String.fromCharCode(...bytes));

describe("attachments", () => {
  it("a drop on the chat sends its images there and the rest to import", () => {
    const paths = ["/a/photo.JPG", "/a/model.gguf", "/a/b.webp", "/a/c.png", "/a/d.jpeg", "/a/notes.txt", "/a/png"];
    expect(splitDrop(paths, true)).toEqual({
      images: ["/a/photo.JPG", "/a/b.webp", "/a/c.png", "/a/d.jpeg"],
      others: ["/a/model.gguf", "/a/notes.txt", "/a/png"],
    });
    // Elsewhere every drop is an import, as before.
    expect(splitDrop(paths, false)).toEqual({ images: [], others: paths });
    expect(isImagePath("C:\\pics\\x.Png")).toBe(true);
    expect(isImagePath("/pics/x.gif")).toBe(false);
  });

  it("admits images up to the count and size the model's limits allow, one line for the rest", () => {
    const f = (name: string, size: number | null) => ({ name, size });
    const ok = admit(0, [f("a.png", 100), f("b.png", null)], limits, "/m/gemma");
    expect(ok).toEqual({ accepted: [f("a.png", 100), f("b.png", null)], error: "" });

    const big = admit(0, [f("huge.jpg", 25 * 1024 * 1024), f("c.png", 5)], limits, "/m/gemma");
    expect(big.accepted).toEqual([f("c.png", 5)]);
    expect(big.error).toBe("huge.jpg: 25 MB; images of at most 20 MB are sent");

    const many = admit(6, [f("1.png", 1), f("2.png", 1), f("3.png", 1), f("4.png", 1)], limits, "/m/gemma");
    expect(many.accepted.map((x) => x.name)).toEqual(["1.png", "2.png"]);
    expect(many.error).toBe("At most 8 images go with one message");

    expect(admit(0, [], null, "/m/x.gguf")).toEqual({ accepted: [], error: "" });
  });

  it("a model without vision takes none, and says why", () => {
    const r = admit(0, [{ name: "a.png", size: 1 }], null, "/models/SmolLM2.gguf");
    expect(r.accepted).toEqual([]);
    expect(r.error).toMatch(/^SmolLM2\.gguf sees no images: load a Gemma 3 4B or larger/);
    expect(noImagesReason(null)).toBe("Load a model first");
  });

  it("tells PNG, JPEG and WebP by their first bytes, not their names", () => {
    expect(sniffType(b64([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 0, 0, 0, 13]))).toBe("image/png");
    expect(sniffType(b64([0xff, 0xd8, 0xff, 0xe0, 0, 16]))).toBe("image/jpeg");
    for (const len of [[0, 0, 0, 0], [0x24, 0x1f, 0x00, 0x00], [0xff, 0xff, 0xff, 0x7f]]) {
      const webp = [..."RIFF"].map((c) => c.charCodeAt(0)).concat(len, [..."WEBPVP8 "].map((c) => c.charCodeAt(0)));
      expect(sniffType(b64(webp))).toBe("image/webp");
    }
    expect(sniffType(b64("RIFF\0\0\0\0WAVEfmt "))).toBe(null);
    expect(sniffType(b64("GIF89a......"))).toBe(null);
    expect(sniffType(b64("hello world!"))).toBe(null);
  });

  it("a paste's images come from its files, else its items; text pastes have none", () => {
    const png = new File([new Uint8Array([1])], "image.png", { type: "image/png" });
    const txt = new File(["x"], "a.txt", { type: "text/plain" });
    const transfer = (files: File[], items: { kind: string; type: string; getAsFile: () => File | null }[]) =>
      ({ files: files as unknown as FileList, items: items as unknown as DataTransferItemList });
    expect(pastedImages(transfer([png, txt], []))).toEqual([png]);
    const item = { kind: "file", type: "image/png", getAsFile: () => png };
    const text = { kind: "string", type: "text/plain", getAsFile: () => null };
    expect(pastedImages(transfer([], [text, item]))).toEqual([png]);
    expect(pastedImages(transfer([], [text]))).toEqual([]);
    expect(pastedImages(null)).toEqual([]);
  });
});
