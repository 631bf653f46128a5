// Images attached to the next chat message: from the clipboard (paste), the attach
// button's file picker, or files dropped on the window while the chat is showing
// (Tauri's drop event gives paths, which the shell reads: the webview's own drop is
// Tauri's). Each is kept as its bytes (base64) with a small preview made here; the
// shell checks them again (count, size, format) and the model decodes them when the
// message is sent. Kept outside the view, as the rest of the chat's state.
import { signal } from "@preact/signals";
import { api, errorText } from "./api";
import type { ImageLimits } from "./bindings/ImageLimits";
import type { ImageUpload } from "./bindings/ImageUpload";
import { baseName } from "./format";
import { loaded } from "./store";

/** The images waiting to go with the next message. */
export const attachments = signal<ImageUpload[]>([]);
/** Why the last images were not attached (one line), or "". */
export const attachError = signal("");

/** File names the chat takes as images when dropped (the shell checks the bytes). */
const IMAGE_NAME = /\.(png|jpe?g|webp)$/i;
/** The formats the engine decodes, as the clipboard and the file picker type them. */
export const IMAGE_TYPES = ["image/png", "image/jpeg", "image/webp"];
/** Longest side of a preview, in pixels (shown at up to 96 px; sharp on a 2x display). */
const THUMB_SIDE = 192;

const mb = (n: number) => +(n / (1 << 20)).toFixed(1);

/** Whether a dropped path names an image by its extension. */
export function isImagePath(path: string): boolean {
  return IMAGE_NAME.test(path);
}

/** Paths dropped on the window: the images go to the chat when it is showing, the
 * rest to the library's import. */
export function splitDrop(paths: string[], chatShowing: boolean): { images: string[]; others: string[] } {
  if (!chatShowing) return { images: [], others: paths };
  return { images: paths.filter(isImagePath), others: paths.filter((p) => !isImagePath(p)) };
}

/** Why the loaded model takes no images, for the place the attach button would be. */
export function noImagesReason(modelPath: string | null | undefined): string {
  if (!modelPath) return "Load a model first";
  return `${baseName(modelPath)} sees no images: load a Gemma 3 4B or larger with its vision tower (a model folder, or a GGUF with its mmproj file beside it)`;
}

/** Of `incoming` (with their sizes, when known), those that may join `already`
 * attached images under `limits`, and one line saying why the first of the others
 * may not. */
export function admit<T extends { name: string; size: number | null }>(
  already: number,
  incoming: T[],
  limits: ImageLimits | null | undefined,
  modelPath: string | null | undefined,
): { accepted: T[]; error: string } {
  if (incoming.length === 0) return { accepted: [], error: "" };
  if (!limits) return { accepted: [], error: noImagesReason(modelPath) };
  const accepted: T[] = [];
  let error = "";
  for (const f of incoming) {
    if (f.size !== null && f.size > limits.max_bytes) {
      error ||= `${f.name}: ${mb(f.size)} MB; images of at most ${mb(limits.max_bytes)} MB are sent`;
    } else if (already + accepted.length >= limits.max_per_message) {
      error ||= `At most ${limits.max_per_message} images go with one message`;
    } else accepted.push(f);
  }
  return { accepted, error };
}

/** The MIME type of an image by its first bytes (base64), or null for none the
 * engine decodes. */
export function sniffType(base64: string): string | null {
  if (base64.startsWith("iVBORw0KGgo")) return "image/png";
  if (base64.startsWith("/9j/")) return "image/jpeg";
  // "RIFF" then four bytes of length, then "WEBP" (base64 "V0VCUA" at offset 11).
  if (base64.startsWith("UklGR") && base64.slice(11, 16) === "XRUJQ") return "image/webp";
  return null;
}

/** A preview of an image: at most THUMB_SIDE pixels a side, as a PNG data URL; fails
 * when the webview cannot show it (then neither can the model use it). */
export function thumbnail(name: string, type: string, base64: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const img = new Image();
    img.onload = () => {
      const scale = Math.min(1, THUMB_SIDE / Math.max(img.naturalWidth, img.naturalHeight, 1));
      const canvas = document.createElement("canvas");
      canvas.width = Math.max(1, Math.round(img.naturalWidth * scale));
      canvas.height = Math.max(1, Math.round(img.naturalHeight * scale));
      const ctx = canvas.getContext("2d");
      if (!ctx) return reject(new Error(`${name}: no canvas to preview it`));
      ctx.drawImage(img, 0, 0, canvas.width, canvas.height);
      resolve(canvas.toDataURL("image/png"));
    };
    img.onerror = () => reject(new Error(`${name}: not a PNG, JPEG or WebP image`));
    img.src = `data:${type};base64,${base64}`;
  });
}

/** A file's bytes as base64. */
function readBase64(file: File): Promise<string> {
  return new Promise((resolve, reject) => {
    const r = new FileReader();
    r.onload = () => resolve(String(r.result).replace(/^data:[^,]*,/, ""));
    r.onerror = () => reject(new Error(`${file.name}: could not be read`));
    r.readAsDataURL(file);
  });
}

/** Attaches the image `make` makes of each item, in order; the first failure (or
 * `error`, the admission's) is the one line shown. */
async function attach<T extends { name: string }>(items: T[], make: (item: T) => Promise<ImageUpload>, error: string) {
  attachError.value = error;
  for (const item of items) {
    try {
      const a = await make(item);
      attachments.value = [...attachments.value, a];
    } catch (e) {
      attachError.value ||= errorText(e);
    }
  }
}

/** Attaches pasted or picked files (the images among them). */
export async function attachFiles(files: File[]) {
  const typed = files.map((f) => ({ name: f.name || "pasted image", size: f.size, file: f }));
  const summary = loaded.value;
  const { accepted, error } = admit(attachments.value.length, typed, summary?.images, summary?.path);
  await attach(accepted, async ({ name, file }) => {
    if (!IMAGE_TYPES.includes(file.type)) throw new Error(`${name}: not a PNG, JPEG or WebP image`);
    const data = await readBase64(file);
    return { name, data, thumb: await thumbnail(name, file.type, data) };
  }, error);
}

/** Attaches image files dropped on the window (paths; the shell reads and checks them). */
export async function attachPaths(paths: string[]) {
  const named = paths.map((p) => ({ name: baseName(p), size: null, path: p }));
  const summary = loaded.value;
  const { accepted, error } = admit(attachments.value.length, named, summary?.images, summary?.path);
  await attach(accepted, async ({ name, path }) => {
    const file = await api.chatImageRead(path);
    const type = sniffType(file.data);
    if (!type) throw new Error(`${name}: not a PNG, JPEG or WebP image`);
    return { name: file.name, data: file.data, thumb: await thumbnail(name, type, file.data) };
  }, error);
}

/** The image files among a paste's (none: a plain text paste). */
export function pastedImages(data: Pick<DataTransfer, "files" | "items"> | null): File[] {
  if (!data) return [];
  const files = Array.from(data.files ?? []).filter((f) => f.type.startsWith("image/"));
  if (files.length) return files;
  // Some webviews list a copied image only among the items.
  return Array.from(data.items ?? [])
    .filter((i) => i.kind === "file" && i.type.startsWith("image/"))
    .map((i) => i.getAsFile())
    .filter((f): f is File => f !== null);
}
