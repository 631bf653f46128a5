// The real app in a real window (WebKitGTK under Xvfb), driven through WebDriver:
// tauri-driver on :4444 runs the release binary through WebKitWebDriver.
// Run by scripts/e2e, which sets APP, MODELS, DATA, OUT and starts tauri-driver.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { execFileSync } from "node:child_process";
import { dirname } from "node:path";
import { Builder, By, until } from "selenium-webdriver";

const { APP, MODELS, OUT, SMOL_FOLDER, OPENED } = process.env;
const demo = `${MODELS}/SmolLM2-135M-Instruct.Q4_1.gguf`;
const gemma = `${MODELS}/gemma-3-270m-q4_k_m.gguf`;
let driver;

before(async () => {
  mkdirSync(OUT, { recursive: true });
  driver = await new Builder()
    .usingServer("http://127.0.0.1:4444/")
    .withCapabilities({ browserName: "wry", "tauri:options": { application: APP } })
    .build();
});
after(async () => driver && (await driver.quit()));

async function shot(name) {
  writeFileSync(`${OUT}/${name}.png`, await driver.takeScreenshot(), "base64");
}
const row = (path) => By.css(`tr[data-path="${path}"]`);
const wait = (cond, s = 60) => driver.wait(cond, s * 1000);
// Views render after the click that opens them: wait for elements, do not assume.
async function type(css, text) {
  const el = await wait(until.elementLocated(By.css(css)), 10);
  await el.clear();
  await el.sendKeys(text);
}

test("first launch: the demo model is in the library", async () => {
  const r = await wait(until.elementLocated(row(demo)));
  assert.match(await r.getText(), /Q4_1.*llama/s);
});

test("import: a model through the drop path, and a refused file", async () => {
  await type("#import-path", gemma);
  await driver.findElement(By.id("import")).click();
  const r = await wait(until.elementLocated(row(gemma)));
  assert.match(await r.getText(), /gemma3/);
  await type("#import-path", `${MODELS}/jargon.txt`);
  await driver.findElement(By.id("import")).click();
  const err = await wait(until.elementLocated(By.css("#library .error")));
  assert.match(await err.getText(), /jargon\.txt: not a model/);
  await shot("library");
});

test("chat: streamed reply with its measured speed", async () => {
  await driver.findElement(By.css(`tr[data-path="${demo}"] button.chat`)).click();
  const status = await wait(until.elementLocated(By.id("chat-status")), 10);
  await wait(until.elementTextContains(status, "loaded in"));
  assert.match(await status.getText(), /^llama on (cpu \(KV cache f16\)|cuda:0 \(KV cache f32\)|metal \(KV cache f32\)), loaded in/);
  await driver.findElement(By.css("#chat details summary")).click();
  await type("#temperature", "0");
  await type("#prompt", "What is the capital of France?");
  await driver.findElement(By.id("send")).click();
  const speed = await wait(until.elementLocated(By.css(".msg.assistant .tok-s")), 120);
  assert.match(await speed.getText(), /^\d+\.\d tok\/s$/);
  console.log(`chat reply: ${await speed.getText()}`);
  const reply = await driver.findElement(By.css(".msg.assistant .text")).getText();
  assert.match(reply, /Paris/);
  await shot("chat");
  // The conversation is stored: a new chat empties the view, reopening brings it back.
  await driver.findElement(By.id("new-chat")).click();
  await wait(async () => (await driver.findElements(By.css(".msg"))).length === 0, 10);
  const history = await wait(until.elementLocated(By.css("#history summary")), 10);
  await history.click();
  await (await wait(until.elementLocated(By.xpath("//details[@id='history']//button[contains(., 'capital of France')]")), 10)).click();
  const back = await wait(until.elementLocated(By.css(".msg.assistant .text")), 30);
  assert.match(await back.getText(), /Paris/);
});

test("links: a reply's link opens in the browser, never in the window", async () => {
  const home = await driver.getCurrentUrl();
  // A link as the chat view renders a reply's Markdown link (markdown.test.ts checks
  // the rendering); the click goes through the view's handler and `open_external`.
  await driver.executeScript(`
    const a = document.createElement("a");
    a.id = "reply-link"; a.href = "https://example.com/unicorn?q=1&r=2"; a.textContent = "docs";
    document.querySelector("#main-messages .msg.assistant .text").appendChild(a);`);
  await driver.findElement(By.id("reply-link")).click();
  // scripts/e2e points xdg-open's $BROWSER at a script that records what it opens.
  await wait(() => existsSync(OPENED) && readFileSync(OPENED, "utf8").includes("https://example.com/unicorn?q=1&r=2"), 10);
  assert.equal(await driver.getCurrentUrl(), home);
  // Script in the page (a reply cannot run any, but say one did) cannot leave the app:
  // the shell's navigation guard refuses every page outside it, and no window opens.
  await driver.executeScript('location.href = "https://example.com/elsewhere"');
  await driver.executeScript('window.open("https://example.com/popup")');
  await driver.sleep(1000);
  assert.equal(await driver.getCurrentUrl(), home);
  assert.equal((await driver.getAllWindowHandles()).length, 1);
  assert.doesNotMatch(readFileSync(OPENED, "utf8"), /elsewhere|popup/);
  await driver.findElement(By.css("#chat"));
});

test("long reply: the app decodes as fast as the CLI", async () => {
  // A long greedy reply: the view renders each finished Markdown block once, so the
  // webview's work per token stays constant and leaves the cores to the engine.
  const prompt = "Write a long story about a unicorn who lives in Paris, with many chapters.";
  await driver.findElement(By.id("new-chat")).click();
  await wait(async () => (await driver.findElements(By.css(".msg"))).length === 0, 10);
  await type("#max-tokens", "512");
  await type("#prompt", prompt);
  await driver.findElement(By.id("send")).click();
  const speed = await wait(until.elementLocated(By.css(".msg.assistant .tok-s")), 300);
  const app = Number.parseFloat(await speed.getText());
  const stats = await driver.findElement(By.css(".msg.assistant .stats")).getText();
  const appTokens = Number(/(\d+) tokens/.exec(stats)[1]);
  // The same request from the command line, right after, on the same machine.
  const cli = JSON.parse(execFileSync(`${dirname(APP)}/unicorn`, ["chat", demo, "--prompt", prompt,
    "--temperature", "0", "--max-tokens", "512", "--json"]).toString().trim().split("\n").pop());
  const ratio = app / cli.decode_tok_s;
  console.log(`long reply: app ${app.toFixed(1)} tok/s over ${appTokens} tokens, CLI ${cli.decode_tok_s.toFixed(1)} tok/s over ${cli.generated_tokens}: ${ratio.toFixed(2)}x`);
  assert.equal(appTokens, cli.generated_tokens, "greedy: the same reply");
  assert.ok(appTokens >= 256, `a long reply, not ${appTokens} tokens`);
  // Whole re-renders measured 0.52x here; the bound catches that kind of regression
  // with room for a noisy machine (the closing note quotes the measured ratio).
  assert.ok(ratio > 0.75, `app decode ${ratio.toFixed(2)}x the CLI's`);
});

test("quantize: the demo model folder to Q8_0, with the report", async () => {
  await driver.findElement(By.id("tab-library")).click();
  await type("#import-path", SMOL_FOLDER);
  await driver.findElement(By.id("import")).click();
  await wait(until.elementLocated(row(SMOL_FOLDER)));
  await (await wait(until.elementLocated(By.css(`tr[data-path="${SMOL_FOLDER}"] button.quantize`)))).click();
  const to = await wait(until.elementLocated(By.id("quantize-to")));
  // Preact sets option values as properties, so match the text.
  await to.findElement(By.xpath(".//option[text()='Q8_0']")).click();
  const predicted = await wait(until.elementLocated(By.id("quantize-prediction")), 30);
  assert.match(await predicted.getText(), /Will write .*iB of weights \(8\.\d\d bits per weight/);
  const memory = await driver.findElement(By.id("quantize-memory")).getText();
  assert.match(memory, /at 4096 tokens of context takes about [\d.]+ MiB \(estimate: [\d.]+ MiB of weights/);
  await driver.findElement(By.id("quantize-start")).click();
  const ratio = await wait(until.elementLocated(By.id("report-ratio")), 300);
  assert.match(await ratio.getText(), /^\d+\.\d\dx$/);
  assert.ok(Number.parseFloat(await ratio.getText()) > 1.5, `BF16 -> Q8_0 roughly halves, not ${await ratio.getText()}`);
  await wait(until.elementLocated(By.id("tensor-errors")));
  await driver.findElement(By.id("measure")).click();
  const quality = await wait(until.elementLocated(By.id("quality")), 300);
  assert.match(await quality.getText(), /ΔPPL [+-]?\d+\.\d\d %\), KL divergence \d\.\d{4} mean/);
  await shot("quantize");
});

test("side by side: the same prompt to the Q8_0 model and its BF16 source", async () => {
  await driver.findElement(By.id("tab-chat")).click();
  // Preact renders option labels as several text nodes: match the whole string value.
  const choose = async (select, suffix) => {
    const options = await Promise.all((await select.findElements(By.css("option"))).map((o) => o.getText()));
    const label = options.find((o) => o.endsWith(suffix));
    assert.ok(label, `${suffix} is offered: ${options}`);
    await select.findElement(By.xpath(`.//option[normalize-space(.)='${label}']`)).click();
  };
  await choose(await wait(until.elementLocated(By.id("chat-model")), 10), "(Q8_0)");
  await wait(until.elementTextContains(await driver.findElement(By.id("chat-status")), "loaded in"), 60);
  await driver.findElement(By.css("#chat details summary")).click();
  await type("#temperature", "0");
  await (await wait(until.elementLocated(By.id("side-by-side")), 10)).click();
  await choose(await wait(until.elementLocated(By.id("side-model")), 10), "(BF16)");
  await wait(until.elementTextContains(await driver.findElement(By.id("side-status")), "loaded in"), 60);
  await type("#prompt", "What is the capital of France?");
  await driver.findElement(By.id("send")).click();
  // The side model answers after the first: wait for its figures.
  const speed = await wait(until.elementLocated(By.css("#side-messages .msg.assistant .tok-s")), 180);
  assert.match(await speed.getText(), /^\d+\.\d tok\/s$/);
  const main = await driver.findElement(By.css("#main-messages .msg.assistant .text")).getText();
  const side = await driver.findElement(By.css("#side-messages .msg.assistant .text")).getText();
  assert.match(main, /Paris/);
  assert.match(side, /Paris/);
  const mainSpeed = await driver.findElement(By.css("#main-messages .msg.assistant .tok-s")).getText();
  console.log(`side by side: Q8_0 ${mainSpeed}, BF16 ${await speed.getText()}`);
  await shot("side-by-side");
  await driver.findElement(By.id("side-by-side")).click();
  await wait(async () => (await driver.findElements(By.id("side-messages"))).length === 0, 10);
});

test("dashboard: live machine figures and the reply's speed", async () => {
  await driver.findElement(By.id("tab-dashboard")).click();
  await wait(until.elementLocated(By.id("cpu-chart")));
  // The figures appear once the first measurement has come back.
  const ram = await wait(until.elementLocated(By.id("ram")), 30);
  assert.match(await ram.getText(), /RAM .*iB \/ .*iB/);
  await wait(until.elementLocated(By.id("roofline")), 30);
  // No NVIDIA driver here: the GPU card says so (a GPU machine shows its VRAM instead).
  const gpu = await driver.findElements(By.id("gpu"));
  if (gpu.length) assert.match(await gpu[0].getText(), /GPU none/);
  else await wait(until.elementLocated(By.css(".card.vram")), 5);
  // The model loaded last (side by side) is the Q8_0 quantization.
  const compression = await driver.findElement(By.id("compression")).getText();
  assert.match(compression, /Q8_0, 8\.\d\d bits per weight: 1\.\d\dx smaller than 16-bit/);
  await shot("dashboard");
});

test("server: the API server on the demo model answers a client, listed live", async () => {
  await driver.findElement(By.id("tab-chat")).click();
  await (await wait(until.elementLocated(By.css(`#chat-model option[value="${demo}"]`)), 10)).click();
  await driver.findElement(By.id("tab-server")).click();
  assert.equal(await (await wait(until.elementLocated(By.id("server-model")), 10)).getText(), demo);
  await type("#server-port", "0");
  await driver.findElement(By.id("server-start")).click();
  const url = await (await wait(until.elementLocated(By.id("server-url")), 120)).getText();
  assert.match(url, /^http:\/\/127\.0\.0\.1:\d+\/v1$/);
  const r = await fetch(`${url}/chat/completions`, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ model: "SmolLM2-135M-Instruct.Q4_1", temperature: 0, max_tokens: 16,
      messages: [{ role: "user", content: "What is the capital of France?" }] }),
  });
  assert.equal(r.status, 200);
  assert.match((await r.json()).choices[0].message.content, /Paris/);
  const table = await wait(until.elementLocated(By.id("server-requests")), 10);
  await wait(until.elementTextContains(table, "done"), 10);
  await shot("server");
  await driver.findElement(By.id("tab-dashboard")).click();
  await wait(until.elementLocated(By.id("server-dash")), 10);
  await driver.findElement(By.id("tab-server")).click();
  await (await wait(until.elementLocated(By.id("server-stop")), 10)).click();
  await wait(until.elementLocated(By.id("server-start")), 30);
});
