import { describe, expect, it } from "vitest";
import { AGO_INCRS, BYTE_INCRS, agoLabel, byteTicks, byteUnitFor, headroom, niceTicks, percentTicks, pushSample, trimWindow, WINDOW_S } from "./chartdata";

const MiB = 1024 ** 2, GiB = 1024 ** 3;

describe("time window", () => {
  it("keeps the last 10 minutes", () => {
    const now = 1_000_000_000;
    const s = [{ t: now - 700_000 }, { t: now - 600_001 }, { t: now - 600_000 }, { t: now - 1000 }, { t: now }];
    expect(trimWindow(s, now).map((x) => now - x.t)).toEqual([600_000, 1000, 0]);
    expect(trimWindow(s, now, 1).map((x) => now - x.t)).toEqual([1000, 0]);
  });
  it("returns the same array when nothing is old", () => {
    const s = [{ t: 5 }, { t: 6 }];
    expect(trimWindow(s, 6)).toBe(s);
    expect(trimWindow([], 6)).toEqual([]);
  });
  it("a new sample pushes out the old ones, and does not change the old array", () => {
    let s: { t: number }[] = [];
    for (let i = 0; i <= 700; i++) s = pushSample(s, { t: i * 1000 });
    expect(s.length).toBe(WINDOW_S + 1);
    expect(s[0].t).toBe(100_000);
    const before = s;
    const after = pushSample(s, { t: 701_000 });
    expect(before.length).toBe(WINDOW_S + 1);
    expect(after[0].t).toBe(101_000);
  });
});

describe("axis labels", () => {
  it("time relative to now", () => {
    expect(agoLabel(0)).toBe("now");
    expect(agoLabel(-0.2)).toBe("now");
    expect(agoLabel(-30)).toBe("−30 s");
    expect(agoLabel(-120)).toBe("−2 min");
    expect(agoLabel(-90)).toBe("−1.5 min");
    expect(agoLabel(-600)).toBe("−10 min");
    expect(AGO_INCRS).toContain(60);
  });
  it("byte spacings are round in the unit they are shown in", () => {
    expect(byteUnitFor(256 * MiB)).toBe(3); // ¼ GiB
    expect(byteUnitFor(512 * MiB)).toBe(3);
    expect(byteUnitFor(200 * MiB)).toBe(2);
    expect(byteUnitFor(500 * MiB)).toBe(2);
    expect(byteUnitFor(2 * GiB)).toBe(3);
    expect(byteUnitFor(100)).toBe(0);
    expect(BYTE_INCRS[0]).toBe(1);
    expect(BYTE_INCRS).toContain(256 * MiB);
    expect([...BYTE_INCRS].sort((a, b) => a - b)).toEqual(BYTE_INCRS);
    expect(new Set(BYTE_INCRS).size).toBe(BYTE_INCRS.length);
  });
  it("byte ticks with their unit", () => {
    expect(byteTicks([0, 256 * MiB, 512 * MiB, 768 * MiB], 256 * MiB)).toEqual(["0", "0.25 GiB", "0.5 GiB", "0.75 GiB"]);
    expect(byteTicks([0, 500 * MiB, 1000 * MiB], 500 * MiB)).toEqual(["0", "500 MiB", "1000 MiB"]);
    expect(byteTicks([2 * GiB, 4 * GiB], 2 * GiB)).toEqual(["2 GiB", "4 GiB"]);
    expect(byteTicks([0, 512, 1024], 512)).toEqual(["0", "0.5 KiB", "1 KiB"]);
  });
  it("percent ticks", () => {
    expect(percentTicks([0, 25, 50, 12.5])).toEqual(["0 %", "25 %", "50 %", "12.5 %"]);
  });
  it("nice ticks cover the maximum", () => {
    expect(niceTicks(0.034)).toEqual([0, 0.01, 0.02, 0.03, 0.04]);
    expect(niceTicks(100)).toEqual([0, 25, 50, 75, 100]);
    expect(niceTicks(7)).toEqual([0, 2, 4, 6, 8]);
    expect(niceTicks(0)).toEqual([0]);
    expect(niceTicks(Number.NaN)).toEqual([0]);
    for (const m of [0.0012, 3.3, 17, 999, 12345]) {
      const t = niceTicks(m);
      expect(t[t.length - 1]).toBeGreaterThanOrEqual(m);
      expect(t.length).toBeLessThanOrEqual(6);
    }
  });
  it("headroom above the largest value", () => {
    expect(headroom([1, null, 10, undefined, Number.NaN])).toBeCloseTo(11.5);
    expect(headroom([], 1024)).toBe(1024);
    expect(headroom([0.1], 1)).toBe(1);
  });
});
