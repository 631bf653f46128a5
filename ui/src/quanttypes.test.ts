import { describe, expect, it } from "vitest";
import { quality, qualityClass, TYPES, TYPICAL_DELTA_PPL } from "./quanttypes";

describe("quantization types", () => {
  it("offers the CLI's 12 GGUF types and NF4", () => {
    expect(TYPES.length).toBe(13);
    expect(TYPES).toContain("Q4_K_M");
    expect(TYPES).toContain("Q3_K_M");
    expect(TYPES[TYPES.length - 1]).toBe("NF4");
    for (const t of TYPES) expect(t in TYPICAL_DELTA_PPL).toBe(true);
  });
  it("classes follow the typical perplexity increase", () => {
    expect(qualityClass(0.0026)).toBe("lossless");
    expect(qualityClass(0.0217)).toBe("near-lossless");
    expect(qualityClass(0.0569)).toBe("very good");
    expect(qualityClass(0.1754)).toBe("good");
    expect(qualityClass(0.4685)).toBe("noticeable loss");
    expect(qualityClass(3.5199)).toBe("large loss");
  });
  it("fewer bits never class better", () => {
    const order = ["lossless", "near-lossless", "very good", "good", "noticeable loss", "large loss"];
    const gguf = ["Q8_0", "Q6_K", "Q5_K_M", "Q5_K_S", "Q4_K_M", "Q4_K_S", "Q4_0", "Q3_K_M", "Q2_K"];
    const ranks = gguf.map((t) => order.indexOf(quality(t).cls));
    expect(ranks.every((r) => r >= 0)).toBe(true);
    expect([...ranks].sort((a, b) => a - b)).toEqual(ranks);
  });
  it("says where a figure comes from", () => {
    expect(quality("Q4_K_M").note).toBe("typical ΔPPL +0.1754 on Llama-3-8B (llama.cpp)");
    expect(quality("BF16").note).toBe("typical ΔPPL -0.0050 on Mistral-7B (llama.cpp)");
    expect(quality("F32").cls).toBe("reference");
    expect(quality("NF4").cls).toBe("good");
    expect(quality("XYZ").cls).toBe("–");
  });
});
