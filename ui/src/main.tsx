import { render } from "preact";
import { useEffect, useState } from "preact/hooks";
import { getCurrentWebview } from "@tauri-apps/api/webview";
import { api } from "./api";
import { selected, view } from "./store";
import { Chat } from "./views/Chat";
import { Dashboard } from "./views/Dashboard";
import { Download } from "./views/Download";
import { importPaths, Library, refreshLibrary } from "./views/Library";
import { Quantize } from "./views/Quantize";
import { Server } from "./views/Server";
import "./style.css";

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
        view.value = "library";
        setDropErrors(await importPaths(e.payload.paths));
      }
    });
    return () => void off.then((f) => f());
  }, []);
  return (
    <div class={dragging ? "app dragging" : "app"}>
      <nav>
        <h1>Unicorn</h1>
        {TABS.map(([id, label]) => (
          <button id={`tab-${id}`} class={view.value === id ? "active" : ""} onClick={() => (view.value = id)}>{label}</button>
        ))}
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
