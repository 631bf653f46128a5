// The theme: the user's choice, or by default the system's (prefers-color-scheme).
// It is set as data-theme on the root element, which style.css keys its colours on;
// the `dark` signal tells the charts, which draw on a canvas, to take the new ones.
import { signal } from "@preact/signals";

const query = typeof matchMedia === "function" ? matchMedia("(prefers-color-scheme: dark)") : null;

export type ThemeChoice = "system" | "light" | "dark";
const saved = typeof localStorage !== "undefined" ? localStorage.getItem("theme") : null;
/** What the user picked. */
export const themeChoice = signal<ThemeChoice>(saved === "light" || saved === "dark" ? saved : "system");

const resolve = () => (themeChoice.value === "system" ? query?.matches ?? false : themeChoice.value === "dark");
/** True while the page is dark. */
export const dark = signal(resolve());
const apply = () => {
  dark.value = resolve();
  if (typeof document !== "undefined") document.documentElement.dataset.theme = dark.value ? "dark" : "light";
};
query?.addEventListener("change", apply);
themeChoice.subscribe((c) => {
  if (typeof localStorage !== "undefined") localStorage.setItem("theme", c);
  apply();
});

/** A CSS custom property of the page as it is now ("--accent" -> "#7a5cff"). */
export function cssVar(name: string, fallback: string): string {
  if (typeof document === "undefined") return fallback;
  return getComputedStyle(document.documentElement).getPropertyValue(name).trim() || fallback;
}
