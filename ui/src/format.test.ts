import { describe, expect, it } from "vitest";
import { baseName, bytes, duration, params, percent, tokS } from "./format";

describe("format", () => {
  it("sizes in binary units", () => {
    expect(bytes(0)).toBe("0 B");
    expect(bytes(1023)).toBe("1023 B");
    expect(bytes(1536)).toBe("1.50 KiB");
    expect(bytes(105.5e6)).toBe("101 MiB");
    expect(bytes(8 * 2 ** 30)).toBe("8.00 GiB");
    expect(bytes(-1)).toBe("–");
  });
  it("durations", () => {
    expect(duration(4.4)).toBe("4 s");
    expect(duration(185)).toBe("3 min 5 s");
    expect(duration(3720)).toBe("1 h 2 min");
    expect(duration(null)).toBe("–");
  });
  it("rates, parameters, percentages, names", () => {
    expect(tokS(183.84)).toBe("183.8 tok/s");
    expect(tokS(0)).toBe("–");
    expect(params(134_515_008)).toBe("135 M");
    expect(params(4.3e9)).toBe("4.30 B");
    expect(percent(0.8312)).toBe("83.1 %");
    expect(baseName("/home/u/models/SmolLM2.gguf")).toBe("SmolLM2.gguf");
    expect(baseName("/home/u/gemma-nf4/")).toBe("gemma-nf4");
  });
});
