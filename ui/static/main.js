// Minimal shell page until the full UI lands: shows what the engine reads from the
// demo model's header, through the app's own commands.
const invoke = window.__TAURI_INTERNALS__.invoke;
const status = document.getElementById("status");
const table = document.getElementById("info");

function row(name, value) {
  const tr = document.createElement("tr");
  for (const text of [name, value]) {
    const td = document.createElement("td");
    td.textContent = text;
    tr.appendChild(td);
  }
  table.appendChild(tr);
}

async function show() {
  const path = await invoke("demo_model_path");
  if (!path) {
    status.textContent = "Demo model not found: run scripts/fetch-test-models.";
    return;
  }
  try {
    const info = await invoke("model_info", { path });
    status.textContent = path;
    row("architecture", info.architecture + (info.name ? ` (${info.name})` : ""));
    row("parameters", `${(info.parameters / 1e6).toFixed(1)} M`);
    row("size", `${(info.tensor_bytes / 2 ** 20).toFixed(1)} MiB, ${info.bits_per_weight.toFixed(2)} bits per weight`);
    row("context", `${info.context_length} tokens`);
    row("layers", info.layer_pattern);
    row("tensor types", info.tensor_types.map((t) => `${t.type} × ${t.tensors}`).join(", "));
    table.hidden = false;
  } catch (e) {
    status.textContent = `Error: ${e.message ?? JSON.stringify(e)}`;
  }
}

show();
