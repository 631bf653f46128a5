import { defineConfig } from "vite";
import preact from "@preact/preset-vite";

// The app loads ui/dist from disk (tauri.conf.json frontendDist); no dev server.
export default defineConfig({
  plugins: [preact()],
  build: { outDir: "dist", emptyOutDir: true, target: "es2022" },
  test: { environment: "jsdom" },
});
