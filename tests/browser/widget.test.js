// The chat widget on the demo page, in headless Chromium (Debian's), against the real keyless
// runner: streamed answers with working source links, "ask about this selection", the
// conversation kept across a reload, feedback, a new chat, keyboard use, an accessibility
// check (axe-core), a clear message when the server is gone and when it rate-limits.
//
// Run by scripts/browser-test, which passes HOST_BINARY, CHROMIUM and ARTIFACTS. Each transport
// (WebSocket, then server-sent events forced with data-transport="sse") gets a fresh runner.
"use strict";

const assert = require("node:assert/strict");
const crypto = require("node:crypto");
const fs = require("node:fs");
const http = require("node:http");
const net = require("node:net");
const os = require("node:os");
const path = require("node:path");
const { spawn } = require("node:child_process");
const { chromium } = require("playwright-core");

const ROOT = path.resolve(__dirname, "../..");
const HOST = path.resolve(ROOT, process.env.HOST_BINARY || "target/release/host");
const CHROMIUM = process.env.CHROMIUM || "/usr/bin/chromium";
const ARTIFACTS = path.resolve(ROOT, process.env.ARTIFACTS || "target/browser-artifacts");
const REQUIRE_ALL = process.env.TEST_REQUIRE_BROWSER === "1";
const AXE = fs.readFileSync(require.resolve("axe-core/axe.min.js"), "utf8");
const TIMEOUT = 20000;

const QUESTION = "What does ZMP stand for?";
const SELECTION_QUESTION = "What does this passage say?";

function log(message) {
  process.stdout.write(`browser-test: ${message}\n`);
}

function freePort() {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.unref();
    server.on("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

/** A keyless runner on a free port with a fresh DATA_DIR, its index built from book/docs with
 * the demo's page addresses, so that the sources the answers cite are the demo's pages. */
async function startServer(extraEnv = {}) {
  const port = await freePort();
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), "widget-test-"));
  const base = `http://127.0.0.1:${port}`;
  const env = { ...process.env };
  for (const name of ["OPENAI_API_KEY", "COHERE_API_KEY", "QDRANT_URL", "DATABASE_URL"]) {
    delete env[name];
    delete env[`SPIN_VARIABLE_${name}`];
  }
  Object.assign(env, {
    DATA_DIR: dataDir,
    DOCS_DIR: path.join(ROOT, "book/docs"),
    SITE_URL: base,
    DOCS_BASE_URL: "/demo/",
    COMPILE_CACHE_DIR: path.join(ROOT, "target/test-compile-cache"),
    SPIN_MANIFEST: path.join(ROOT, "spin.toml"),
    BIND_ADDR: "127.0.0.1",
    PORT: String(port),
    RUST_LOG: "warn",
    RATE_LIMIT_PER_MINUTE: "0",
    CHAT_RATE_LIMIT_PER_MINUTE: "0",
    SESSION_WRITE_RATE_LIMIT_PER_MINUTE: "0",
    SHUTDOWN_GRACE_SECS: "2",
    ...extraEnv,
  });
  const logFile = path.join(dataDir, "serve.log");
  const out = fs.openSync(logFile, "w");
  const child = spawn(HOST, ["serve"], { cwd: ROOT, env, stdio: ["ignore", out, out] });
  let exited = false;
  child.on("exit", () => { exited = true; });
  const deadline = Date.now() + 120000;
  for (;;) {
    if (exited) throw new Error(`the runner exited:\n${fs.readFileSync(logFile, "utf8")}`);
    const status = await httpStatus(`${base}/health/ready`).catch(() => 0);
    if (status === 200) break;
    if (Date.now() > deadline) {
      child.kill("SIGKILL");
      throw new Error(`the runner never got ready:\n${fs.readFileSync(logFile, "utf8")}`);
    }
    await sleep(250);
  }
  return {
    base,
    async stop() {
      if (!exited) {
        child.kill("SIGTERM");
        await new Promise((resolve) => (exited ? resolve() : child.on("exit", resolve)));
      }
      fs.rmSync(dataDir, { recursive: true, force: true });
    },
  };
}

function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Waits for a condition on what the page's listeners recorded (they run asynchronously). */
async function until(condition, what) {
  const deadline = Date.now() + TIMEOUT;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(20);
  }
}

function httpStatus(url) {
  return new Promise((resolve, reject) => {
    http.get(url, (response) => {
      response.resume();
      resolve(response.statusCode);
    }).on("error", reject);
  });
}

/** Whether the runner upgrades GET /chat/ws (101), or why not. */
function websocketSupport(base) {
  return new Promise((resolve) => {
    const request = http.request(`${base}/chat/ws`, {
      headers: {
        Connection: "Upgrade",
        Upgrade: "websocket",
        "Sec-WebSocket-Version": "13",
        "Sec-WebSocket-Key": Buffer.from("0123456789abcdef").toString("base64"),
      },
    });
    request.on("upgrade", (response, socket) => {
      socket.destroy();
      resolve({ ok: true });
    });
    request.on("response", (response) => {
      response.resume();
      resolve({ ok: false, reason: `GET /chat/ws answered ${response.statusCode}, not 101` });
    });
    request.on("error", (error) => resolve({ ok: false, reason: String(error) }));
    request.end();
  });
}

/** The demo page, with the widget's script tag given data-transport when one is forced. */
async function openDemo(context, base, transport) {
  const page = await context.newPage();
  const problems = [];
  page.on("pageerror", (error) => problems.push(`page error: ${error.message}`));
  page.on("console", (message) => {
    // A refused connection is the expected console noise once the server is stopped.
    if (message.type() === "error" && !/ERR_CONNECTION_REFUSED|Failed to load resource|WebSocket connection/.test(message.text())) {
      problems.push(`console: ${message.text()}`);
    }
  });
  if (transport !== "auto") {
    await page.route(/\/demo(\/|$|\?)/, async (route) => {
      const response = await route.fetch();
      const html = (await response.text()).replace("data-api-url=", `data-transport="${transport}" data-api-url=`);
      await route.fulfill({ response, body: html });
    });
  }
  return { page, problems };
}

/** Records what the widget sends and receives: POST /chat bodies, SSE delta events, WebSocket frames. */
function watchTraffic(page) {
  const traffic = { chatBodies: [], sseDeltas: [], wsAsks: [], wsDeltas: 0, feedback: [], deletes: [] };
  page.on("request", (request) => {
    const url = new URL(request.url());
    if (request.method() === "POST" && url.pathname === "/chat") {
      traffic.chatBodies.push(JSON.parse(request.postData() || "{}"));
    }
  });
  page.on("response", async (response) => {
    const request = response.request();
    const url = new URL(response.url());
    if (request.method() === "POST" && url.pathname === "/chat" && response.status() === 200) {
      const text = await response.text().catch(() => "");
      traffic.sseDeltas.push((text.match(/^event: delta$/gm) || []).length);
    }
    if (/\/feedback$/.test(url.pathname)) traffic.feedback.push(response.status());
    if (request.method() === "DELETE" && url.pathname.startsWith("/session/")) traffic.deletes.push(response.status());
  });
  page.on("websocket", (ws) => {
    ws.on("framesent", (frame) => {
      const data = JSON.parse(frame.payload);
      if (data.type === "ask") traffic.wsAsks.push(data);
    });
    ws.on("framereceived", (frame) => {
      if (JSON.parse(frame.payload).type === "delta") traffic.wsDeltas += 1;
    });
  });
  return traffic;
}

async function lastAnswer(page) {
  return page.locator(".chat-widget__msg--bot").last();
}

/** Counts how many different lengths the streamed answer's text goes through. */
async function watchGrowth(page) {
  await page.evaluate(() => {
    window.__answerLengths = [];
    const logNode = document.querySelector(".chat-widget__log");
    new MutationObserver(() => {
      const answers = logNode.querySelectorAll(".chat-widget__answer");
      const current = answers[answers.length - 1];
      // Before the first delta the answer holds only the "Looking in the book…" line.
      if (!current || current.querySelector(".chat-widget__typing")) return;
      const length = current.textContent.length;
      const lengths = window.__answerLengths;
      if (lengths[lengths.length - 1] !== length) lengths.push(length);
    }).observe(logNode, { subtree: true, childList: true, characterData: true });
  });
}

async function askAndWait(page, question) {
  const answers = await page.locator(".chat-widget__msg--bot").count();
  await page.getByLabel("Your question").fill(question);
  await page.getByLabel("Your question").press("Enter");
  const answer = page.locator(".chat-widget__msg--bot").nth(answers);
  await answer.getByRole("button", { name: "Helpful", exact: true }).waitFor({ timeout: TIMEOUT });
  return answer;
}

async function checkSourceLinks(page, answer, base) {
  const links = answer.locator(".chat-widget__sources a");
  const count = await links.count();
  assert.ok(count > 0, "the answer lists its sources");
  for (let i = 0; i < count; i += 1) {
    const href = await links.nth(i).getAttribute("href");
    assert.ok(href.startsWith(`${base}/demo/docs/`), `source link ${href} is a page of the demo book`);
    const url = new URL(href);
    const response = await page.request.get(href);
    assert.equal(response.status(), 200, `${href} opens`);
    if (url.hash) {
      const html = await response.text();
      assert.ok(html.includes(`id="${decodeURIComponent(url.hash.slice(1))}"`), `${href}: the page has the anchor`);
    }
  }
  return count;
}

async function axeCheck(page, label) {
  await page.evaluate(AXE);
  const violations = await page.evaluate(async () => {
    const result = await window.axe.run(document, { resultTypes: ["violations"] });
    return result.violations.map((v) => ({
      id: v.id,
      impact: v.impact,
      help: v.help,
      nodes: v.nodes.map((n) => n.target.join(" ")).slice(0, 5),
    }));
  });
  const serious = violations.filter((v) => v.impact === "serious" || v.impact === "critical");
  assert.deepEqual(serious, [], `${label}: axe-core found serious or critical violations`);
  log(`${label}: axe-core: no serious or critical violations (${violations.length} minor)`);
}

async function run(browser, transport) {
  const label = transport === "auto" ? "websocket" : transport;
  const server = await startServer();
  try {
    const context = await browser.newContext({ viewport: { width: 1280, height: 860 }, colorScheme: "light" });
    const { page, problems } = await openDemo(context, server.base, transport);
    const traffic = watchTraffic(page);
    const response = await page.goto(`${server.base}/demo`);
    assert.equal(response.status(), 200);
    assert.match(response.headers()["content-security-policy"], /connect-src 'self'/);
    await page.getByRole("heading", { level: 1, name: "Locomotion and Balance" }).waitFor();

    // Open the widget: the dialog appears and takes focus.
    const launcher = page.getByRole("button", { name: /^Open chat/ });
    await launcher.click();
    const dialog = page.getByRole("dialog", { name: "Ask the book" });
    await dialog.waitFor();
    assert.equal(await launcher.getAttribute("aria-expanded"), "true");
    assert.ok(await page.getByLabel("Your question").evaluate((node) => node === document.activeElement));

    // A question, answered as a stream.
    await watchGrowth(page);
    const first = await askAndWait(page, QUESTION);
    const lengths = await page.evaluate(() => window.__answerLengths);
    if (transport === "sse") await until(() => traffic.sseDeltas.length >= 1, "the event stream's body");
    const deltas = transport === "sse" ? traffic.sseDeltas[0] : traffic.wsDeltas;
    assert.ok(deltas > 1, `more than one delta arrived (${deltas})`);
    // The widget renders at most once per animation frame, so deltas that arrive together
    // (the keyless answer is written at once) show as one step; what is checked here is that
    // the text was rendered from the deltas and ended complete.
    assert.ok(lengths.length >= 1, "the streamed answer was rendered");
    const firstText = await first.locator(".chat-widget__answer").innerText();
    assert.match(firstText, /Zero Moment Point/i);
    const sources = await checkSourceLinks(page, first, server.base);
    const cites = await first.locator(".chat-widget__cite").count();
    assert.ok(cites > 0, "the answer's [n] markers link to their sources");
    if (transport === "sse") {
      assert.equal(traffic.wsAsks.length, 0, "forced SSE opens no WebSocket");
      assert.equal(traffic.chatBodies.length, 1);
    } else {
      assert.equal(traffic.wsAsks.length, 1, "the question went over the WebSocket");
      assert.equal(traffic.chatBodies.length, 0, "and not over POST /chat");
    }
    log(`${label}: streamed answer, ${deltas} deltas, text grown in ${lengths.length} step(s), ${sources} source links that open their page and anchor`);

    // Ask about a selection on the page.
    await page.getByRole("button", { name: "Close chat" }).click();
    const selected = await page.evaluate(() => {
      const heading = document.getElementById("the-capture-point");
      const paragraph = heading.nextElementSibling;
      const range = document.createRange();
      range.selectNodeContents(paragraph);
      const selection = window.getSelection();
      selection.removeAllRanges();
      selection.addRange(range);
      return selection.toString().replace(/\s+/g, " ").trim();
    });
    const askSelection = page.getByRole("button", { name: "Ask about this selection" });
    await askSelection.waitFor({ timeout: TIMEOUT });
    await askSelection.click();
    await dialog.waitFor();
    assert.match(await page.locator(".chat-widget__selection-text").innerText(), /capture point/i);
    const second = await askAndWait(page, SELECTION_QUESTION);
    const sent = transport === "sse" ? traffic.chatBodies[1] : traffic.wsAsks[1];
    assert.equal(sent.selected_text, selected, "the request carried the selected text");
    assert.equal(sent.page_url, `${server.base}/demo`, "and the page it came from");
    const opening = transport === "sse" ? traffic.chatBodies[0] : traffic.wsAsks[0];
    assert.equal(opening.session_id, undefined, "the first question starts a session");
    const stored = await page.evaluate(() => Object.keys(localStorage)
      .filter((k) => k.startsWith("chat-widget:session:")).map((k) => localStorage.getItem(k))[0]);
    assert.match(stored || "", /^[A-Za-z0-9_-]{22}$/, "the server-issued session id is kept in localStorage");
    assert.equal(sent.session_id, stored, "the follow-up continues that session");
    const secondText = await second.locator(".chat-widget__answer").innerText();
    assert.match(secondText, /From your selection:/, "the answer quotes the selection");
    const firstSentence = selected.split(/(?<=\.)\s/)[0];
    assert.ok(secondText.replace(/\s+/g, " ").includes(firstSentence.slice(0, 40)), "with the selection's own words");
    log(`${label}: "Ask about this selection" sent selected_text (${selected.length} characters) and the answer quotes it`);

    // Feedback on the first answer.
    const feedback = page.waitForResponse((r) => r.url().endsWith("/feedback"));
    await first.getByRole("button", { name: "Helpful", exact: true }).click();
    assert.equal((await feedback).status(), 204);
    await page.waitForFunction(() => document.querySelector(".chat-widget__thumb[aria-pressed='true']"));
    log(`${label}: feedback thumbs: POST .../feedback answered 204`);

    // Screenshots with an answer in the open panel, light and dark.
    fs.mkdirSync(ARTIFACTS, { recursive: true });
    await page.evaluate(() => {
      window.scrollTo(0, 0);
      const conversation = document.querySelector(".chat-widget__log");
      conversation.scrollTop = conversation.scrollHeight;
    });
    await page.screenshot({ path: path.join(ARTIFACTS, `widget-light-${label}.png`) });
    await axeCheck(page, `${label}: light theme, panel open`);
    await page.getByRole("button", { name: "Switch between dark and light mode" }).click();
    assert.equal(await page.evaluate(() => document.documentElement.dataset.theme), "dark");
    const panelBackground = await page.locator(".chat-widget__panel").evaluate((node) => getComputedStyle(node).backgroundColor);
    assert.equal(panelBackground, "rgb(36, 37, 38)", "the panel follows the dark theme");
    await page.screenshot({ path: path.join(ARTIFACTS, `widget-dark-${label}.png`) });
    await axeCheck(page, `${label}: dark theme, panel open`);

    // Keyboard: Tab stays inside the open panel, Escape closes it and focus goes back.
    await page.getByLabel("Your question").focus();
    for (let i = 0; i < 25; i += 1) {
      await page.keyboard.press(i % 7 === 6 ? "Shift+Tab" : "Tab");
      const inside = await page.evaluate(() => document.querySelector(".chat-widget__panel").contains(document.activeElement));
      assert.ok(inside, `focus stays in the panel (Tab ${i + 1})`);
    }
    await page.keyboard.press("Escape");
    await dialog.waitFor({ state: "hidden" });
    assert.ok(await launcher.evaluate((node) => node === document.activeElement), "Escape returns focus to the button");
    assert.equal(await launcher.getAttribute("aria-expanded"), "false");
    log(`${label}: keyboard: focus trapped in the panel, Escape closes it and focus returns to the button`);

    // Reload: the conversation comes back from GET /session/{id}.
    await page.reload();
    await launcher.click();
    await page.locator(".chat-widget__msg--bot").nth(1).waitFor({ timeout: TIMEOUT });
    assert.equal(await page.locator(".chat-widget__msg--user").count(), 2);
    assert.equal(await page.locator(".chat-widget__msg--bot").count(), 2);
    assert.match(await page.locator(".chat-widget__msg--user").first().innerText(), /ZMP/);
    assert.equal(
      await page.locator(".chat-widget__msg--bot").first().getByRole("button", { name: "Helpful", exact: true }).getAttribute("aria-pressed"),
      "true",
      "the rating is restored too"
    );
    await checkSourceLinks(page, page.locator(".chat-widget__msg--bot").first(), server.base);
    log(`${label}: reload: both questions and answers restored, with sources and the rating`);

    // New chat: forgotten here and deleted on the server.
    const deleted = page.waitForResponse((r) => r.request().method() === "DELETE");
    await page.getByRole("button", { name: "Start a new chat" }).click();
    assert.equal((await deleted).status(), 204);
    assert.equal(await page.locator(".chat-widget__msg").count(), 0);
    assert.equal(await page.evaluate(() => Object.keys(localStorage).filter((k) => k.startsWith("chat-widget:session:")).length), 0);
    await page.reload();
    await launcher.click();
    await page.waitForTimeout(300);
    assert.equal(await page.locator(".chat-widget__msg").count(), 0, "a new chat stays new after a reload");
    log(`${label}: New chat: DELETE /session/{id} answered 204, nothing restored after a reload`);

    // A source link, followed: the book's page at the cited heading.
    await askAndWait(page, QUESTION);
    const link = (await lastAnswer(page)).locator(".chat-widget__sources a").first();
    const href = await link.getAttribute("href");
    await link.click();
    await page.waitForURL(href);
    const target = await page.evaluate(() => document.querySelector(":target") && document.querySelector(":target").id);
    assert.equal(target, decodeURIComponent(new URL(href).hash.slice(1)), "the cited heading is the target");
    log(`${label}: following a source link opens ${new URL(href).pathname}${new URL(href).hash}`);

    // The server goes away: the reader is told so in plain words, with a way to try again.
    await page.goto(`${server.base}/demo`);
    await launcher.click();
    await server.stop();
    await page.getByLabel("Your question").fill(QUESTION);
    await page.getByLabel("Your question").press("Enter");
    const error = page.locator(".chat-widget__status--error");
    await error.waitFor({ timeout: TIMEOUT });
    assert.match(await error.innerText(), /Can't reach the chat service at http:\/\/127\.0\.0\.1:\d+\. It may be down/);
    await page.getByRole("button", { name: "Try again" }).waitFor();
    await page.screenshot({ path: path.join(ARTIFACTS, `widget-server-stopped-${label}.png`) });
    log(`${label}: server stopped: "${await error.locator("span").first().innerText()}"`);

    assert.deepEqual(problems, [], "no script errors or CSP violations on the page");
    await context.close();
  } finally {
    await server.stop();
  }
}

/** A chat budget of one question: the second is refused with 429 and the reader told when to retry. */
async function rateLimited(browser) {
  const server = await startServer({
    // RATE_LIMIT_PER_MINUTE=0 would turn every per-client budget off, the chat one included.
    RATE_LIMIT_PER_MINUTE: "600",
    RATE_LIMIT_BURST: "100",
    CHAT_RATE_LIMIT_PER_MINUTE: "1",
    CHAT_RATE_LIMIT_BURST: "1",
  });
  try {
    const context = await browser.newContext({ viewport: { width: 1280, height: 860 } });
    const { page } = await openDemo(context, server.base, "sse");
    await page.goto(`${server.base}/demo`);
    await page.getByRole("button", { name: /^Open chat/ }).click();
    await askAndWait(page, QUESTION);
    const refused = page.waitForResponse((r) => r.url().endsWith("/chat"));
    await page.getByLabel("Your question").fill("How does a capture point work?");
    await page.getByLabel("Your question").press("Enter");
    assert.equal((await refused).status(), 429);
    const error = page.locator(".chat-widget__status--error");
    await error.waitFor({ timeout: TIMEOUT });
    const text = await error.innerText();
    assert.match(text, /Too many questions in a short time\. You can ask again in \d+ seconds\./);
    const retry = page.getByRole("button", { name: /Try again in \d+ s/ });
    assert.ok(await retry.isDisabled(), "retry waits for Retry-After");
    log(`rate limit: "${await error.locator("span").first().innerText()}", "${await retry.innerText()}" disabled until then`);
    await context.close();
  } finally {
    await server.stop();
  }
}

/** The files' caching and safety headers, and the manifest's SRI values against the bytes. */
async function assetHeaders(base) {
  const manifest = await (await fetch(`${base}/assets`)).json();
  for (const [stable, file] of Object.entries(manifest.files)) {
    const hashed = await fetch(`${base}${file.url}`);
    assert.equal(hashed.status, 200, file.url);
    assert.match(file.url, new RegExp(`^/assets/${stable.replace(".", "\\.[0-9a-f]{12}\\.")}$`));
    assert.equal(hashed.headers.get("cache-control"), "public, max-age=31536000, immutable");
    assert.equal(hashed.headers.get("x-content-type-options"), "nosniff");
    assert.equal(hashed.headers.get("content-type"), file.content_type);
    const body = Buffer.from(await hashed.arrayBuffer());
    const digest = crypto.createHash("sha384").update(body).digest("base64");
    assert.equal(file.integrity, `sha384-${digest}`, `${stable}: the SRI value is the file's`);
    const etag = hashed.headers.get("etag");
    const again = await fetch(`${base}${file.url}`, { headers: { "if-none-match": etag } });
    assert.equal(again.status, 304);
    const unhashed = await fetch(`${base}/assets/${stable}`);
    assert.equal(unhashed.headers.get("cache-control"), "public, max-age=300");
    assert.equal(unhashed.headers.get("etag"), etag);
    assert.ok(Buffer.from(await unhashed.arrayBuffer()).equals(body), `${stable} is the hashed file`);
  }
  const missing = await fetch(`${base}/assets/chat-widget.000000000000.js`);
  assert.equal(missing.status, 404);
  assert.equal((await missing.json()).error.code, "not_found");
  const demo = await fetch(`${base}/demo`);
  assert.equal(demo.headers.get("content-type"), "text/html; charset=utf-8");
  assert.equal(demo.headers.get("x-content-type-options"), "nosniff");
  assert.match(demo.headers.get("content-security-policy"), /default-src 'none'; script-src 'self'; style-src 'self';.* connect-src 'self'/);
  const page = await demo.text();
  assert.ok(page.includes(manifest.files["chat-widget.js"].url), "the demo loads the hashed script");
  const missingPage = await fetch(`${base}/demo/docs/no-such-page`);
  assert.equal(missingPage.status, 404);
  assert.equal((await missingPage.json()).error.code, "not_found");
  log("assets: hashed names immutable with matching SRI, unhashed 5 minutes, ETag 304, nosniff, 404 JSON; demo CSP");
}

/** `spin up` has no WebSocket trigger: there GET /chat/ws is a 404 like any unrouted path. A
 * proxy in front of the runner answers upgrades that way; the widget, on its default transport,
 * must fall back to the event stream and stop trying the socket. */
async function withoutWebSocket(browser) {
  const server = await startServer();
  const api = new URL(server.base);
  const proxy = http.createServer((request, response) => {
    const upstream = http.request(
      { host: api.hostname, port: api.port, path: request.url, method: request.method, headers: request.headers },
      (answer) => {
        response.writeHead(answer.statusCode, answer.headers);
        answer.pipe(response);
      }
    );
    upstream.on("error", () => response.destroy());
    request.pipe(upstream);
  });
  proxy.on("upgrade", (request, socket) => {
    const body = JSON.stringify({ error: { code: "not_found", message: "no route for /chat/ws" } });
    socket.end(`HTTP/1.1 404 Not Found\r\ncontent-type: application/json\r\ncontent-length: ${Buffer.byteLength(body)}\r\nconnection: close\r\n\r\n${body}`);
  });
  const port = await freePort();
  await new Promise((resolve) => proxy.listen(port, "127.0.0.1", resolve));
  try {
    const context = await browser.newContext({ viewport: { width: 1280, height: 860 } });
    const { page } = await openDemo(context, server.base, "auto");
    const traffic = watchTraffic(page);
    let sockets = 0;
    page.on("websocket", () => { sockets += 1; });
    await page.goto(`http://127.0.0.1:${port}/demo`);
    await page.getByRole("button", { name: /^Open chat/ }).click();
    await askAndWait(page, QUESTION);
    await until(() => traffic.sseDeltas.length >= 1, "the event stream's body");
    assert.equal(sockets, 1, "the socket was tried once");
    assert.equal(traffic.chatBodies.length, 1, "then the question went as POST /chat");
    assert.ok(traffic.sseDeltas[0] > 1, `streamed (${traffic.sseDeltas[0]} deltas)`);
    await askAndWait(page, "How does a capture point work?");
    assert.equal(sockets, 1, "and the socket is not tried again");
    assert.equal(traffic.chatBodies.length, 2);
    assert.equal(traffic.chatBodies[1].session_id, await page.evaluate(() =>
      Object.keys(localStorage).filter((k) => k.startsWith("chat-widget:session:")).map((k) => localStorage.getItem(k))[0]));
    log(`no WebSocket (404 on /chat/ws, as under spin up): fell back to the event stream (${traffic.sseDeltas[0]} deltas), socket not retried`);

    // A page that allows only the WebSocket says why it cannot answer instead of "down".
    const forced = await openDemo(context, server.base, "ws");
    await forced.page.goto(`http://127.0.0.1:${port}/demo`);
    await forced.page.getByRole("button", { name: /^Open chat/ }).click();
    await forced.page.getByLabel("Your question").fill(QUESTION);
    await forced.page.getByLabel("Your question").press("Enter");
    const error = forced.page.locator(".chat-widget__status--error span").first();
    await error.waitFor({ timeout: TIMEOUT });
    assert.match(await error.innerText(), /does not offer a WebSocket here.*Remove data-transport/);
    log(`no WebSocket, data-transport="ws": "${await error.innerText()}"`);
    await context.close();
  } finally {
    proxy.close();
    await server.stop();
  }
}

/** Markup in a question, in a selection and in an answer is shown as text: a URDF (XML)
 * listing selected on the book's page comes back quoted in the answer as `<robot ...>` text. */
async function safeRendering(browser) {
  const server = await startServer();
  try {
    const context = await browser.newContext({ viewport: { width: 1280, height: 860 } });
    const { page, problems } = await openDemo(context, server.base, "auto");
    await page.goto(`${server.base}/demo/docs/ros2/urdf`);
    await page.evaluate(() => {
      const code = [...document.querySelectorAll("pre code")].find((node) => node.textContent.includes("<robot"));
      const range = document.createRange();
      range.selectNodeContents(code);
      window.getSelection().removeAllRanges();
      window.getSelection().addRange(range);
    });
    await page.getByRole("button", { name: "Ask about this selection" }).click();
    const answer = await askAndWait(page, "What is <img src=x onerror=window.__injected=1> in this listing?");
    const answerText = await answer.locator(".chat-widget__answer").innerText();
    assert.match(answerText, /From your selection: <robot name="mini_leg">/, "the quoted XML is text");
    const question = await page.locator(".chat-widget__msg--user").last().innerText();
    assert.match(question, /<robot name="mini_leg">/);
    assert.match(question, /<img src=x onerror=window.__injected=1>/);
    const elements = await page.locator(".chat-widget__log").evaluate((node) =>
      [...node.querySelectorAll("*")].map((el) => el.localName).filter((name) => !/^(div|p|span|strong|code|ul|ol|li|a|blockquote|button|svg|path)$/.test(name)));
    assert.deepEqual(elements, [], "no element came from the text");
    assert.equal(await page.evaluate(() => window.__injected), undefined);
    assert.deepEqual(problems, []);
    log("safe rendering: XML from a selection and HTML in a question are shown as text, no element made from them");
    await context.close();
  } finally {
    await server.stop();
  }
}

/** The widget as a Docusaurus site embeds it: a page on another origin loading the script and
 * asking the service. Allowed by ALLOWED_ORIGINS it answers; from an origin not on the list the
 * reader is told the site is not allowed, not that the service is down. */
async function crossOrigin(browser) {
  const sitePort = await freePort();
  const site = `http://127.0.0.1:${sitePort}`;
  const server = await startServer({ ALLOWED_ORIGINS: site });
  const book = http.createServer((request, response) => {
    response.writeHead(200, { "content-type": "text/html; charset=utf-8" });
    response.end(`<!doctype html><html lang="en" data-theme="dark"><head><meta charset="utf-8">
<title>Balance | A Docusaurus book</title>
<script src="${server.base}/assets/chat-widget.js" data-api-url="${server.base}" defer></script>
</head><body><main><h1>Balance</h1><p>The zero moment point keeps a walking robot upright.</p></main></body></html>`);
  });
  await new Promise((resolve) => book.listen(sitePort, "127.0.0.1", resolve));
  try {
    const context = await browser.newContext({ viewport: { width: 1280, height: 860 } });
    const page = await context.newPage();
    await page.goto(`${site}/docs/balance`);
    await page.getByRole("button", { name: /^Open chat/ }).click();
    const answer = await askAndWait(page, QUESTION);
    const links = await answer.locator(".chat-widget__sources a").count();
    assert.ok(links > 0, "a cross-origin answer lists its sources");
    const background = await page.locator(".chat-widget__panel").evaluate((node) => getComputedStyle(node).backgroundColor);
    assert.equal(background, "rgb(36, 37, 38)", "the stylesheet came from next to the script, and the site's dark theme is followed");
    log(`cross-origin: a page on ${site} (in ALLOWED_ORIGINS) gets answers from ${server.base}, ${links} source links`);

    // The same page from http://localhost:<port>: another origin, not on the list.
    const other = `http://localhost:${sitePort}`;
    const refused = await context.newPage();
    await refused.goto(`${other}/docs/balance`);
    await refused.getByRole("button", { name: /^Open chat/ }).click();
    await refused.getByLabel("Your question").fill(QUESTION);
    await refused.getByLabel("Your question").press("Enter");
    const error = refused.locator(".chat-widget__status--error");
    await error.waitFor({ timeout: TIMEOUT });
    const text = await error.locator("span").first().innerText();
    assert.equal(
      text,
      `This site is not allowed to use the chat service at ${server.base}. The service's ALLOWED_ORIGINS setting must include ${other}.`
    );
    log(`cross-origin: from ${other}, not in ALLOWED_ORIGINS: "${text}"`);
    await context.close();
  } finally {
    book.close();
    await server.stop();
  }
}

async function main() {
  assert.ok(fs.existsSync(HOST), `${HOST} is missing (cargo build --release -p host)`);
  const browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"],
  });
  let skipped = 0;
  try {
    const probe = await startServer();
    const ws = await websocketSupport(probe.base);
    try {
      await assetHeaders(probe.base);
    } finally {
      await probe.stop();
    }
    if (ws.ok) {
      await run(browser, "auto");
    } else {
      skipped += 1;
      log(`WebSocket part skipped: ${ws.reason}`);
      if (REQUIRE_ALL) throw new Error(`TEST_REQUIRE_BROWSER=1: the WebSocket part cannot be skipped (${ws.reason})`);
    }
    await run(browser, "sse");
    await rateLimited(browser);
    await crossOrigin(browser);
    await safeRendering(browser);
    await withoutWebSocket(browser);
  } finally {
    await browser.close();
  }
  log(`passed${skipped ? ` (${skipped} part skipped, see above)` : ""}; screenshots in ${path.relative(ROOT, ARTIFACTS)}/`);
}

main().catch((error) => {
  process.stderr.write(`browser-test: FAILED: ${error.stack || error}\n`);
  process.exit(1);
});
