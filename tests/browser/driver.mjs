// Drives one headless Debian Chromium for the Rust browser tests (tests/src/browser.rs): a JSON request per line on stdin, a JSON answer per line on stdout, requests served concurrently; it closes the browser and exits when stdin ends.
import readline from "node:readline";
import { chromium } from "playwright-core";

const executablePath = process.env.KIOSK_CHROMIUM || "/usr/bin/chromium";
const browser = await chromium.launch({
  executablePath,
  headless: true,
  // --no-sandbox: CI runs as root in a container, where Chromium's sandbox cannot start.
  args: ["--no-sandbox", "--disable-dev-shm-usage", "--font-render-hinting=none"],
});

const pages = new Map();
let nextPage = 1;

function page(id) {
  const entry = pages.get(id);
  if (!entry) throw new Error(`no page ${id}`);
  return entry;
}

const ops = {
  async open({ width, height, url }) {
    const context = await browser.newContext({ viewport: { width, height }, deviceScaleFactor: 1 });
    // Layout shifts (not caused by input) are summed from the first paint on, for the
    // "no layout shift on a greeting" checks.
    await context.addInitScript(() => {
      window.__shifts = [];
      new PerformanceObserver((list) => {
        for (const e of list.getEntries()) {
          if (e.hadRecentInput) continue;
          const moved = (e.sources || []).map((s) => (s.node ? s.node.id || s.node.className || s.node.nodeName : "?"));
          window.__shifts.push({ value: e.value, at: Math.round(e.startTime), moved });
        }
      }).observe({ type: "layout-shift", buffered: true });
    });
    const p = await context.newPage();
    const errors = [];
    p.on("pageerror", (e) => errors.push(`uncaught: ${e.message}`));
    p.on("console", (m) => {
      // A 404 of an endpoint another part of the kiosk adds later is expected and handled.
      if (m.type() === "error" && !m.text().startsWith("Failed to load resource")) errors.push(`console: ${m.text()}`);
    });
    if (url) await p.goto(url);
    const id = `p${nextPage++}`;
    pages.set(id, { page: p, context, errors });
    return id;
  },
  async goto({ page: id, url }) {
    await page(id).page.goto(url);
  },
  async waitFor({ page: id, js, timeout }) {
    // A function made here, not a string: the page's CSP (no 'unsafe-eval') refuses to
    // compile a string predicate inside the page.
    const predicate = new Function(`return (${js});`);
    await page(id).page.waitForFunction(predicate, null, { timeout, polling: "raf" });
  },
  async eval({ page: id, js }) {
    const value = await page(id).page.evaluate(js);
    return value === undefined ? null : value;
  },
  async click({ page: id, selector }) {
    await page(id).page.click(selector, { timeout: 10000 });
  },
  async fill({ page: id, selector, value }) {
    await page(id).page.fill(selector, value, { timeout: 10000 });
  },
  async select({ page: id, selector, value }) {
    await page(id).page.selectOption(selector, value, { timeout: 10000 });
  },
  async check({ page: id, selector }) {
    await page(id).page.check(selector, { timeout: 10000 });
  },
  async screenshot({ page: id, path, fullPage }) {
    await page(id).page.screenshot({ path, fullPage: Boolean(fullPage) });
  },
  async errors({ page: id }) {
    return page(id).errors;
  },
  async close({ page: id }) {
    const entry = pages.get(id);
    if (entry) {
      pages.delete(id);
      await entry.context.close();
    }
  },
};

function answer(message) {
  process.stdout.write(`${JSON.stringify(message)}\n`);
}

const lines = readline.createInterface({ input: process.stdin });
lines.on("line", async (line) => {
  let request;
  try {
    request = JSON.parse(line);
  } catch (e) {
    answer({ id: null, ok: false, error: `not JSON: ${line}` });
    return;
  }
  const op = ops[request.op];
  if (!op) {
    answer({ id: request.id, ok: false, error: `unknown op ${request.op}` });
    return;
  }
  try {
    answer({ id: request.id, ok: true, value: (await op(request)) ?? null });
  } catch (e) {
    answer({ id: request.id, ok: false, error: String(e && e.message ? e.message : e) });
  }
});
lines.on("close", async () => {
  await browser.close().catch(() => {});
  process.exit(0);
});

answer({ ready: true, version: browser.version() });
