// Drives Debian's chromium through playwright-core against a running meterd:
//   node tests/browser/dashboard.mjs BASE_URL ARTIFACT_DIR DEVICE METRIC NEXT_TS
// loads the dashboard, waits for the chart to draw seeded data, posts a reading and waits
// for it to arrive over SSE, opens /swagger and executes GET /health. Any console error or
// uncaught page error fails the run. Prints one JSON line with what it saw; exit 1 on failure.
import { chromium } from "playwright-core";
import path from "node:path";

const [base, artifacts, device, metric, nextTs] = process.argv.slice(2);
const CHROMIUM = process.env.CHROMIUM_PATH || "/usr/bin/chromium";
const errors = [];
const report = { steps: [] };
const step = (name, extra) => report.steps.push({ name, t: Date.now(), ...extra });

const browser = await chromium.launch({
  executablePath: CHROMIUM,
  headless: true,
  // no background traffic: this machine's network is closed
  args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-dev-shm-usage"],
});
let failed = null;
try {
  const ctx = await browser.newContext({ viewport: { width: 1200, height: 760 } });
  const page = await ctx.newPage();
  page.on("console", (m) => { if (m.type() === "error") errors.push(page.url() + ": " + m.text()); });
  page.on("pageerror", (e) => errors.push(page.url() + ": uncaught " + e.message));
  page.on("requestfailed", (r) => {
    // EventSource streams are cut when the page navigates away; that is not an error
    if (!r.url().includes("/api/v1/events")) errors.push("request failed: " + r.url() + " " + r.failure()?.errorText);
  });

  // 1. the dashboard draws the seeded data
  await page.goto(base + "/?device=" + encodeURIComponent(device) + "&metric=" + encodeURIComponent(metric));
  await page.waitForFunction(() => Number(document.querySelector("#chart").dataset.points) > 0 &&
    document.querySelector("#chart canvas") !== null, null, { timeout: 15000 });
  await page.waitForSelector('#stream[data-state="open"]', { timeout: 10000 });
  await page.waitForSelector("#aggregates tbody tr", { timeout: 10000 });
  const drawn = await page.evaluate(() => ({
    points: Number(document.querySelector("#chart").dataset.points),
    resolution: document.querySelector("#chart").dataset.resolution,
    devices: document.querySelectorAll("#devices li").length,
    title: document.querySelector("#device-title").textContent,
    series: window.meterd.data[1].filter((v) => v !== null).length,
  }));
  step("chart", drawn);
  if (drawn.series < 2) throw new Error("chart has no real data: " + JSON.stringify(drawn));
  await page.screenshot({ path: path.join(artifacts, "dashboard.png") });

  // 2. a posted reading arrives live (SSE) in the event list, the device list and the chart
  const value = 57.25;
  const before = await page.evaluate(() => window.meterd.events);
  const r = await fetch(base + "/api/v1/readings", {
    method: "POST", headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ readings: [{ device, metric, ts: nextTs, value }] }),
  });
  if (r.status !== 202) throw new Error("POST /api/v1/readings → " + r.status + " " + (await r.text()));
  await page.waitForFunction((v) => [...document.querySelectorAll("#events li")].some((li) => li.textContent.includes(v)),
    "57.25", { timeout: 10000 });
  const live = await page.evaluate((ts) => ({
    events: window.meterd.events,
    lastT: window.meterd.data[0][window.meterd.data[0].length - 1],
    newestMs: window.meterd.newestMs, want: Date.parse(ts),
    listValue: document.querySelector("#devices li.selected .live")?.textContent,
  }), nextTs);
  step("live", live);
  if (live.events <= before) throw new Error("no SSE event counted");
  if (live.newestMs !== live.want) throw new Error("chart did not take the live point: " + JSON.stringify(live));
  if (!String(live.listValue).includes("57.25")) throw new Error("device list not updated: " + live.listValue);
  await page.screenshot({ path: path.join(artifacts, "dashboard-live.png") });

  // 3. the device search narrows the list
  await page.fill("#search", device.slice(0, 4));
  await page.waitForFunction((d) => [...document.querySelectorAll("#devices li")].every((li) => li.dataset.device.startsWith(d)),
    device.slice(0, 4), { timeout: 5000 });
  step("search");

  // 4. Swagger UI loads the spec and executes GET /health
  await page.goto(base + "/swagger");
  const op = page.locator("#operations-ops-getHealth");
  await op.waitFor({ timeout: 15000 });
  await op.locator(".opblock-summary").click();
  await op.locator("button.try-out__btn").click();
  await op.locator("button.execute").click();
  const status = op.locator(".live-responses-table .response .response-col_status").first();
  await status.waitFor({ timeout: 10000 });
  const code = (await status.textContent()).trim();
  step("swagger", { status: code });
  if (code !== "200") throw new Error("Swagger UI executed GET /health → " + code);
  await page.screenshot({ path: path.join(artifacts, "swagger.png") });
  await ctx.close();
} catch (e) {
  failed = e.message;
} finally {
  await browser.close();
}
report.errors = errors;
report.failed = failed;
console.log(JSON.stringify(report));
process.exit(failed || errors.length ? 1 : 0);
