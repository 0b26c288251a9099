"""The console in a real browser: Debian's Chromium driven by Playwright for Python.

Run by scripts/console-tests, which starts keyhold (embedded default, local keys, probes
every 2 s) and passes its address and data dir in the environment. Each test asserts
what a tenant administrator or operator sees; screenshots go to $SCREENSHOTS; every page
visited is checked with axe-core (no serious or critical violation).

Environment: KEYHOLD_BIN, KEYHOLD_URL, KEYHOLD_DATA_DIR, KEYHOLD_TLS_URL (a second server
under TLS), AXE_JS (axe.min.js), SCREENSHOTS, CHROMIUM (default /usr/bin/chromium),
PROBE_INTERVAL_S.
"""

import json
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
import traceback
import urllib.error
import urllib.request

from playwright.sync_api import expect, sync_playwright

BIN = os.environ["KEYHOLD_BIN"]
URL = os.environ["KEYHOLD_URL"].rstrip("/")
DATA = os.environ["KEYHOLD_DATA_DIR"]
TLS_URL = os.environ.get("KEYHOLD_TLS_URL", "").rstrip("/")
TLS_DATA = os.environ.get("KEYHOLD_TLS_DATA_DIR", "")
AXE = os.environ["AXE_JS"]
SHOTS = os.environ["SCREENSHOTS"]
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
PROBE_S = float(os.environ.get("PROBE_INTERVAL_S", "2"))
# A suspension is enforced within one probe interval plus the schedule's polling (1 s);
# resumption within a quarter interval plus polling. The page refreshes itself every 5 s.
SUSPEND_BOUND_S = PROBE_S + 1 + 5 + 2
RESUME_BOUND_S = PROBE_S / 4 + 1 + 5 + 2


def kh(*args, data=DATA, url=URL, token=None, stdin=None, check=True):
    env = dict(os.environ, KEYHOLD_DATA_DIR=data, KEYHOLD_URL=url)
    if token:
        env["KEYHOLD_TOKEN"] = token
    out = subprocess.run([BIN, *args], env=env, input=stdin, capture_output=True, check=False)
    if check and out.returncode != 0:
        raise AssertionError(f"keyhold {' '.join(args)} exited {out.returncode}: {out.stderr.decode()}")
    return out


def admin_token(data=DATA):
    return kh("token", "--admin", data=data).stdout.decode().strip()


def link(tenant=None, url=URL, data=DATA):
    args = ["console-link"] + (["--tenant", tenant] if tenant else [])
    return kh(*args, data=data, url=url, token=admin_token(data)).stdout.decode().strip()


def sign_in(page, the_link):
    """Opens a link in a browser without a session: its page signs in at once."""
    page.goto(the_link)
    page.wait_for_url(lambda u: "/console/t/" in u or u.endswith("/console/tenants"))


CHECKED = set()


def axe(page, label):
    """No serious or critical accessibility violation on the page."""
    key = page.url.split("?")[0] + "#" + label
    if key in CHECKED:
        return
    CHECKED.add(key)
    page.add_script_tag(path=AXE)
    result = page.evaluate("async () => await axe.run(document, {resultTypes: ['violations']})")
    bad = [v for v in result["violations"] if v.get("impact") in ("serious", "critical")]
    assert not bad, f"axe on {label} ({page.url}): " + json.dumps(
        [{"id": v["id"], "impact": v["impact"], "nodes": [n["html"][:200] for n in v["nodes"][:3]]} for v in bad],
        indent=1,
    )


def test_axe_finds_violations(browser, fx, ctx):
    """The accessibility check itself: a page with known faults fails it."""
    context = browser.new_context()
    page = context.new_page()
    page.set_content('<html><body><img src="x.png"><input type="text"><a href="#"></a></body></html>')
    try:
        axe(page, "known-bad")
        raise AssertionError("axe-core found nothing on a page with an unlabelled input and an image without alt")
    except AssertionError as e:
        assert "image-alt" in str(e) or "label" in str(e), e
    context.close()


def shot(page, name, full=True):
    page.screenshot(path=os.path.join(SHOTS, f"{name}.png"), full_page=full)


def tenant_state(tenant):
    out = kh("tenant", "show", tenant, token=admin_token())
    return json.loads(out.stdout)["state"]


class Fixture:
    def __init__(self):
        token = admin_token()
        for tid, mode in (("acme", "local"), ("globex", "local"), ("initech", "cmk"), ("hooli", "cmk")):
            kh("tenant", "create", "--id", tid, "--realm", "eu", "--mode", mode, token=token)
        self.k1 = kh("local-kms", "create-key", "--region", "eu-central-1").stdout.decode().strip()
        self.k2 = kh("local-kms", "create-key", "--region", "eu-west-1").stdout.decode().strip()
        self.k3 = kh("local-kms", "create-key", "--region", "eu-central-1").stdout.decode().strip()
        g1 = kh("local-kms", "create-key", "--region", "eu-central-1").stdout.decode().strip()
        g2 = kh("local-kms", "create-key", "--region", "eu-west-1").stdout.decode().strip()
        kh("key", "attach", "--tenant", "globex", "--region", "eu-central-1", "--key", g1, token=token, check=False)
        kh("key", "attach", "--tenant", "globex", "--region", "eu-west-1", "--key", g2, token=token)


def test_sign_in_once_and_cookie(browser, fx, ctx):
    page = ctx["acme"]
    the_link = link("acme")
    # A browser signed in already is asked first (the link would end its session).
    admin_page = ctx["admin"]
    admin_page.goto(the_link)
    expect(admin_page.locator("main")).to_contain_text("the administrator of tenant acme")
    expect(admin_page.locator("main")).to_contain_text("You are signed in already")
    axe(admin_page, "sign-in")
    # A browser without a session opening the link is signed in at once.
    page.goto(the_link)
    expect(page).to_have_url(f"{URL}/console/t/acme/")
    expect(page.locator("h1")).to_contain_text("Key health of acme")
    cookies = ctx["acme_context"].cookies()
    session = [c for c in cookies if c["name"] == "keyhold_console"]
    assert session and session[0]["httpOnly"] and session[0]["sameSite"] == "Strict", cookies
    # The same link a second time, in another browser context: refused.
    other = browser.new_context(bypass_csp=True)
    p2 = other.new_page()
    resp = p2.goto(the_link)
    assert resp.status == 401, resp.status
    expect(p2.locator("main")).to_contain_text("already used")
    assert "keyhold_console" not in [c["name"] for c in other.cookies()]
    axe(p2, "error page")
    other.close()
    # Without a session, a page is refused (401).
    anon = browser.new_context(bypass_csp=True)
    p3 = anon.new_page()
    resp = p3.goto(f"{URL}/console/t/acme/")
    assert resp.status == 401, resp.status
    anon.close()


def test_wizard_to_active(browser, fx, ctx):
    page = ctx["acme"]
    page.goto(f"{URL}/console/t/acme/")
    expect(page.get_by_role("status").first).to_contain_text("Not active yet")
    axe(page, "key health pending")
    page.get_by_role("link", name="Set up keys").first.click()
    expect(page.locator("h1")).to_contain_text("Set up keys for acme")
    expect(page.locator("main")).to_contain_text("realm eu")
    field = page.get_by_label("Local key id for eu-central-1")
    # As you type: whitespace, then a malformed id, then a good one.
    field.fill(" " + fx.k1)
    expect(page.locator("#msg-eu-central-1")).to_contain_text("Remove the spaces")
    expect(field).to_have_attribute("aria-invalid", "true")
    field.fill("lk-nothex")
    expect(page.locator("#msg-eu-central-1")).to_contain_text("32 hexadecimal")
    field.fill(fx.k1)
    expect(page.locator("#msg-eu-central-1")).to_contain_text("Attach it to check it live")
    axe(page, "wizard")
    page.get_by_role("button", name="Check with KMS and attach").first.click()
    expect(page.locator("#report")).to_be_visible()
    # One region is not a usable set yet: the report says what is missing.
    expect(page.locator("main")).to_contain_text("Attached: " + fx.k1)
    page.get_by_label("Local key id for eu-west-1").fill(fx.k2)
    page.get_by_role("button", name="Check with KMS and attach").nth(1).click()
    expect(page.locator("main")).to_contain_text("Validation passed")
    shot(page, "wizard")
    page.get_by_role("button", name="Validate and activate").click()
    expect(page.locator("main")).to_contain_text("Your tenant is active")
    assert tenant_state("acme") == "active"
    page.goto(f"{URL}/console/t/acme/")
    expect(page.locator("#health")).to_contain_text("Active: every region's key answers")
    axe(page, "key health active")


def test_arn_field_checks_as_you_type(browser, fx, ctx):
    page = ctx["admin"]
    page.goto(f"{URL}/console/t/initech/setup")
    expect(page.locator("main")).to_contain_text("Key policy for eu-central-1")
    axe(page, "wizard cmk")
    field = page.get_by_label("Key ARN for eu-west-1")
    msg = page.locator("#msg-eu-west-1")
    field.fill("arn:aws:kms:eu-west-1:111122223333:alias/keyhold-initech")
    expect(msg).to_contain_text("This is an alias")
    field.fill("arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab")
    expect(msg).to_contain_text("This key is in us-east-1, but this field is for eu-west-1")
    field.fill("arn:aws:kms:eu-west-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab\n")
    expect(msg).to_contain_text("A key ARN in eu-west-1")
    field.fill("arn:aws:kms:eu-west-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab ")
    expect(msg).to_contain_text("Remove the spaces")
    # The policy and template download.
    with page.expect_download() as d:
        page.get_by_role("link", name="Download the key policy").first.click()
    policy = json.loads(open(d.value.path()).read())
    assert "Statement" in policy, policy
    with page.expect_download() as d:
        page.get_by_role("link", name="Download the CloudFormation template").first.click()
    assert "Resources" in json.loads(open(d.value.path()).read())
    # Live: an attach of a key that does not exist gets the report's findings.
    field = page.get_by_label("Key ARN for eu-central-1")
    field.fill("arn:aws:kms:eu-central-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab")
    page.get_by_role("button", name="Check with KMS and attach").first.click()
    expect(page.locator("#report")).to_be_visible()
    expect(page.locator("main")).to_contain_text("not attached")


def test_wizard_choice_of_realm_and_mode(browser, fx, ctx):
    context = browser.new_context(bypass_csp=True)
    page = context.new_page()
    sign_in(page, link("hooli"))
    page.goto(f"{URL}/console/t/hooli/setup")
    expect(page.get_by_role("group", name="Realm")).to_be_visible()
    assert page.get_by_label("Local: keys of keyhold's local provider").count() == 0
    axe(page, "wizard choice")
    page.get_by_label("us: us-east-1, us-west-2").check()
    page.get_by_label("BYOK: a key in your account, through a role keyhold assumes").check()
    page.get_by_role("button", name="Save realm and mode").click()
    # BYOK without a role: a clear error, nothing changed.
    expect(page.get_by_role("alert")).to_contain_text("needs role_arn")
    page.get_by_label("us: us-east-1, us-west-2").check()
    page.get_by_label("BYOK: a key in your account, through a role keyhold assumes").check()
    page.get_by_label("Role ARN (BYOK only)").fill("arn:aws:iam::123456789012:role/keyhold-access")
    page.get_by_role("button", name="Save realm and mode").click()
    expect(page.get_by_role("status").first).to_contain_text("Saved: realm us, mode byok")
    expect(page.locator("main")).to_contain_text("us-east-1 (home)")
    expect(page.locator("main")).to_contain_text("ExternalId")
    out = json.loads(kh("tenant", "show", "hooli", token=admin_token()).stdout)
    assert (out["realm"], out["mode"], out["state"]) == ("us", "byok", "pending"), out
    context.close()


def test_disabled_key_banner_and_recovery(browser, fx, ctx):
    page = ctx["acme"]
    page.goto(f"{URL}/console/t/acme/")
    expect(page.locator("#health")).to_contain_text("Active")
    kh("local-kms", "disable-key", fx.k1)
    started = time.monotonic()
    banner = page.locator("#health .banner.bad")
    expect(banner).to_contain_text("Suspended", timeout=SUSPEND_BOUND_S * 1000)
    took = time.monotonic() - started
    print(f"  suspension banner after {took:.1f} s (bound {SUSPEND_BOUND_S:.0f} s)")
    expect(banner).to_contain_text("misconfiguration detected")
    expect(banner).to_contain_text("What to do")
    expect(banner).to_contain_text("resumes automatically within")
    shot(page, "key-health-suspended")
    axe(page, "key health suspended")
    kh("local-kms", "enable-key", fx.k1)
    started = time.monotonic()
    expect(page.locator("#health")).to_contain_text("Active: every region's key answers", timeout=RESUME_BOUND_S * 1000)
    print(f"  banner cleared after {time.monotonic() - started:.1f} s (bound {RESUME_BOUND_S:.0f} s)")
    assert page.locator("#health .banner.bad").count() == 0


def test_key_change_and_retire_refused(browser, fx, ctx):
    page = ctx["acme"]
    svc = kh("token", "--service", "dev").stdout.decode().strip()
    msgs = []
    for i in range(3):
        out = kh("encrypt", "--url", URL, "--tenant", "acme", "--purpose", "billing", token=svc, stdin=f"secret {i}".encode())
        msgs.append(out.stdout)
    for m in msgs:
        kh("decrypt", "--url", URL, "--tenant", "acme", token=svc, stdin=m)
    page.goto(f"{URL}/console/t/acme/keys")
    axe(page, "key change")
    page.get_by_label("New key for eu-central-1").fill(fx.k3)
    page.get_by_role("button", name="Check with KMS and attach").first.click()
    expect(page.locator("main")).to_contain_text("Validation passed")
    expect(page.locator("main")).to_contain_text("Re-encryption progress")
    retire = page.get_by_role("button", name=f"Retire {fx.k1}")
    retire.click()
    # Refused while messages remain, with the count.
    expect(page.get_by_role("alert")).to_contain_text("key_protects_data")
    expect(page.get_by_role("alert")).to_contain_text("still protects 3 message(s)")
    shot(page, "key-change")
    # Re-encrypt the messages through the server, then the retirement goes through.
    for m in msgs:
        kh("reencrypt", "--url", URL, "--tenant", "acme", token=svc, stdin=m)
    deadline = time.monotonic() + 30
    while True:
        page.goto(f"{URL}/console/t/acme/keys")
        page.get_by_role("button", name=f"Retire {fx.k1}").click()
        text = page.locator("main").inner_text()
        if "retired" in text and "Key " + fx.k1 in text:
            break
        assert time.monotonic() < deadline, text[:2000]
        time.sleep(2)
    expect(page.locator("main")).to_contain_text("retired")


def test_notices_and_webhooks(browser, fx, ctx):
    page = ctx["acme"]
    page.goto(f"{URL}/console/t/acme/events")
    expect(page.locator("table")).to_contain_text("tenant.suspended")
    expect(page.locator("table")).to_contain_text("tenant.activated")
    axe(page, "notices")
    page.goto(f"{URL}/console/t/acme/webhooks")
    axe(page, "webhooks")
    page.get_by_label("URL (https, public)").fill("https://hooks.example.com/keyhold")
    page.get_by_label("Event types").fill("tenant.suspended, key.revoked")
    page.get_by_role("button", name="Add endpoint").click()
    expect(page.locator(".secret")).to_contain_text("whsec_")
    page.get_by_role("link", name="https://hooks.example.com/keyhold").click()
    page.get_by_role("button", name="Send a test event").click()
    expect(page.get_by_role("status").first).to_contain_text("Test event queued")
    axe(page, "webhook")
    page.get_by_role("button", name="Rotate the secret").click()
    expect(page.locator(".secret")).to_contain_text("whsec_")
    # A bad URL: a clear error, nothing stored.
    page.goto(f"{URL}/console/t/acme/webhooks")
    page.get_by_label("URL (https, public)").fill("http://127.0.0.1/x")
    page.get_by_role("button", name="Add endpoint").click()
    expect(page.get_by_role("alert")).to_contain_text("invalid_request")


def test_audit_usage_export(browser, fx, ctx):
    page = ctx["acme"]
    page.goto(f"{URL}/console/t/acme/audit")
    expect(page.locator("#audit-badge")).to_contain_text("intact")
    axe(page, "audit")
    shot(page, "audit", full=False)
    # Filters: only Decrypt calls, outcome ok.
    page.get_by_label("Operation").fill("Decrypt")
    page.get_by_label("Outcome").select_option("ok")
    page.get_by_role("button", name="Filter").click()
    rows = page.locator("tbody tr")
    assert rows.count() >= 1
    for text in rows.all_inner_texts():
        assert "Decrypt" in text and "GenerateDataKey" not in text, text
    # The export verifies offline with the command the page shows.
    with page.expect_download() as d:
        page.get_by_role("link", name="Download the signed export").click()
    path = d.value.path()
    command = page.locator("#verify-cmd").inner_text().split()
    key = command[command.index("--public-key") + 1]
    out = kh("audit", "verify", "--file", str(path), "--public-key", key)
    assert b"intact" in out.stdout, out.stdout
    # Usage: the billing purpose has a chart and a table.
    page.goto(f"{URL}/console/t/acme/usage")
    expect(page.locator("main")).to_contain_text("Purpose billing")
    assert page.locator("svg[role=img]").count() >= 2
    axe(page, "usage")
    shot(page, "usage")


def test_tenant_isolation(browser, fx, ctx):
    page = ctx["acme"]
    for path in ["/console/t/globex/", "/console/t/globex/setup", "/console/t/globex/audit",
                 "/console/t/globex/audit/export", "/console/t/globex/events", "/console/t/globex/webhooks",
                 "/console/t/globex/usage", "/console/t/globex/keys", "/console/t/nosuch/",
                 "/console/tenants", "/console/events"]:
        resp = page.goto(URL + path)
        assert resp.status == 403, (path, resp.status)
        assert "globex" not in page.locator("main").inner_text().replace("/console/t/globex", ""), path
    # A form posted to another tenant's page with this session's own CSRF token.
    csrf = page.goto(f"{URL}/console/t/acme/") and page.locator("meta[name=csrf]").get_attribute("content")
    status = page.evaluate(
        """async ([csrf]) => (await fetch('/console/t/globex/validate', {method: 'POST',
             headers: {'Content-Type': 'application/x-www-form-urlencoded'}, body: '_csrf=' + csrf})).status""",
        [csrf],
    )
    assert status == 403, status


def test_csrf_less_posts_refused(browser, fx, ctx):
    page = ctx["acme"]
    page.goto(f"{URL}/console/t/acme/")
    before = tenant_state("acme")
    # A form without the token, submitted by the browser like any form.
    page.evaluate(
        """() => { const f = document.createElement('form'); f.method = 'post';
             f.action = '/console/t/acme/webhooks';
             for (const [k, v] of [['url', 'https://evil.example.com/x']]) {
               const i = document.createElement('input'); i.name = k; i.value = v; f.appendChild(i); }
             document.body.appendChild(f); f.submit(); }"""
    )
    page.wait_for_load_state()
    expect(page.locator("main")).to_contain_text("csrf_failed")
    # A wrong token, and a request outside the browser with the cookie but no token.
    status = page.evaluate(
        """async () => (await fetch('/console/t/acme/validate', {method: 'POST',
             headers: {'Content-Type': 'application/x-www-form-urlencoded'}, body: '_csrf=forged'})).status"""
    )
    assert status == 403, status
    cookie = [c for c in ctx["acme_context"].cookies() if c["name"] == "keyhold_console"][0]["value"]
    req = urllib.request.Request(
        f"{URL}/console/logout", data=b"x=1", method="POST",
        headers={"Cookie": f"keyhold_console={cookie}", "Content-Type": "application/x-www-form-urlencoded"},
    )
    try:
        urllib.request.urlopen(req)
        raise AssertionError("a POST without the CSRF token was accepted")
    except urllib.error.HTTPError as e:
        assert e.code == 403, e.code
        body = json.loads(e.read())
        assert body["error"]["code"] == "csrf_failed", body
    # Another site posting with the session's cookie (it cannot know the token anyway).
    req = urllib.request.Request(
        f"{URL}/console/logout", data=b"_csrf=x", method="POST",
        headers={"Cookie": f"keyhold_console={cookie}", "Content-Type": "application/x-www-form-urlencoded",
                 "Origin": "https://evil.example.com", "Sec-Fetch-Site": "cross-site"},
    )
    try:
        urllib.request.urlopen(req)
        raise AssertionError("a cross-site POST was accepted")
    except urllib.error.HTTPError as e:
        assert e.code == 403, e.code
    assert tenant_state("acme") == before
    page.goto(f"{URL}/console/t/acme/webhooks")
    expect(page.locator("main")).not_to_contain_text("evil.example.com")


def test_operators_view(browser, fx, ctx):
    page = ctx["admin"]
    page.goto(f"{URL}/console/tenants")
    table = page.locator("table")
    for t in ("acme", "globex", "initech"):
        expect(table).to_contain_text(t)
    axe(page, "tenants")
    page.get_by_label("State").select_option("pending")
    page.get_by_role("button", name="Filter").click()
    expect(page.locator("tbody")).to_contain_text("initech")
    expect(page.locator("tbody")).not_to_contain_text("globex")
    page.goto(f"{URL}/console/events")
    expect(page.locator("table")).to_contain_text("tenant.created")
    axe(page, "platform events")
    page.get_by_label("Type").select_option("tenant.suspended")
    page.get_by_role("button", name="Filter").click()
    for text in page.locator("tbody tr").all_inner_texts():
        assert "tenant.suspended" in text, text
    # The admin reaches every tenant's pages.
    resp = page.goto(f"{URL}/console/t/globex/audit")
    assert resp.status == 200
    # And mints a link for a tenant admin from the console.
    page.goto(f"{URL}/console/tenants")
    page.get_by_role("button", name="Sign-in link for globex").click()
    expect(page.locator("#link")).to_contain_text("/console/login?t=")


def test_keyboard_and_narrow_window(browser, fx, ctx):
    page = ctx["acme"]
    page.set_viewport_size({"width": 360, "height": 740})
    page.goto(f"{URL}/console/t/acme/")
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.textContent") == "Skip to content"
    page.keyboard.press("Enter")
    assert page.evaluate("document.activeElement.id") == "main"
    # Tab reaches the navigation's links in order.
    page.keyboard.press("Shift+Tab")
    for path in ("/console/t/acme/setup", "/console/t/acme/audit", "/console/t/acme/usage"):
        page.goto(URL + path)
        overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
        assert overflow <= 1, (path, overflow)
    page.goto(f"{URL}/console/t/acme/")
    shot(page, "narrow-key-health")
    page.set_viewport_size({"width": 1280, "height": 1000})


def test_audit_badge_breaks_when_tampered(browser, fx, ctx):
    page = ctx["acme"]
    page.goto(f"{URL}/console/t/acme/audit")
    expect(page.locator("#audit-badge")).to_contain_text("intact")
    db = sqlite3.connect(os.path.join(DATA, "registry.db"))
    body = db.execute("SELECT body FROM audit_events WHERE tenant_id = 'acme' AND seq = 2").fetchone()[0]
    db.execute("UPDATE audit_events SET body = ? WHERE tenant_id = 'acme' AND seq = 2", (body.replace("acme", "acmf", 1) + " ",))
    db.commit()
    db.close()
    page.reload()
    expect(page.locator("#audit-badge")).to_contain_text("broken")
    shot(page, "audit-broken")


def test_tls_session_cookie(browser, fx, ctx):
    assert TLS_URL, "the TLS server is not running"
    context = browser.new_context(ignore_https_errors=True, bypass_csp=True)
    page = context.new_page()
    token = admin_token(TLS_DATA)
    kh("tenant", "create", "--id", "tls-co", "--realm", "eu", "--mode", "local", data=TLS_DATA, url=TLS_URL,
       token=token, check=False)
    out = kh("console-link", "--tenant", "tls-co", data=TLS_DATA, url=TLS_URL, token=token,
             check=False)
    assert out.returncode == 0, out.stderr
    sign_in(page, out.stdout.decode().strip())
    expect(page.locator("h1")).to_contain_text("Key health of tls-co")
    cookie = [c for c in context.cookies() if c["name"] == "__Host-keyhold_console"]
    assert cookie and cookie[0]["secure"] and cookie[0]["httpOnly"] and cookie[0]["sameSite"] == "Strict", context.cookies()
    context.close()


TESTS = [
    test_axe_finds_violations,
    test_sign_in_once_and_cookie,
    test_wizard_to_active,
    test_arn_field_checks_as_you_type,
    test_wizard_choice_of_realm_and_mode,
    test_disabled_key_banner_and_recovery,
    test_key_change_and_retire_refused,
    test_notices_and_webhooks,
    test_audit_usage_export,
    test_tenant_isolation,
    test_csrf_less_posts_refused,
    test_operators_view,
    test_keyboard_and_narrow_window,
    test_audit_badge_breaks_when_tampered,
    test_tls_session_cookie,
]


def main():
    os.makedirs(SHOTS, exist_ok=True)
    fx = Fixture()
    failed = 0
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-dev-shm-usage"])
        viewport = {"width": 1280, "height": 1000}
        acme = browser.new_context(bypass_csp=True, accept_downloads=True, viewport=viewport)
        admin = browser.new_context(bypass_csp=True, accept_downloads=True, viewport=viewport)
        ctx = {"acme_context": acme, "acme": acme.new_page(), "admin": admin.new_page()}
        for t in (5_000,):
            ctx["acme"].set_default_timeout(t * 2)
            ctx["admin"].set_default_timeout(t * 2)
        sign_in(ctx["admin"], link(None))
        only = set(sys.argv[1:])
        ran = 0
        for test in TESTS:
            if only and test.__name__ not in only:
                continue
            ran += 1
            started = time.monotonic()
            try:
                test(browser, fx, ctx)
                print(f"ok   {test.__name__} ({time.monotonic() - started:.1f} s)", flush=True)
            except Exception:
                failed += 1
                print(f"FAIL {test.__name__}", flush=True)
                traceback.print_exc()
                for name in ("acme", "admin"):
                    try:
                        shot(ctx[name], f"failure-{test.__name__}-{name}")
                    except Exception:
                        pass
        browser.close()
    print(f"\nconsole: {ran - failed} passed, {failed} failed; axe-core checked {len(CHECKED)} pages; "
          f"screenshots in {SHOTS}")
    return 1 if failed or ran == 0 else 0


if __name__ == "__main__":
    sys.exit(main())
