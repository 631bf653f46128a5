// The types the Quantize view offers, and what each typically costs in quality.
// Pure, unit-tested (quanttypes.test.ts).

/** Every GGUF type the engine writes, as the CLI spells them
 * (`unicorn_engine::quantize::types::ALL`, crates/engine/src/quantize/types.rs), then
 * NF4 (an HF folder in bitsandbytes' layout; `unicorn quantize --to nf4`). */
export const TYPES = ["F32", "F16", "BF16", "Q8_0", "Q6_K", "Q5_K_M", "Q5_K_S", "Q4_K_M", "Q4_K_S", "Q4_0", "Q3_K_M", "Q2_K", "NF4"] as const;
export type TypeName = (typeof TYPES)[number];

/** Typical perplexity increase of each type over the 16-bit model, as llama.cpp publishes
 * it in `llama-quantize --help` (QUANT_OPTIONS in tools/quantize/quantize.cpp,
 * https://github.com/ggml-org/llama.cpp/blob/master/tools/quantize/quantize.cpp):
 * measured on Llama-3-8B (F16 and BF16: on Mistral-7B) with wikitext-2. Not measured on
 * the model at hand: the report's "Measure quality" button does that. F32 is the
 * reference; llama.cpp publishes no figure for NF4 (bitsandbytes' 4-bit NormalFloat). */
export const TYPICAL_DELTA_PPL: Record<TypeName, number | null> = {
  F32: null,
  F16: 0.0020,
  BF16: -0.0050,
  Q8_0: 0.0026,
  Q6_K: 0.0217,
  Q5_K_M: 0.0569,
  Q5_K_S: 0.1049,
  Q4_K_M: 0.1754,
  Q4_K_S: 0.2689,
  Q4_0: 0.4685,
  Q3_K_M: 0.6569,
  Q2_K: 3.5199,
  NF4: null,
};

/** A class, the typical ΔPPL it comes from (null: none published), and its source. */
export type Quality = { cls: string; delta: number | null; note: string };

/** A quality class from a typical perplexity increase (on an 8B model whose
 * perplexity is about 6, +0.1 is about 1.6 %). */
export function qualityClass(deltaPpl: number): string {
  if (deltaPpl <= 0.01) return "lossless";
  if (deltaPpl <= 0.03) return "near-lossless";
  if (deltaPpl <= 0.12) return "very good";
  if (deltaPpl <= 0.3) return "good";
  if (deltaPpl <= 1) return "noticeable loss";
  return "large loss";
}

/** The class and where it comes from, for one type. */
export function quality(t: string): Quality {
  if (t === "F32") return { cls: "reference", delta: null, note: "full precision" };
  if (t === "NF4") return { cls: "good", delta: null, note: "4-bit NormalFloat; llama.cpp publishes no figure for it: classed with the 4-bit types" };
  const d = TYPICAL_DELTA_PPL[t as TypeName];
  if (d === undefined || d === null) return { cls: "–", delta: null, note: "" };
  const model = t === "F16" || t === "BF16" ? "Mistral-7B" : "Llama-3-8B";
  return { cls: qualityClass(d), delta: d, note: `typical ΔPPL ${d >= 0 ? "+" : ""}${d.toFixed(4)} on ${model} (llama.cpp)` };
}
