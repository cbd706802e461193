"""The dashboard in a real browser, against a real server with a real SQLite store.

Each test signs in through the page as a person would, makes the scheduler change
through the API as a worker would, and waits for the page to show it. A screenshot of
each step lands under the test's temporary directory.
"""

from __future__ import annotations

import re
import time
from typing import TYPE_CHECKING

import pytest

from grafos_scheduler import BackgroundServer, SchedulerClient

from .conftest import ADMIN_TOKEN, WORKER_TOKENS, Shots

if TYPE_CHECKING:
    from playwright.sync_api import Page

pytestmark = pytest.mark.usefixtures("playwright")


def sign_in(page: Page, server: BackgroundServer, token: str) -> None:
    page.goto(f"{server.url}/ui")
    page.get_by_label("Bearer token").fill(token)
    page.get_by_role("button", name="Sign in").click()


def lease_row(page: Page, lease_id: str) -> str:
    return f'#leases tr[data-lease-id="{lease_id}"]'


def seconds_shown(text: str) -> float:
    match = re.fullmatch(r"(\d+(?:\.\d+)?) s", text.strip())
    assert match, f"not a countdown in seconds: {text!r}"
    return float(match.group(1))


def test_admin_sees_a_lease_appear_when_a_worker_acquires(
    page: Page, server: BackgroundServer, alice: SchedulerClient, shots: Shots
) -> None:
    console: list[str] = []
    page.on("console", lambda message: console.append(message.text))
    requested: list[str] = []
    page.on("request", lambda request: requested.append(request.url))

    sign_in(page, server, ADMIN_TOKEN)
    page.locator("#whoami", has_text="Signed in as admin (admin)").wait_for()
    page.locator("#capacity-summary", has_text="0 of 4 slots used").wait_for()
    page.locator("#leases", has_text="No active lease.").wait_for()
    # GET /v1/tickets exists now (issue 12): an empty queue, not a missing route.
    page.locator("#tickets", has_text="No ticket is waiting.").wait_for()
    shots("admin-signed-in")

    started = time.monotonic()
    granted = alice.acquire("ingest-eu", slots=3, ttl=60, priority=5)
    assert granted.lease is not None
    row = page.locator(lease_row(page, granted.lease.lease_id))
    row.wait_for(timeout=3000)
    seen_after = time.monotonic() - started
    assert seen_after < 2.0, f"the lease took {seen_after:.2f} s to appear"
    assert row.locator("td").nth(0).inner_text() == "ingest-eu"
    assert row.locator("td").nth(1).inner_text() == "alice"
    assert row.locator("td").nth(3).inner_text() == str(granted.lease.fencing_token)
    assert row.locator("td").nth(4).inner_text() == "active"
    page.locator("#leases caption", has_text="Priority 5: 1 lease, 3 slots").wait_for()
    page.locator("#capacity-summary", has_text="3 of 4 slots used, 1 free").wait_for()
    page.locator('#audit-table tr[data-kind="grant"]').wait_for()
    page.locator("#rates-summary", has_text="1 grant and 0 preemptions").wait_for()
    page.locator("#audit-verify", has_text="Verification passes").wait_for()
    head = admin_head(server)
    page.wait_for_function(
        "expected => document.getElementById('audit-head').value === expected", arg=head
    )
    shots("lease-appeared")

    page.context.grant_permissions(["clipboard-read", "clipboard-write"])
    page.get_by_role("button", name="Copy head").click()
    page.locator("#outcome", has_text="Copied the audit head").wait_for()
    assert page.evaluate("navigator.clipboard.readText()") == head

    # The token stays in this tab's sessionStorage and the Authorization header only.
    assert page.evaluate("sessionStorage.getItem('grafos.dashboard.token')") == ADMIN_TOKEN
    assert not any(ADMIN_TOKEN in url for url in requested)
    assert not any(ADMIN_TOKEN in text for text in console)
    assert ADMIN_TOKEN not in page.url
    # A reload keeps the session (same tab); signing out forgets the token.
    page.reload()
    page.locator(lease_row(page, granted.lease.lease_id)).wait_for()
    page.get_by_role("button", name="Sign out").click()
    page.get_by_role("alert").filter(has_text="Signed out.").wait_for()
    assert page.evaluate("sessionStorage.getItem('grafos.dashboard.token')") is None
    assert page.locator("#dashboard").is_hidden()


def admin_head(server: BackgroundServer) -> str:
    with SchedulerClient(server.url, ADMIN_TOKEN) as admin:
        head = admin.audit_head()
    return f"{head.seq}:{head.hash}"


def test_preempt_from_the_page_waits_for_the_flush_then_ends_the_lease(
    page: Page, server: BackgroundServer, alice: SchedulerClient, shots: Shots
) -> None:
    granted = alice.acquire("nightly-etl", slots=2, ttl=60, priority=1)
    assert granted.lease is not None
    lease = granted.lease
    # The worker reports a checkpoint flush in flight: the lease is marked.
    alice.renew(lease.lease_id, lease.fencing_token, ["checkpoint_in_progress"])

    sign_in(page, server, ADMIN_TOKEN)
    row = page.locator(lease_row(page, lease.lease_id))
    row.locator(".badge.flush", has_text="flush in progress").wait_for()
    shots("flush-in-progress")

    row.get_by_role("button", name=re.compile("^Preempt lease")).click()
    dialog = page.get_by_role("dialog")
    dialog.get_by_label("Cause (recorded in the audit log)").fill("room for the urgent report")
    shots("confirm-preempt")
    dialog.get_by_role("button", name="Preempt").click()
    page.locator("#outcome", has_text="deferred by checkpoint_in_progress").wait_for()

    pending = page.locator(f'#preemptions-table tr[data-lease-id="{lease.lease_id}"]')
    pending.wait_for()
    assert "room for the urgent report" in pending.inner_text()
    assert "checkpoint in progress" in pending.inner_text()
    first = seconds_shown(pending.locator(".countdown").inner_text())
    assert 25.0 < first <= 30.0
    page.wait_for_timeout(1200)
    second = seconds_shown(pending.locator(".countdown").inner_text())
    assert 0.8 < first - second < 2.5, f"the countdown went from {first} to {second}"
    shots("countdown")

    # The flush completes: the deferred preemption is carried out at once.
    alice.renew(lease.lease_id, lease.fencing_token, [])
    row.wait_for(state="detached", timeout=3000)
    ended = page.locator(f'#ended-table tr[data-lease-id="{lease.lease_id}"]')
    ended.wait_for()
    assert "preempted" in ended.inner_text()
    executed = page.locator('#audit-table tr[data-kind="preemption_executed"]')
    executed.wait_for()
    assert "nightly-etl" in executed.inner_text()
    assert "room for the urgent report" in executed.inner_text()
    page.locator("#preemptions", has_text="No preemption is waiting.").wait_for()
    page.locator("#rates-summary", has_text="1 preemption").wait_for()
    shots("lease-ended")


def test_a_worker_sees_only_its_own_leases(
    page: Page,
    server: BackgroundServer,
    alice: SchedulerClient,
    bob: SchedulerClient,
    shots: Shots,
) -> None:
    mine = bob.acquire("bob-job", slots=1, ttl=60)
    theirs = alice.acquire("alice-job", slots=1, ttl=60)
    assert mine.lease is not None
    assert theirs.lease is not None

    sign_in(page, server, WORKER_TOKENS["bob"])
    page.locator("#whoami", has_text="Signed in as worker bob").wait_for()
    page.locator(lease_row(page, mine.lease.lease_id)).wait_for()
    page.locator("#capacity-summary", has_text="Your leases hold 1 slot.").wait_for()
    # A new lease of bob's appears too; alice's never does.
    later = bob.acquire("bob-later", slots=1, ttl=60)
    assert later.lease is not None
    page.locator(lease_row(page, later.lease.lease_id)).wait_for()
    assert page.locator("#leases tr[data-lease-id]").count() == 2
    assert page.locator(lease_row(page, theirs.lease.lease_id)).count() == 0
    assert "alice" not in page.locator("#leases").inner_text()
    assert page.get_by_role("button", name=re.compile("^Preempt")).count() == 0
    page.locator("#audit-verify", has_text="sign in as the admin").wait_for()
    shots("worker-view")


def test_a_wrong_token_gives_a_clear_message(
    page: Page, server: BackgroundServer, shots: Shots
) -> None:
    sign_in(page, server, "not-a-token-anyone-has")
    error = page.get_by_role("alert").filter(has_text="not accepted")
    error.wait_for()
    assert "401" in error.inner_text()
    assert page.locator("#dashboard").is_hidden()
    assert page.evaluate("sessionStorage.getItem('grafos.dashboard.token')") is None
    assert "not-a-token" not in page.url
    shots("wrong-token")

    # An empty token is refused on the page, before anything is sent.
    page.get_by_label("Bearer token").fill("")
    page.get_by_role("button", name="Sign in").click()
    page.get_by_role("alert").filter(has_text="Enter a bearer token").wait_for()


def test_keyboard_only_fence_with_confirmation_and_hold_outcome(
    page: Page, server: BackgroundServer, alice: SchedulerClient, shots: Shots
) -> None:
    granted = alice.acquire("kbd-job", slots=1, ttl=60)
    assert granted.lease is not None
    lease_id = granted.lease.lease_id

    page.goto(f"{server.url}/ui")
    # The page opens with the token field focused; Tab leads on to the sign-in button.
    page.wait_for_function("document.activeElement.id === 'token'")
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.id") == "signin-submit"
    page.keyboard.press("Shift+Tab")
    page.keyboard.type(ADMIN_TOKEN)
    page.keyboard.press("Enter")
    row = page.locator(lease_row(page, lease_id))
    row.wait_for()

    # Hold: the page calls POST /v1/leases/{id}/holds and shows whatever the API says.
    row.get_by_role("button", name=re.compile("^Hold lease")).focus()
    page.keyboard.press("Enter")
    page.get_by_label("Reason for the hold").fill("investigating")
    page.keyboard.press("Enter")
    outcome = page.locator("#outcome")
    outcome.filter(has_text=re.compile("Hold set on kbd-job|no hold routes yet")).wait_for()
    shots("hold-outcome")

    # Escape cancels a confirmation: nothing is sent, the lease stays.
    row.get_by_role("button", name=re.compile("^Fence lease")).focus()
    page.keyboard.press("Enter")
    page.get_by_role("dialog").wait_for()
    page.keyboard.press("Escape")
    page.locator("#outcome", has_text="Cancelled: nothing was sent.").wait_for()
    assert alice.get(lease_id).state == "active"

    row.get_by_role("button", name=re.compile("^Fence lease")).focus()
    page.keyboard.press("Enter")
    dialog = page.get_by_role("dialog")
    dialog.get_by_role("button", name="Fence").focus()
    page.keyboard.press("Enter")
    page.locator("#outcome", has_text="Lease of kbd-job is now fenced.").wait_for()
    row.wait_for(state="detached")
    assert alice.get(lease_id).state == "fenced"
    shots("fenced")
