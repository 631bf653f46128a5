// @vitest-environment jsdom
import { describe, expect, it } from "vitest";
import { isTyping, matchShortcut, modName, shortcutHelp } from "./shortcuts";

const key = (k: string, mods: Partial<{ ctrlKey: boolean; metaKey: boolean; altKey: boolean; shiftKey: boolean }> = {}) =>
  ({ key: k, ctrlKey: false, metaKey: false, altKey: false, shiftKey: false, ...mods });

describe("shortcuts", () => {
  it("Ctrl or Cmd + N: new chat, even while typing", () => {
    expect(matchShortcut(key("n", { ctrlKey: true }), false)).toBe("new-chat");
    expect(matchShortcut(key("N", { metaKey: true }), true)).toBe("new-chat");
    expect(matchShortcut(key("n"), false)).toBe(null);
    expect(matchShortcut(key("n", { ctrlKey: true, shiftKey: true }), false)).toBe(null);
    expect(matchShortcut(key("n", { ctrlKey: true, altKey: true }), false)).toBe(null);
  });
  it("Escape: stop, also from the message field", () => {
    expect(matchShortcut(key("Escape"), true)).toBe("stop");
    expect(matchShortcut(key("Escape"), false)).toBe("stop");
    expect(matchShortcut(key("Escape", { ctrlKey: true }), false)).toBe(null);
  });
  it("Ctrl/Cmd + L, or / outside a text field: focus the message field", () => {
    expect(matchShortcut(key("l", { ctrlKey: true }), true)).toBe("focus-input");
    expect(matchShortcut(key("L", { metaKey: true }), false)).toBe("focus-input");
    expect(matchShortcut(key("/"), false)).toBe("focus-input");
    expect(matchShortcut(key("/"), true)).toBe(null);
    expect(matchShortcut(key("/", { ctrlKey: true }), false)).toBe(null);
    expect(matchShortcut(key("a"), false)).toBe(null);
    expect(matchShortcut(key("Enter"), false)).toBe(null);
  });
  it("what counts as typing", () => {
    const el = (html: string) => {
      const d = document.createElement("div");
      d.innerHTML = html;
      return d.firstElementChild;
    };
    expect(isTyping(null)).toBe(false);
    expect(isTyping(el("<textarea></textarea>"))).toBe(true);
    expect(isTyping(el("<input>"))).toBe(true);
    expect(isTyping(el('<input type="search">'))).toBe(true);
    expect(isTyping(el('<input type="checkbox">'))).toBe(false);
    expect(isTyping(el("<select></select>"))).toBe(true);
    expect(isTyping(el("<button>x</button>"))).toBe(false);
    expect(isTyping(document.body)).toBe(false);
  });
  it("names the modifier per platform", () => {
    expect(modName("MacIntel")).toBe("⌘");
    expect(modName("Linux x86_64")).toBe("Ctrl+");
    expect(shortcutHelp("Linux x86_64")).toBe("Ctrl+N new chat · Esc stop the reply · Ctrl+L or / type a message");
  });
});
