// uPlot formats numbers for navigator.language, read once when it loads. WebKitGTK
// reports "C" under LANG=C or C.UTF-8 (CI, containers), which Intl rejects with a
// RangeError that would stop the whole bundle from loading. Imported before uPlot
// (charts.tsx): an invalid tag is replaced by en-US.
try {
  new Intl.NumberFormat(navigator.language);
} catch {
  Object.defineProperty(navigator, "language", { value: "en-US", configurable: true });
}
export {};
