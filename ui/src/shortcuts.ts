// Keyboard shortcuts: which key does what. Pure, unit-tested (shortcuts.test.ts);
// main.tsx listens for the keys and acts.

export type Shortcut = "new-chat" | "stop" | "focus-input";

/** The parts of a KeyboardEvent the matching reads. */
export type Keys = { key: string; ctrlKey: boolean; metaKey: boolean; altKey: boolean; shiftKey: boolean };

/** What `e` asks for, or null. `typing`: the focus is in a text field, where "/" is
 * a character to type, not a shortcut. Ctrl and Cmd both count as the modifier. */
export function matchShortcut(e: Keys, typing: boolean): Shortcut | null {
  const mod = e.ctrlKey || e.metaKey;
  const key = e.key.length === 1 ? e.key.toLowerCase() : e.key;
  if (e.altKey) return null;
  if (mod && !e.shiftKey && key === "n") return "new-chat";
  if (mod && !e.shiftKey && key === "l") return "focus-input";
  if (!mod && !e.shiftKey && key === "Escape") return "stop";
  if (!mod && key === "/" && !typing) return "focus-input";
  return null;
}

/** Whether `el` takes typed text (so "/" belongs to it). */
export function isTyping(el: Element | null): boolean {
  if (!el) return false;
  const tag = el.tagName;
  if (tag === "TEXTAREA" || tag === "SELECT") return true;
  if ((el as HTMLElement).isContentEditable) return true;
  if (tag !== "INPUT") return false;
  const type = ((el as HTMLInputElement).type || "text").toLowerCase();
  return !["button", "checkbox", "radio", "submit", "reset", "range", "color", "file", "image"].includes(type);
}

/** The modifier's name as this platform's users know it. */
export function modName(platform: string): string {
  return /Mac|iPhone|iPad/i.test(platform) ? "⌘" : "Ctrl+";
}

/** The one-line help the app shows. */
export function shortcutHelp(platform: string): string {
  const m = modName(platform);
  return `${m}N new chat · Esc stop the reply · ${m}L or / type a message`;
}
