"""The catalog page in a real headless Chromium (Debian's, driven by Playwright): starts
`busway up` on free loopback ports, signs in, follows the seed's demo through the page (register
an event type, see its version and endpoint, add a version and diff it, subscribe, see the
deployment and the deliveries, redrive a dead letter) and takes screenshots on the way: into
docs/screenshots/ (the README's) when BUSWAY_SCREENSHOTS=docs, else into a temporary folder, so a
test run leaves the tree as it was.

Usage: catalog_test.py PATH_TO_BUSWAY_BINARY
"""

import http.server
import json
import os
import pathlib
import secrets
import socket
import subprocess
import sys
import tempfile
import threading
import time
import unittest
import urllib.error
import urllib.request

from playwright.sync_api import expect, sync_playwright

ROOT = pathlib.Path(__file__).resolve().parents[2]
SHOTS = (
    ROOT / "docs" / "screenshots"
    if os.environ.get("BUSWAY_SCREENSHOTS") == "docs"
    else pathlib.Path(tempfile.mkdtemp(prefix="busway-screenshots-"))
)
CHROMIUM = os.environ.get("BUSWAY_CHROMIUM", "/usr/bin/chromium")
BUSWAY = sys.argv.pop(1) if len(sys.argv) > 1 else str(ROOT / "target" / "debug" / "busway")
WAIT_MS = 15_000

SEED_DATA = {
    "type": "object",
    "properties": {
        "dest_postal_code": {"type": "string"},
        "dest_house": {"type": "integer"},
        "parcel_weight": {"type": "number"},
    },
    "required": ["dest_postal_code", "dest_house", "parcel_weight"],
}
V2_DATA = {
    "type": "object",
    "properties": {**SEED_DATA["properties"], "scanner": {"type": "string"}},
    "required": SEED_DATA["required"] + ["scanner"],
}


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Consumer(http.server.ThreadingHTTPServer):
    """A webhook target on loopback that answers `status` and counts what it took; a GET gets
    `page`, as another site on this host would serve it."""

    def __init__(self):
        self.status = 200
        self.received = []
        self.page = ""
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                body = outer.page.encode()
                self.send_response(200)
                self.send_header("content-type", "text/html")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self):
                length = int(self.headers.get("content-length", 0))
                body = self.rfile.read(length)
                if outer.status == 200:
                    outer.received.append(json.loads(body))
                self.send_response(outer.status)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        super().__init__(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.serve_forever, daemon=True).start()

    def url(self):
        return f"http://127.0.0.1:{self.server_address[1]}/hook"


class Catalog(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.dir = tempfile.TemporaryDirectory()
        cls.admin = "bwk_ui_" + secrets.token_hex(32)
        cls.portal = f"http://127.0.0.1:{free_port()}"
        cls.broker = f"http://127.0.0.1:{free_port()}"
        cls.log = open(pathlib.Path(cls.dir.name) / "busway.log", "wb")
        cls.busway = subprocess.Popen(
            [BUSWAY, "up", "--data-dir", cls.dir.name,
             "--portal-addr", cls.portal.removeprefix("http://"),
             "--broker-addr", cls.broker.removeprefix("http://")],
            env={**os.environ, "BUSWAY_ADMIN_KEY": cls.admin},
            stdout=cls.log, stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(cls.portal + "/healthz", timeout=1):
                    break
            except OSError:
                if cls.busway.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"busway did not start: {cls.output()}")
                time.sleep(0.1)
        cls.good, cls.bad = Consumer(), Consumer()
        cls.bad.status = 500
        cls.playwright = sync_playwright().start()
        cls.browser = cls.playwright.chromium.launch(executable_path=CHROMIUM, headless=True)
        SHOTS.mkdir(parents=True, exist_ok=True)

    @classmethod
    def tearDownClass(cls):
        cls.browser.close()
        cls.playwright.stop()
        cls.busway.terminate()
        cls.busway.wait(timeout=10)
        cls.log.close()
        for consumer in (cls.good, cls.bad):
            consumer.shutdown()
            consumer.server_close()
        cls.dir.cleanup()

    @classmethod
    def output(cls):
        cls.log.flush()
        return (pathlib.Path(cls.dir.name) / "busway.log").read_text(errors="replace")[-4000:]

    def call(self, method, url, body=None, key=None):
        """An API call with an Authorization header, as scripts make them."""
        request = urllib.request.Request(url, method=method, data=None if body is None else json.dumps(body).encode())
        request.add_header("content-type", "application/json")
        if key:
            request.add_header("authorization", f"Bearer {key}")
        try:
            with urllib.request.urlopen(request, timeout=10) as r:
                text = r.read()
                return r.status, json.loads(text) if text else None
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read() or b"null")

    def shot(self, page, name):
        path = SHOTS / f"{name}.png"
        page.screenshot(path=str(path), full_page=True)
        self.assertGreater(path.stat().st_size, 0, path)

    def refresh_until(self, page, what, expected):
        """Presses Refresh until `what` (a locator) has the text `expected`."""
        deadline = time.monotonic() + WAIT_MS / 1000
        while True:
            try:
                expect(what).to_have_text(expected, timeout=500)
                return
            except AssertionError:
                if time.monotonic() > deadline:
                    raise
                page.get_by_role("button", name="Refresh").click()

    def test_the_seed_demo_through_the_catalog(self):
        context = self.browser.new_context(viewport={"width": 1200, "height": 900})
        page = context.new_page()
        page.goto(self.portal + "/ui")

        # Sign in: the key goes into an HttpOnly, SameSite=Strict cookie, never the URL.
        key_field = page.get_by_label("API key")
        expect(key_field).to_be_focused()
        key_field.fill("bwk_" + "0" * 64)
        page.get_by_role("button", name="Sign in").click()
        expect(page.get_by_role("status")).to_have_text("That key is unknown, revoked or expired.")
        key_field.fill(self.admin)
        key_field.press("Enter")
        expect(page.get_by_text("Signed in: platform-admin")).to_be_visible()
        cookie = next(c for c in context.cookies() if c["name"] == "busway_session")
        self.assertTrue(cookie["httpOnly"])
        self.assertEqual(cookie["sameSite"], "Strict")
        self.assertEqual(page.evaluate("document.cookie"), "", "the page's script cannot read the key")
        self.assertNotIn(self.admin, page.url)

        # 1. Register the seed's event type with the form.
        expect(page.get_by_role("heading", name="Event types", level=2)).to_be_focused()
        page.get_by_label("Application").fill("demo")
        page.get_by_label("Event type", exact=True).fill("scanned_parcel")
        page.get_by_label("Description").fill("Scanned parcel on the workshop")
        page.get_by_label("Data schema (JSON Schema draft-04)").fill(json.dumps(SEED_DATA, indent=2))
        page.get_by_role("button", name="Register").click()
        expect(page.get_by_role("heading", name="Event type scanned_parcel")).to_be_visible()
        expect(page.get_by_role("heading", name="Version 1")).to_be_visible()
        expect(page.get_by_text(f"POST {self.broker}/scanned_parcel/1")).to_be_visible()
        page.get_by_text("Schema of version 1").click()
        expect(page.locator("pre").first).to_contain_text("dest_postal_code")

        # 2. Its deployment, with the status timeline, once it succeeded.
        deadline = time.monotonic() + WAIT_MS / 1000
        while True:
            page.goto(self.portal + "/ui#/deployments")
            summary = page.locator("summary").first
            expect(summary).to_contain_text("scanned_parcel")
            if "SUCCEEDED" in summary.inner_text() or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        expect(summary).to_contain_text("SUCCEEDED")
        summary.focus()
        page.keyboard.press("Enter")  # a keyboard opens the details
        timeline = page.locator("ol.timeline").first
        for status in ["PENDING", "VALIDATING", "BUILDING", "SUCCEEDED"]:
            expect(timeline).to_contain_text(status)
        expect(page.get_by_role("table", name="Build phases").first).to_be_visible()

        # 5. A second version, and the diff between the two.
        page.goto(self.portal + "/ui#/events/scanned_parcel")
        page.get_by_label("Description").fill("with the scanner id")
        page.get_by_label("Data schema (JSON Schema draft-04)").fill(json.dumps(V2_DATA, indent=2))
        page.get_by_role("button", name="Add version").click()
        expect(page.get_by_role("heading", name="Version 2")).to_be_visible()
        expect(page.get_by_text(f"POST {self.broker}/scanned_parcel/2")).to_be_visible()
        page.get_by_label("From version").select_option("1")
        page.get_by_label("To version").select_option("2")
        page.get_by_role("button", name="Show diff").click()
        diff = page.get_by_label("Schema diff")
        expect(diff).to_contain_text('+         "scanner": {')
        expect(diff.locator("span.add").first).to_be_visible()
        self.shot(page, "event-type")

        # 3. Subscribe target unit u2 with the form (HTTPS to a consumer on loopback).
        page.get_by_label("Version", exact=True).select_option("1")
        page.get_by_label("Target unit").fill("u2")
        page.get_by_label("Connection type").select_option("HTTPS")
        page.get_by_label("Connection string").fill(self.good.url())
        page.get_by_role("button", name="Subscribe").click()
        expect(page.get_by_role("heading", name="Subscription ")).to_be_visible()
        expect(page.get_by_role("status")).to_contain_text("signing secret, shown once: whsec_")
        good_id = page.url.rsplit("/", 1)[1]

        # A script with an Authorization header drives the same host: a subscription whose
        # target fails, with no retries, so its events go straight to the dead letters.
        status, bad = self.call("POST", self.portal + "/subscriptions", {
            "event_type": "scanned_parcel", "version": "1", "target_unit": "u2",
            "connection_type": "HTTPS", "connection_string": self.bad.url(),
            "retry_policy": {"maximum_retry_attempts": 0, "maximum_event_age_seconds": 3600},
        }, key=self.admin)
        self.assertEqual(status, 201, bad)
        for sub in (good_id, bad["id"]):
            deadline = time.monotonic() + WAIT_MS / 1000
            while self.call("GET", f"{self.portal}/subscriptions/{sub}", key=self.admin)[1]["provisioning"]["status"] != "LIVE":
                self.assertLess(time.monotonic(), deadline, f"subscription {sub} never went live")
                time.sleep(0.1)

        # 4. Publish two events to version 1 on the broker, with a producer key of its application
        # (a platform-admin key may not publish).
        status, producer = self.call("POST", self.portal + "/keys", {
            "team": "logistics", "role": "producer", "application": "demo",
        }, key=self.admin)
        self.assertEqual(status, 201, producer)
        published = []
        for _ in range(2):
            status, body = self.call("POST", self.broker + "/scanned_parcel/1", {
                "metadata": {"event_attributes": {"source": "scanner-17", "target": "u2"}},
                "data": {"dest_postal_code": "1234AB", "dest_house": 7, "parcel_weight": 1.5},
            }, key=producer["key"])
            self.assertEqual(status, 200, body)
            published.append(body["event_id"])

        # The subscriptions per target unit, then the good one's delivery health.
        page.goto(self.portal + "/ui#/subscriptions")
        unit = page.get_by_role("table", name="Subscriptions of u2")
        expect(unit).to_contain_text(good_id)
        expect(unit).to_contain_text("HTTPS")
        page.get_by_role("link", name=good_id).click()
        health = page.locator("section", has=page.get_by_role("heading", name="Delivery health"))
        self.refresh_until(page, health.locator("dt:text-is('Delivered') + dd"), "2")
        expect(health.locator("dt:text-is('Lag (events)') + dd")).to_have_text("0")
        expect(health.locator("dt:text-is('Last error') + dd")).to_have_text("none")
        self.shot(page, "subscription")
        self.assertEqual(len(self.good.received), 2)

        # The failing one: its dead letters, then a redrive once the consumer recovered.
        page.goto(f"{self.portal}/ui#/subscriptions/{bad['id']}")
        health = page.locator("section", has=page.get_by_role("heading", name="Delivery health"))
        self.refresh_until(page, health.locator("dt:text-is('Dead-lettered') + dd"), "2")
        expect(health.locator("dt:text-is('Last error') + dd")).to_contain_text("500")
        letters = page.get_by_role("table", name="2 dead letter(s)")
        expect(letters).to_be_visible()
        for event_id in published:  # the ids the producer was answered, as the log names them
            expect(letters).to_contain_text(event_id)
        self.shot(page, "dead-letters")
        self.bad.status = 200
        page.get_by_role("button", name="Redrive dead letters").click()
        expect(page.get_by_role("status")).to_have_text(f"Redriving 2 dead letter(s) of {bad['id']}.")
        self.refresh_until(page, health.locator("dt:text-is('Delivered') + dd"), "2")
        expect(page.get_by_role("table", name="0 dead letter(s)")).to_be_visible()

        # Every deployment of the demo, the newest (the failing subscription's) opened.
        page.get_by_role("link", name="Deployments").click()
        expect(page.locator("summary")).to_have_count(4)
        for summary in page.locator("summary").all():
            expect(summary).to_contain_text("SUCCEEDED")
        page.locator("summary").first.click()
        expect(page.locator("ol.timeline").first).to_contain_text("BUILDING")
        self.shot(page, "deployments")

        # Signing out clears the cookie: the API answers 401 again.
        page.get_by_role("button", name="Sign out").click()
        expect(page.get_by_label("API key")).to_be_visible()
        self.assertFalse([c for c in context.cookies() if c["name"] == "busway_session"])
        context.close()

    def test_the_whole_list_is_shown_past_a_page(self):
        # Runs after the seed demo (tests run in name order), whose counts it would change.
        for n in range(101):
            status, body = self.call("POST", self.portal + "/events", {
                "application": "bulk", "event_type": f"bulk_{n:03}", "description": "one of many",
                "connection_type": "HTTPS", "data": {"type": "object"},
            }, key=self.admin)
            self.assertEqual(status, 201, body)
        context = self.browser.new_context()
        page = context.new_page()
        page.goto(self.portal + "/ui")
        page.get_by_label("API key").fill(self.admin)
        page.get_by_role("button", name="Sign in").click()
        table = page.get_by_role("table", name="Registered event types")
        expect(table.get_by_role("link", name="bulk_100")).to_be_visible()
        expect(table.get_by_role("link", name="bulk_000")).to_be_visible()

        # A deleted version says so, and is not offered to subscribe to.
        status, body = self.call("PUT", self.portal + "/events/bulk_000",
                                 {"description": "two", "data": {"type": "object", "required": ["a"]}}, key=self.admin)
        self.assertEqual(status, 201, body)
        status, body = self.call("DELETE", self.portal + "/events/bulk_000/versions/1", key=self.admin)
        self.assertIn(status, (200, 202, 204), body)
        page.goto(self.portal + "/ui#/events/bulk_000")
        expect(page.get_by_role("heading", name="Version 1 (deleted)")).to_be_visible()
        expect(page.get_by_label("Version", exact=True).locator("option")).to_have_text(["2"])
        context.close()

    def test_a_page_of_another_port_cannot_act_with_the_session(self):
        # Another port of this host is the same site, so SameSite=Strict sends the cookie; a
        # text/plain POST needs no preflight. The portal must still refuse it.
        context = self.browser.new_context()
        page = context.new_page()
        page.goto(self.portal + "/ui")
        page.get_by_label("API key").fill(self.admin)
        page.get_by_role("button", name="Sign in").click()
        expect(page.get_by_text("Signed in: platform-admin")).to_be_visible()
        body = json.dumps({"application": "intruder", "event_type": "forged_event",
                           "description": "made by another page", "connection_type": "HTTPS",
                           "data": {"type": "object"}})
        self.good.page = f"""<script>
            fetch({json.dumps(self.portal + "/events")}, {{method: "POST", credentials: "include",
                mode: "no-cors", headers: {{"content-type": "text/plain"}}, body: {json.dumps(body)}}})
              .then(() => document.title = "sent", () => document.title = "failed");
            </script>"""
        attacker = context.new_page()
        attacker.goto(f"http://127.0.0.1:{self.good.server_address[1]}/")
        expect(attacker).to_have_title("sent")
        self.assertEqual(self.call("GET", self.portal + "/events/forged_event", key=self.admin)[0], 404)
        # The session still works for the page itself.
        page.get_by_role("link", name="Deployments").click()
        expect(page.get_by_text("Signed in: platform-admin")).to_be_visible()
        context.close()

    def test_the_page_works_offline_and_scripts_use_the_authorization_header(self):
        context = self.browser.new_context()
        page = context.new_page()
        outside = []
        page.on("request", lambda r: outside.append(r.url) if not r.url.startswith(self.portal) else None)
        page.goto(self.portal + "/ui")
        expect(page.get_by_label("API key")).to_be_visible()
        self.assertEqual(outside, [], "every asset comes from the binary")
        # The keyboard reaches everything in order: the key field has focus, the skip link is
        # before it and the sign-in button after it.
        expect(page.get_by_label("API key")).to_be_focused()
        page.keyboard.press("Shift+Tab")
        expect(page.get_by_role("link", name="Skip to content")).to_be_focused()
        page.keyboard.press("Tab")
        page.keyboard.press("Tab")
        expect(page.get_by_role("button", name="Sign in")).to_be_focused()
        context.close()

        # Only JSON signs in, so no form of another site can sign a visitor in.
        form = urllib.request.Request(self.portal + "/ui/session", method="POST",
                                      data=json.dumps({"key": self.admin}).encode(),
                                      headers={"content-type": "text/plain"})
        with self.assertRaises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(form, timeout=10)
        self.assertEqual(refused.exception.code, 415)
        self.assertIsNone(refused.exception.headers.get("set-cookie"))
        refused.exception.close()

        self.assertEqual(self.call("GET", self.portal + "/ui/session")[0], 401)
        status, me = self.call("GET", self.portal + "/ui/session", key=self.admin)
        self.assertEqual((status, me["role"]), (200, "platform-admin"))


if __name__ == "__main__":
    unittest.main(verbosity=2)
