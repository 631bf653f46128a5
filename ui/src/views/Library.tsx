// The user's models; drop a .gguf or a model folder anywhere on the window to add
// one (main.tsx routes Tauri's drop event to importPaths, as the Import field does).
import { useState } from "preact/hooks";
import { api, errorText } from "../api";
import { baseName, bytes, params } from "../format";
import { library, selected, view } from "../store";

export async function refreshLibrary() {
  library.value = await api.libraryList();
}

/** Imports each path; returns the errors, one line per refused path. */
export async function importPaths(paths: string[]): Promise<string[]> {
  const errors: string[] = [];
  for (const p of paths) {
    try {
      await api.libraryImport(p);
    } catch (e) {
      errors.push(errorText(e));
    }
  }
  await refreshLibrary();
  return errors;
}

export function Library(props: { dropErrors: string[] }) {
  const [path, setPath] = useState("");
  const [errors, setErrors] = useState<string[]>([]);
  const shown = [...props.dropErrors, ...errors];
  const open = (p: string, v: "chat" | "quantize") => {
    selected.value = p;
    view.value = v;
  };
  return (
    <section id="library">
      <h2>Library</h2>
      <p class="hint">Drop a .gguf file or a model folder anywhere on this window to add it.</p>
      <form
        class="row"
        onSubmit={async (e) => {
          e.preventDefault();
          setErrors(await importPaths([path.trim()]));
        }}
      >
        <input id="import-path" placeholder="/path/to/model.gguf or model folder" value={path}
          onInput={(e) => setPath((e.target as HTMLInputElement).value)} />
        <button id="import" type="submit" disabled={!path.trim()}>Import</button>
      </form>
      {shown.map((e) => <p class="error">{e}</p>)}
      <table>
        <thead>
          <tr><th>model</th><th>format</th><th>quantization</th><th>architecture</th><th>size</th><th>parameters</th><th>source</th><th /></tr>
        </thead>
        <tbody>
          {library.value.map((m) => (
            // Keyed by path: a refresh that reorders rows must not hand a row's buttons
            // (and a click in flight) to another model.
            <tr key={m.path} class={m.present ? "" : "missing"} data-path={m.path}>
              <td title={m.path}>{m.repo ?? baseName(m.path)}</td>
              <td>{m.format}</td>
              <td>{m.quantization}</td>
              <td>{m.architecture}</td>
              <td>{bytes(m.size_bytes)}</td>
              <td>{params(m.parameters)}</td>
              <td>{m.source}</td>
              <td class="actions">
                <button class="chat" disabled={!m.present} onClick={() => open(m.path, "chat")}>Chat</button>
                <button class="quantize" disabled={!m.present} onClick={() => open(m.path, "quantize")}>Quantize</button>
              </td>
            </tr>
          ))}
        </tbody>
      </table>
    </section>
  );
}
