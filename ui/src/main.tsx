import { render } from "preact";
import { useEffect, useState } from "preact/hooks";
import { getCurrentWebview } from "@tauri-apps/api/webview";
import { api } from "./api";
import { attachPaths, splitDrop } from "./attachments";
import { isTyping, matchShortcut, modName, shortcutHelp } from "./shortcuts";
import { selected, view } from "./store";
import { themeChoice, type ThemeChoice } from "./theme";
import { Chat } from "./views/Chat";
import { Dashboard } from "./views/Dashboard";
import { Download } from "./views/Download";
import { importPaths, Library, refreshLibrary } from "./views/Library";
import { Quantize } from "./views/Quantize";
import { Server } from "./views/Server";
import "./style.css";

/** Runs `fn` once the element `id` is in the page: at once if it is already, else once
 * the view that renders it has mounted and run its effects (its listeners are set). */
function whenShown(id: string, fn: (el: HTMLElement) => void, tries = 30) {
  const el = document.getElementById(id);
  if (el && tries === 30) fn(el);
  else if (el) requestAnimationFrame(() => setTimeout(() => fn(el)));
  else if (tries > 0) requestAnimationFrame(() => whenShown(id, fn, tries - 1));
}

/** Ctrl/Cmd+N: new chat; Escape: stop the reply; Ctrl/Cmd+L, or "/" outside a text field: type a message. */
function onShortcut(e: KeyboardEvent) {
  const action = matchShortcut(e, isTyping(document.activeElement));
  if (action === "stop") void api.chatStop();
  else if (action) {
    e.preventDefault();
    view.value = "chat";
    whenShown("chat", () => {
      if (action === "new-chat") window.dispatchEvent(new CustomEvent("unicorn:new-chat"));
      document.getElementById("prompt")?.focus();
    });
  }
}

const TABS = [["library", "Library"], ["download", "Download"], ["chat", "Chat"], ["quantize", "Quantize"], ["server", "Server"], ["dashboard", "Dashboard"]] as const;

function App() {
  const [dropErrors, setDropErrors] = useState<string[]>([]);
  const [dragging, setDragging] = useState(false);
  useEffect(() => {
    void (async () => {
      // First launch: the demo model is in the library, ready to chat.
      const demo = await api.demoModelPath();
      if (demo) {
        await importPaths([demo]);
        selected.value ??= demo;
      }
      else await refreshLibrary();
    })();
    const off = getCurrentWebview().onDragDropEvent(async (e) => {
      if (e.payload.type === "enter" || e.payload.type === "over") setDragging(true);
      else if (e.payload.type === "leave") setDragging(false);
      else if (e.payload.type === "drop") {
        setDragging(false);
        // Images dropped on the chat go with the next message; anything else is a
        // model to import.
        const { images, others } = splitDrop(e.payload.paths, view.value === "chat");
        if (images.length) void attachPaths(images);
        if (others.length) {
          view.value = "library";
          setDropErrors(await importPaths(others));
        }
      }
    });
    window.addEventListener("keydown", onShortcut);
    return () => {
      window.removeEventListener("keydown", onShortcut);
      void off.then((f) => f());
    };
  }, []);
  return (
    <div class={dragging ? "app dragging" : "app"}>
      <nav>
        <h1>Unicorn</h1>
        {TABS.map(([id, label]) => (
          <button id={`tab-${id}`} class={view.value === id ? "active" : ""} onClick={() => (view.value = id)}
            title={id === "chat" ? `${modName(navigator.platform)}N new chat, ${modName(navigator.platform)}L or / type a message, Esc stop the reply` : undefined}>{label}</button>
        ))}
        <p class="shortcuts" id="shortcuts">{shortcutHelp(navigator.platform)}</p>
        <select id="theme" title="Colours" value={themeChoice.value} onChange={(e) => (themeChoice.value = (e.target as HTMLSelectElement).value as ThemeChoice)}>
          <option value="system">System theme</option>
          <option value="light">Light</option>
          <option value="dark">Dark</option>
        </select>
      </nav>
      <main>
        {view.value === "library" && <Library dropErrors={dropErrors} />}
        {view.value === "download" && <Download />}
        {view.value === "chat" && <Chat />}
        {view.value === "quantize" && <Quantize />}
        {view.value === "server" && <Server />}
        {view.value === "dashboard" && <Dashboard />}
      </main>
    </div>
  );
}

render(<App />, document.getElementById("app")!);
