// Drive the web console in Debian's Chromium with Playwright (tests/it/console.rs), and the
// proxy with the official OpenAI Node SDK, as a security lead, an auditor and an attacker would.
// Input: one JSON object in the CONSOLE_TEST environment variable. Output: one JSON object on
// stdout with what happened; the Rust test asserts on it (and on what the upstream received).
// Any step that does not happen as expected throws: the exit status is then 1 and stderr says
// which step.
import { createHmac } from "node:crypto";
import { mkdirSync, readFileSync } from "node:fs";
import { chromium } from "playwright-core";
import OpenAI from "openai";

const cfg = JSON.parse(process.env.CONSOLE_TEST);
const admin = cfg.admin_url; // http://127.0.0.1:PORT
const out = { steps: [], console_errors: [], pages_without_csp: [] };
mkdirSync(cfg.screenshots, { recursive: true });

function step(name) {
  out.steps.push(name);
  process.stderr.write(`console test: ${name}\n`);
}

function check(cond, what) {
  if (!cond) throw new Error(`check failed: ${what}`);
}

// RFC 6238 with the otpauth URI's parameters (SHA-1, 6 digits, 30 s).
function totp(uri) {
  const secret = new URL(uri).searchParams.get("secret");
  const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
  let bits = "";
  for (const c of secret.replace(/=+$/, "").toUpperCase()) bits += alphabet.indexOf(c).toString(2).padStart(5, "0");
  const key = Buffer.from(bits.match(/.{8}/g).map((b) => parseInt(b, 2)));
  const counter = Buffer.alloc(8);
  counter.writeBigUInt64BE(BigInt(Math.floor(Date.now() / 1000 / 30)));
  const mac = createHmac("sha1", key).update(counter).digest();
  const o = mac[mac.length - 1] & 0xf;
  const n = (mac.readUInt32BE(o) & 0x7fffffff) % 1000000;
  return String(n).padStart(6, "0");
}

// Every console page answer: note one without a CSP; every console message of type error
// (CSP violations are reported so) unless it is a refusal the test provoked on purpose.
function watch(page, expectedFailures) {
  page.on("console", (m) => {
    if (m.type() !== "error") return;
    const url = m.location()?.url || "";
    if (m.text().startsWith("Failed to load resource") && expectedFailures.some((f) => url.includes(f))) return;
    out.console_errors.push(`${m.text()} (${url})`);
  });
  page.on("pageerror", (e) => out.console_errors.push(`page error: ${e.message}`));
  page.on("response", (r) => {
    const u = new URL(r.url());
    if (u.origin === admin && u.pathname.startsWith("/dashboard") && !r.headers()["content-security-policy"]) {
      out.pages_without_csp.push(u.pathname);
    }
  });
}

async function shot(page, name) {
  await page.screenshot({ path: `${cfg.screenshots}/${name}.png`, fullPage: true });
}

async function signIn(page, user) {
  await page.goto(`${admin}/dashboard`);
  await page.waitForURL(`${admin}/dashboard/login`);
  await page.fill("input[name=email]", user.email);
  await page.fill("input[name=password]", user.password);
  await page.fill("input[name=code]", totp(user.otpauth));
  await page.click("button[type=submit]");
  await page.waitForSelector("h1:text('Overview')");
}

async function sdkCall(key, text) {
  const client = new OpenAI({ baseURL: `${cfg.proxy_url}/v1`, apiKey: key, maxRetries: 0 });
  try {
    const r = await client.chat.completions.create({ model: "gpt-4o-mini", messages: [{ role: "user", content: text }] });
    return { ok: r.choices[0].message.content };
  } catch (e) {
    return { status: e.status, code: e.code ?? e.error?.code };
  }
}

// Root in a container: no sandbox; a small /dev/shm: use /tmp.
const browser = await chromium.launch({ executablePath: cfg.chromium, args: ["--no-sandbox", "--disable-dev-shm-usage"] });
try {
  // ---- the security lead (an operator) ----
  const ctx = await browser.newContext({ viewport: { width: 1280, height: 900 }, acceptDownloads: true });
  const page = await ctx.newPage();
  watch(page, ["/api/auth/password"]);
  step("operator signs in with TOTP");
  await signIn(page, cfg.operator);
  const cookies = await ctx.cookies();
  const session = cookies.find((c) => c.name === "sluice_session");
  check(session && session.httpOnly && session.sameSite === "Strict", "the session cookie is HttpOnly and SameSite=Strict");
  check(!(await page.evaluate(() => document.cookie)).includes("sluice_session"), "the page cannot read the session");
  check((await page.evaluate(() => JSON.stringify(localStorage) + JSON.stringify(sessionStorage))).length <= 4,
    "nothing in web storage");
  await page.waitForSelector("text=Upstreams");
  await shot(page, "overview");

  step("operator switches PII redaction on for the org");
  await page.click("nav >> text=Organizations");
  await page.click(`a[href='/dashboard/settings/${cfg.org_id}']`);
  await page.waitForURL(`${admin}/dashboard/settings/${cfg.org_id}`);
  await page.selectOption("select[name=pii]", "on");
  await page.click("button:text('Save settings')");
  await page.waitForSelector("text=Saved.");

  step("operator creates a key, shown once");
  await page.fill("#keys input[name=name]", "console-key");
  await page.click("button:text('Create key')");
  const keyEl = await page.waitForSelector("[data-new-key]");
  const key = await keyEl.textContent();
  check(key.startsWith("sk-"), "a key was shown");
  await page.waitForSelector("#keys td:text('console-key')");
  await shot(page, "settings");

  step("operator gives the key its own rpm limit");
  await page.locator("#keys tr", { hasText: "console-key" }).locator("button:text('Edit')").click();
  await page.fill("#key-edit input[name=rpm]", "120");
  await page.click("button:text('Save key')");
  await page.waitForSelector("text=Key console-key updated.");
  // The rpm column, found by its header (the switches' columns come from the server's table).
  const headers = await page.locator("#keys table th").allTextContents();
  const rpmAt = headers.indexOf("rpm");
  check(rpmAt >= 0, `the keys table has an rpm column: ${headers}`);
  const rpmCell = await page.locator("#keys tr", { hasText: "console-key" }).locator("td").nth(rpmAt).textContent();
  check(rpmCell === "120", `the key's rpm shows 120: ${rpmCell}`);

  step("the key works with the official SDK and the request arrives redacted");
  out.sdk_before_revoke = await sdkCall(key, `Please email ${cfg.pii_email} about the order.`);
  check(out.sdk_before_revoke.ok, `the SDK call succeeded: ${JSON.stringify(out.sdk_before_revoke)}`);

  step("operator revokes the key (with confirmation)");
  const revoke = page.locator("#keys tr", { hasText: "console-key" }).locator("button:text('Revoke')");
  await revoke.click();
  await page.locator("#keys tr", { hasText: "console-key" }).locator("button[data-armed]").click();
  await page.waitForSelector("text=revoked: it is refused from now on");
  out.sdk_after_revoke = await sdkCall(key, "hello again");
  check(out.sdk_after_revoke.status === 401, `the revoked key gets 401: ${JSON.stringify(out.sdk_after_revoke)}`);

  step("both actions are on the audit page and the chain verifies");
  await page.click("nav >> text=Audit");
  await page.waitForSelector("h1:text('Audit log')");
  await page.fill("input[name=action]", "key.create");
  await page.click("button:text('Filter')");
  await page.waitForSelector("td:text('key.create')");
  await page.fill("input[name=action]", "key.revoke");
  await page.click("button:text('Filter')");
  await page.waitForSelector("td:text('key.revoke')");
  await page.click("tr.clickable >> nth=0");
  const detail = await (await page.waitForSelector("pre[data-record]")).textContent();
  check(detail.includes("key.revoke") && detail.includes("\"hash\""), "a record's details");
  await page.fill("input[name=action]", "");
  await page.click("button:text('Filter')");
  await page.click("button:text('Verify the chain')");
  const verdict = await (await page.waitForSelector("[data-chain]")).getAttribute("data-chain");
  check(verdict === "valid", "the chain verifies");
  out.chain_text = await page.textContent("[data-chain]");
  await shot(page, "audit");
  step("audit export as JSON Lines");
  const [download] = await Promise.all([page.waitForEvent("download"), page.click("button:text('Export JSON Lines')")]);
  const lines = readFileSync(await download.path(), "utf8").trim().split("\n").map((l) => JSON.parse(l));
  out.export_actions = [...new Set(lines.map((r) => r.action))].sort();
  check(lines.length > 3 && lines.every((r, i) => i === 0 || r.seq > lines[i - 1].seq), "the export is every record in order");

  step("the other pages");
  await page.click("nav >> text=Usage");
  await page.waitForSelector("h2:text('Budgets')");
  await page.selectOption("select[name=org_id]", cfg.org_id);
  await page.click("button:text('Show')");
  // The console-key's request, by the key's name.
  await page.waitForSelector("td > span[title]:text('console-key')");
  await shot(page, "usage");
  await page.click("nav >> text=Credentials");
  await page.waitForSelector("h1:text('Upstream credentials')");
  await page.fill("input[name=name]", "console-cred");
  await page.fill("input[name=secret]", cfg.credential_secret);
  await page.click("button:text('Set or replace')");
  await page.waitForSelector("text=console-cred set.");
  check(!(await page.content()).includes(cfg.credential_secret), "the secret is not on the page");
  await shot(page, "credentials");
  await page.click("nav >> text=MCP servers");
  await page.waitForSelector("h2:text('What each key may use')");
  await shot(page, "mcp");
  await page.click("nav >> text=Overview");
  await page.waitForSelector("[data-figure=requests]");
  out.overview_requests = Number(await page.textContent("[data-figure=requests]"));
  await shot(page, "overview");

  step("a cross-site form post with the operator's session is refused");
  const evil = await ctx.newPage();
  await evil.route("http://evil.test/**", (r) => r.fulfill({
    contentType: "text/html",
    body: `<form method="POST" action="${admin}/api/orgs" enctype="text/plain">` +
      `<input name='{"name":"evil-org","x":"' value='"}'></form><script>document.forms[0].submit()</script>`,
  }));
  const [forged] = await Promise.all([
    evil.waitForResponse((r) => r.url() === `${admin}/api/orgs`),
    evil.goto("http://evil.test/"),
  ]);
  out.cross_site_status = forged.status();
  out.cross_site_code = (await forged.json()).error.code;
  await evil.close();
  const orgs = await page.evaluate(async () => (await (await fetch("/api/orgs")).json()).data.map((o) => o.name));
  check(!orgs.includes("evil-org"), "no org was created by the forged post");

  step("a wrong current password is said so, and the session goes on");
  await page.click("nav >> text=Account");
  await page.fill("input[name=current]", "not the password at all");
  await page.fill("input[name=new]", "another long password here");
  await page.click("button:text('Change password')");
  const wrong = await (await page.waitForSelector(".alert")).textContent();
  check(wrong.includes("invalid_credentials"), `the refusal is shown: ${wrong}`);
  check(page.url() === `${admin}/dashboard/account`, "still signed in, on the same page");

  step("operator enrols a new authenticator: QR code and URI");
  await page.fill("input[name=password]", cfg.operator.password);
  await page.fill("input[name=recovery]", cfg.operator.recovery_code);
  await page.click("button:text('Enrol a new authenticator')");
  await page.waitForSelector("img.qr");
  const uri = await page.textContent("[data-otpauth]");
  check(uri.startsWith("otpauth://totp/"), "the otpauth URI is shown");
  check(await page.evaluate(() => document.querySelector("img.qr").naturalWidth > 0), "the QR code renders");
  await shot(page, "account");

  step("operator signs out");
  await page.click("#signout");
  await page.waitForURL(`${admin}/dashboard/login`);
  check(!(await ctx.cookies()).some((c) => c.name === "sluice_session"), "the session cookie is gone");
  await shot(page, "login");
  await ctx.close();

  // ---- the auditor ----
  step("an auditor signs in: read-only pages");
  const actx = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  const ap = await actx.newPage();
  watch(ap, [`/api/orgs/${cfg.org_id}/keys`]);
  await signIn(ap, cfg.auditor);
  check(!(await ap.isVisible("nav >> text=Credentials")), "no credentials page for auditors");
  await ap.click("nav >> text=Organizations");
  await ap.waitForURL(`${admin}/dashboard/settings/${cfg.org_id}`);
  await ap.waitForSelector("text=Read-only");
  await ap.waitForSelector("#keys");
  for (const b of ["Save settings", "Create key", "Revoke", "Add member"]) {
    check((await ap.locator(`button:text('${b}')`).count()) === 0, `no ${b} button for auditors`);
  }
  check(await ap.isDisabled("select[name=pii]"), "the settings are read-only");
  await shot(ap, "auditor-settings");
  const forgedPost = await ap.evaluate(async (org) => {
    const csrf = document.cookie.split("; ").find((c) => c.startsWith("sluice_csrf=")).split("=")[1];
    const r = await fetch(`/api/orgs/${org}/keys`, {
      method: "POST", headers: { "Content-Type": "application/json", "X-Sluice-CSRF": csrf },
      body: JSON.stringify({ name: "sneaky" }),
    });
    return { status: r.status, code: (await r.json()).error?.code };
  }, cfg.org_id);
  out.auditor_forged_post = forgedPost;
  check(forgedPost.status === 403 && forgedPost.code === "permission_denied", `the auditor's forged POST is refused: ${JSON.stringify(forgedPost)}`);
  await ap.click("nav >> text=Audit");
  await ap.click("button:text('Verify the chain')");
  check((await (await ap.waitForSelector("[data-chain]")).getAttribute("data-chain")) === "valid", "auditors verify the chain");
  await actx.close();
  out.ok = true;
} finally {
  await browser.close();
  process.stdout.write(JSON.stringify(out) + "\n");
}
