"""Smoke tests for the real Request Tracker 5 harness (tests/realhosts/rt_server.py).

They also pin down the RT behaviour the connector relies on (RT 5.0.3, Debian 12):

Answer shapes
* ``PUT /REST/2.0/ticket/N`` answers 200 with a JSON *list* of change messages, e.g.
  ``["Ticket 7: Queue changed from General to BPSM Reactive"]``; ``[]`` when nothing
  changed.  A refused change is *also* 200, with ``["Ticket 7: Permission Denied"]`` in the
  list: the connector must read the messages, not only the status.  Without SeeQueue the
  message names queues by number: ``"Queue changed from #1 to #3"``.
* ``POST /REST/2.0/ticket/N/comment`` (``Content-Type: text/plain``) answers 201 with
  ``["Comments added"]``; 400 ``{"message": "Permission Denied"}`` when not allowed.
* ``POST /REST/2.0/ticket`` answers 201 ``{"id": "7", "type": "ticket", "_url": ...}`` (id is
  a string); ``POST /user`` answers with the *name* as ``id``.
* Link objects everywhere: ``{"id": "1", "type": "queue", "_url": ".../queue/1"}``, the id a
  string; ``fields[Queue]=Name`` adds ``Name`` to it in searches.
* ``GET /REST/2.0/`` is 404; ``GET /REST/2.0/rt`` gives ``{"Version": ...}``.

Searches (``GET /REST/2.0/tickets?query=<TicketSQL>``)
* keys ``count`` (items on this page), ``page`` (1-based), ``per_page`` (default 20, capped
  at 100), ``total``, ``pages``, ``items``; ``next_page``/``prev_page`` (full URLs) only
  when there is such a page.  ``pages`` is a JSON number that comes out as ``0.0`` for an
  empty result.  ``total``/``pages`` are null, and there is no ``next_page``, when RT can't
  count what the user may see (ticket ``history`` for a user without *global*
  ShowTicket; searches when ``$UseSQLForACLChecks`` is off): page on until a short page.

Dates and time zones
* The database stores UTC.  The API prints every date in UTC as ``2026-11-24T17:37:19Z``,
  whatever the user's or RT's time zone.  Unset dates print as ``1970-01-01T00:00:00Z``.
* TicketSQL reads a date value in the *API user's* time zone: the user's Timezone
  preference, else RT's ``$Timezone`` (Debian: /etc/timezone), else UTC.  A zone in the
  value (``UTC``, ``+0000``, ``-0500``) does not help: RT honours it and then shifts by
  the user's offset once more.  ``2026-11-24T17:37:19Z`` is worse: the time of day is
  dropped (midnight of that date in the user's zone).  So a poller must either give its
  RT user ``Timezone = UTC`` (then ``LastUpdated > 'YYYY-MM-DD HH:MM:SS'`` in UTC is
  exact) or send local times of that zone.  With UTC values and RT in e.g.
  America/New_York it would silently miss updates.
* Comparisons are to the second, ``>`` is strict: poll with ``>=`` the last seen
  LastUpdated and drop already-seen (id, LastUpdated) pairs.
* Writing dates (``PUT {"Due": ...}``): RT 5.0.3 stores the string as given and reads it
  back as UTC ``YYYY-MM-DD HH:MM:SS``.  Send exactly that (UTC, no zone).
  ``"2026-12-02T10:00:00Z"`` is accepted with a change message but then reads back as
  unset (``1970-01-01T00:00:00Z``).

Least privilege (connector user, rights per queue)
* read a ticket / find it by search: ShowTicket on its queue;
* move it from queue A to queue B: ModifyTicket on A and CreateTicket on B;
* comment: CommentOnTicket (or ModifyTicket) on the queue it is in at that moment;
* read comments' text in the history: ShowTicketComments;
* SeeQueue only to read queue records / names.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import requests

from . import rt_server as rt_module
from .rt_server import RTAPIError, RTInstallError, RTServer, TokenAuth

Auth = tuple[str, str] | TokenAuth | None


def utc(value: str) -> datetime:
    """Parse RT's ``2026-11-24T17:37:19Z``."""
    assert value.endswith("Z"), value
    return datetime.strptime(value, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)


def naive(moment: datetime, zone: str = "UTC") -> str:
    """``YYYY-MM-DD HH:MM:SS`` of ``moment`` as a wall clock in ``zone``."""
    return moment.astimezone(ZoneInfo(zone)).strftime("%Y-%m-%d %H:%M:%S")


def search(rt: RTServer, query: str, *, auth: Auth = None, **params: str) -> dict[str, Any]:
    result: dict[str, Any] = rt.get_json("tickets", auth=auth, params={"query": query, **params})
    return result


def db_row(rt: RTServer, sql: str, *args: Any) -> tuple[Any, ...]:
    con = sqlite3.connect(f"file:{rt.db_path}?mode=ro", uri=True)
    try:
        row = con.execute(sql, args).fetchone()
    finally:
        con.close()
    assert row is not None
    return tuple(row)


def test_server_is_isolated_and_links_point_at_it(rt_server: RTServer) -> None:
    rt = rt_server
    assert rt.running
    assert rt.get_json("rt")["Version"].startswith("5.0.")
    assert rt.api("GET", "", expected=(404,)).json() == {"message": "Not Found"}
    assert requests.get(f"{rt.rest_url}/rt", timeout=10).status_code == 401

    general = rt.get_json("queue/General")
    assert general["id"] == 1
    assert all(link["_url"].startswith(f"{rt.url}/REST/2.0/") for link in general["_hyperlinks"])
    # Own database and config, nothing from /etc/request-tracker5; cheap bcrypt for root.
    assert rt.tmpdir is not None and str(rt.db_path).startswith(str(rt.tmpdir))
    (password,) = db_row(rt, "SELECT Password FROM Users WHERE Name = 'root'")
    assert password.startswith("!bcrypt!04!")


def test_route_ticket_between_queues(rt_server: RTServer) -> None:
    rt = rt_server
    reactive = rt.create_queue("BPSM Reactive")
    relation = rt.create_queue("BPSM Relation")
    assert reactive != relation
    assert rt.create_queue("BPSM Reactive") == reactive  # idempotent
    assert rt.queue_id("BPSM Reactive") == reactive

    tid = rt.create_ticket("General", "Printer on fire", "Hello,\nmy printer is on fire.\n")
    ticket = rt.get_ticket(tid)
    assert ticket["id"] == tid
    assert ticket["Queue"] == {"id": "1", "type": "queue", "_url": f"{rt.rest_url}/queue/1"}
    assert [r["id"] for r in ticket["Requestor"]] == ["user@example.com"]
    assert ticket["Status"] == "new"
    assert ticket["Due"] == "1970-01-01T00:00:00Z"  # "not set"

    # Move: 200 and a list of messages; a second identical PUT changes nothing.
    moved = rt.api("PUT", f"ticket/{tid}", json={"Queue": "BPSM Reactive"})
    assert moved.json() == [f"Ticket {tid}: Queue changed from General to BPSM Reactive"]
    assert rt.api("PUT", f"ticket/{tid}", json={"Queue": "BPSM Reactive"}).json() == []
    assert rt.get_ticket(tid)["Queue"]["id"] == str(reactive)

    # Comment, as the connector does.
    note = "Routed to BPSM Reactive by bpsm-connector.\nConfidence: 0.93"
    commented = rt.api(
        "POST",
        f"ticket/{tid}/comment",
        data=note.encode(),
        headers={"Content-Type": "text/plain"},
        expected=(201,),
    )
    assert commented.json() == ["Comments added"]

    # Due: UTC "YYYY-MM-DD HH:MM:SS" in, "...T...Z" out.
    due = rt.api("PUT", f"ticket/{tid}", json={"Due": "2026-12-01 10:00:00"}).json()
    assert due == [f"Ticket {tid}: Due changed from Not set to Tue Dec 01 10:00:00 2026"]
    assert rt.get_ticket(tid)["Due"] == "2026-12-01T10:00:00Z"
    # The trap: ISO 8601 with "Z" is stored verbatim and then reads back as unset.
    trap = rt.api("PUT", f"ticket/{tid}", json={"Due": "2026-12-02T10:00:00Z"}).json()
    assert trap == [
        f"Ticket {tid}: Due changed from Tue Dec 01 10:00:00 2026 to Wed Dec 02 10:00:00 2026"
    ]
    assert db_row(rt, "SELECT Due FROM Tickets WHERE id = ?", tid) == ("2026-12-02T10:00:00Z",)
    assert rt.get_ticket(tid)["Due"] == "1970-01-01T00:00:00Z"
    rt.api("PUT", f"ticket/{tid}", json={"Due": "2026-12-01 10:00:00"})

    # History: transactions with their content.
    history = rt.ticket_history(tid)
    kinds = [(t["Type"], t["Field"]) for t in history]
    assert kinds[0] == ("Create", "")
    assert history[0]["content"] == "Hello,\nmy printer is on fire.\n"
    assert history[0]["Creator"]["id"] == "root"
    queue_change = next(t for t in history if (t["Type"], t["Field"]) == ("Set", "Queue"))
    assert (queue_change["OldValue"], queue_change["NewValue"]) == ("1", str(reactive))
    comment = next(t for t in history if t["Type"] == "Comment")
    assert comment["content"] == note
    due_changes = [t for t in history if (t["Type"], t["Field"]) == ("Set", "Due")]
    assert [(t["OldValue"], t["NewValue"]) for t in due_changes] == [
        ("1970-01-01 00:00:00", "2026-12-01 10:00:00"),
        ("2026-12-01 10:00:00", "2026-12-02T10:00:00Z"),
        ("2026-12-02T10:00:00Z", "2026-12-01 10:00:00"),
    ]
    # The autoreply to the requestor is recorded (and written to the mbox, not mailed).
    assert ("EmailRecord", "") in kinds
    assert "To: user@example.com" in rt.outgoing_mail()

    # Search by LastUpdated.  The DB holds UTC; the API prints UTC with "Z".
    last = utc(rt.get_ticket(tid)["LastUpdated"])
    assert db_row(rt, "SELECT LastUpdated FROM Tickets WHERE id = ?", tid) == (naive(last),)
    assert last >= utc(comment["Created"])  # a comment bumps LastUpdated
    fields = "Subject,Queue,LastUpdated,Created"
    in_queue = f"Queue = 'BPSM Reactive' AND id = {tid}"
    page = search(
        rt, f"{in_queue} AND LastUpdated > '{naive(last - timedelta(seconds=1))}'", fields=fields
    )
    assert set(page) == {"count", "page", "per_page", "pages", "total", "items"}
    assert (page["count"], page["page"], page["per_page"], page["total"]) == (1, 1, 20, 1)
    (item,) = page["items"]
    assert item == {
        "id": str(tid),
        "type": "ticket",
        "_url": f"{rt.rest_url}/ticket/{tid}",
        "Subject": "Printer on fire",
        "Queue": {"id": str(reactive), "type": "queue", "_url": f"{rt.rest_url}/queue/{reactive}"},
        "LastUpdated": last.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "Created": ticket["Created"],
    }
    assert search(rt, f"{in_queue} AND LastUpdated > '{naive(last)}'")["total"] == 0
    assert search(rt, f"{in_queue} AND LastUpdated >= '{naive(last)}'")["total"] == 1
    named = rt.get_json(
        "tickets", params={"query": in_queue, "fields": "Queue", "fields[Queue]": "Name"}
    )
    assert named["items"][0]["Queue"]["Name"] == "BPSM Reactive"


def test_search_paging_shape(rt_server: RTServer) -> None:
    rt = rt_server
    rt.create_queue("BPSM Paging")
    ids = [rt.create_ticket("BPSM Paging", f"paging {i}", "x") for i in range(3)]
    query = "Queue = 'BPSM Paging'"
    first = search(rt, query, per_page="2", orderby="id", order="ASC")
    assert {k: v for k, v in first.items() if k != "items"} == {
        "count": 2,
        "page": 1,
        "per_page": 2,
        "pages": 2,
        "total": 3,
        "next_page": first["next_page"],
    }
    assert (
        first["next_page"].startswith(f"{rt.rest_url}/tickets?") and "page=2" in first["next_page"]
    )
    second = rt.get_json(first["next_page"])
    assert (second["count"], second["page"], "next_page" in second) == (1, 2, False)
    assert "page=1" in second["prev_page"]
    assert [int(i["id"]) for i in first["items"] + second["items"]] == ids
    assert [i["type"] for i in first["items"]] == ["ticket", "ticket"]
    assert set(first["items"][0]) == {"id", "type", "_url"}  # no fields= -> links only

    beyond = search(rt, query, per_page="2", page="5")
    assert (beyond["count"], beyond["items"]) == (0, [])
    assert "page=2" in beyond["prev_page"]  # points back to the last page
    empty = search(rt, "Queue = 'BPSM Paging' AND Subject = 'no such subject'")
    assert (empty["count"], empty["total"], empty["items"], empty["pages"]) == (0, 0, [], 0)
    assert search(rt, query, per_page="1000")["per_page"] == 100
    assert [int(i["id"]) for i in rt.paged("tickets", {"query": query, "per_page": "1"})] == ids


def test_least_privilege_connector_with_token(rt_server: RTServer) -> None:
    rt = rt_server
    reactive = rt.create_queue("BPSM Reactive")
    rt.create_user("bpsm-connector", "connector-password-1")
    token = rt.create_auth_token("bpsm-connector", "bpsm-connector e2e")
    assert token.startswith(f"1-{rt.user_id('bpsm-connector')}-")
    conn = TokenAuth(token)
    rt.api("GET", "rt", auth=TokenAuth(token + "0"), expected=(401,))
    rt.api("GET", "rt", auth=("bpsm-connector", "connector-password-1"), expected=(200,))

    tid = rt.create_ticket("General", "VPN broken", "The VPN drops every 5 minutes.")
    rt.api("GET", f"ticket/{tid}", auth=conn, expected=(403,))
    rt.rt_admin(
        [
            {
                "op": "grant",
                "user": "bpsm-connector",
                "queues": ["General"],
                "rights": ["ShowTicket", "ModifyTicket"],
            },
            {
                "op": "grant",
                "user": "bpsm-connector",
                "queues": ["BPSM Reactive"],
                "rights": ["ShowTicket", "CommentOnTicket", "ShowTicketComments"],
            },
        ]
    )
    found = search(rt, f"Queue = 'General' AND id = {tid}", auth=conn)
    assert [int(i["id"]) for i in found["items"]] == [tid] and found["total"] == 1
    assert rt.get_ticket(tid, auth=conn)["Subject"] == "VPN broken"
    rt.api("GET", "queue/1", auth=conn, expected=(403,))  # no SeeQueue

    # Without CreateTicket on the target queue the move is refused -- with HTTP 200.
    refused = rt.api("PUT", f"ticket/{tid}", auth=conn, json={"Queue": "BPSM Reactive"})
    assert refused.json() == [f"Ticket {tid}: Permission Denied"]
    assert rt.get_ticket(tid)["Queue"]["id"] == "1"

    rt.grant_rights(["CreateTicket"], user="bpsm-connector", queues=["BPSM Reactive"])
    moved = rt.api("PUT", f"ticket/{tid}", auth=conn, json={"Queue": reactive})
    assert moved.json() == [f"Ticket {tid}: Queue changed from #1 to #{reactive}"]
    assert rt.comment(tid, "Routed by bpsm-connector", auth=conn) == ["Comments added"]

    history = rt.ticket_history(tid, auth=conn)
    # A user without a global ShowTicket gets total/pages null on history (see paged()).
    assert rt.get_json(f"ticket/{tid}/history", auth=conn)["total"] is None
    assert [t["content"] for t in history if t["Type"] == "Comment"] == ["Routed by bpsm-connector"]
    assert history[-1]["Creator"]["id"] == "bpsm-connector"

    # With only ShowTicket on the ticket's queue it may not comment (ModifyTicket alone
    # would have allowed it, as would CommentOnTicket).
    rt.revoke_rights(["ModifyTicket"], user="bpsm-connector", queues=["General"])
    rt.api("PUT", f"ticket/{tid}", json={"Queue": "General"})
    with pytest.raises(RTAPIError) as denied:
        rt.comment(tid, "not allowed", auth=conn)
    assert denied.value.status == 400
    assert json.loads(denied.value.body) == {"message": "Permission Denied"}


def test_ticket_custom_fields(rt_server: RTServer) -> None:
    rt = rt_server
    for name in ("BPSM Reactive", "BPSM Relation"):
        rt.create_queue(name)
    process = rt.create_ticket_custom_field("BPSM Process", ["BPSM Reactive", "BPSM Relation"])
    score = rt.create_ticket_custom_field(
        "BPSM Confidence", ["BPSM Reactive"], type="Select", values=["high", "low"]
    )
    assert process != score
    values = rt.get_json(f"customfield/{score}/values")["items"]
    assert sorted(v["name"] for v in values) == ["high", "low"]

    tid = rt.create_ticket(
        "BPSM Reactive", "with fields", "x", custom_fields={"BPSM Process": "Incident"}
    )
    answer = rt.api(
        "PUT",
        f"ticket/{tid}",
        json={"CustomFields": {"BPSM Process": "Change", str(score): "high"}},
    ).json()
    # One message per field, in no fixed order (a Perl hash).
    assert sorted(answer) == [
        "BPSM Confidence high added",
        "BPSM Process Incident changed to Change",
    ]
    invalid = rt.api("PUT", f"ticket/{tid}", json={"CustomFields": {"BPSM Confidence": "bogus"}})
    assert invalid.json() == ["Invalid value for custom field"]  # and HTTP 200
    cfs = {cf["name"]: cf["values"] for cf in rt.get_ticket(tid)["CustomFields"]}
    assert cfs == {"BPSM Process": ["Change"], "BPSM Confidence": ["high"]}
    found = search(rt, f"'CF.{{BPSM Process}}' = 'Change' AND id = {tid}")
    assert found["total"] == 1
    # A field that is not applied to the ticket's queue is not there, and setting it is
    # silently ignored: 200 with no message at all.
    general = rt.create_ticket("General", "no fields", "x")
    assert rt.get_ticket(general)["CustomFields"] == []
    ignored = rt.api("PUT", f"ticket/{general}", json={"CustomFields": {"BPSM Process": "Change"}})
    assert ignored.json() == []


def test_ticket_created_by_email(rt_server: RTServer) -> None:
    rt = rt_server
    rt.create_queue("BPSM Email Intake")
    with pytest.raises(RTAPIError, match="CreateTicket"):
        rt.create_ticket("BPSM Email Intake", "No rights yet", "x", "c@example.com", via="email")
    rt.grant_rights(
        ["CreateTicket", "ReplyToTicket"], group="Everyone", queues=["BPSM Email Intake"]
    )
    tid = rt.create_ticket(
        "BPSM Email Intake",
        "Cannot log in",
        "Hi,\nI cannot log in since this morning.\n",
        "carla@example.com",
        via="email",
    )
    ticket = rt.get_ticket(tid)
    assert ticket["Creator"]["id"] == "carla@example.com"
    assert [r["id"] for r in ticket["Requestor"]] == ["carla@example.com"]
    first = rt.ticket_history(tid)[0]
    assert (first["Type"], first["content"].strip()) == (
        "Create",
        "Hi,\nI cannot log in since this morning.",
    )
    user = rt.get_json("user/carla@example.com")
    assert user["Privileged"] in (0, "0")
    assert "To: carla@example.com" in rt.outgoing_mail()


def test_ticketsql_reads_dates_in_the_users_time_zone() -> None:
    """RT's $Timezone is America/New_York here; root has no Timezone preference."""
    with RTServer(timezone="America/New_York") as rt:
        zone = "America/New_York"
        tid = rt.create_ticket("General", "tz probe", "x")
        last = utc(rt.get_ticket(tid)["LastUpdated"])
        assert db_row(rt, "SELECT LastUpdated FROM Tickets WHERE id = ?", tid) == (naive(last),)
        before, at = last - timedelta(seconds=1), last

        def hits(value: str, auth: Auth = None) -> int:
            total: int = search(rt, f"id = {tid} AND LastUpdated > '{value}'", auth=auth)["total"]
            return total

        # Values are read as New York wall-clock time...
        assert (hits(naive(before, zone)), hits(naive(at, zone))) == (1, 0)
        # ...so a poller sending UTC misses the update (New York is behind UTC),
        assert hits(naive(before)) == 0
        # and an explicit zone does not help: RT honours it, then shifts by the user's
        # offset once more.  Even the right local time with the right offset misses.
        local_with_offset = naive(before, zone) + before.astimezone(ZoneInfo(zone)).strftime(" %z")
        assert [
            hits(v) for v in (naive(before) + " UTC", naive(before) + " +0000", local_with_offset)
        ] == [0, 0, 0]
        # ISO 8601 "...T...Z" loses its time of day: it means midnight (user's zone) of
        # that date, so it matches everything updated since then.
        iso_at = at.strftime("%Y-%m-%dT%H:%M:%SZ")
        midnight = datetime.combine(at.date(), datetime.min.time(), ZoneInfo(zone))
        assert hits(iso_at) == (1 if last > midnight else 0)
        # Output stays UTC whatever the zone.
        item = search(rt, f"id = {tid}", fields="LastUpdated")["items"][0]
        assert item["LastUpdated"] == last.strftime("%Y-%m-%dT%H:%M:%SZ")

        # The fix: an API user whose Timezone preference is UTC.
        rt.create_user("utc-poller", "utc-poller-pw", timezone="UTC")
        rt.grant_rights(["ShowTicket"], user="utc-poller")  # global
        poller = ("utc-poller", "utc-poller-pw")
        assert rt.get_json("user/utc-poller")["Timezone"] == "UTC"
        assert (hits(naive(before), poller), hits(naive(at), poller)) == (1, 0)
        # Per-user preference beats $Timezone the other way round as well.
        rt.create_user("kolkata", "kolkata-pw", timezone="Asia/Kolkata")
        rt.grant_rights(["ShowTicket"], user="kolkata")
        kolkata = ("kolkata", "kolkata-pw")
        assert (
            hits(naive(before, "Asia/Kolkata"), kolkata),
            hits(naive(at, "Asia/Kolkata"), kolkata),
        ) == (1, 0)

        # Writing a date does no zone conversion at all: stored and printed as UTC.
        answer = rt.api("PUT", f"ticket/{tid}", json={"Due": "2026-12-01 10:00:00"}).json()
        assert answer == [f"Ticket {tid}: Due changed from Not set to Tue Dec 01 05:00:00 2026"]
        assert rt.get_ticket(tid)["Due"] == "2026-12-01T10:00:00Z"


def test_install_without_root_fails_loudly(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(rt_module, "rt_is_installed", lambda: False)
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    with pytest.raises(RTInstallError, match="could not be installed.*needs root"):
        rt_module.ensure_rt_installed()


def test_install_reports_apt_failure(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[list[str]] = []

    def fake_apt(args: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
        calls.append(list(args))
        return subprocess.CompletedProcess(["apt-get", *args], 100, "", "E: mirror unreachable")

    monkeypatch.setattr(rt_module, "rt_is_installed", lambda: False)
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    monkeypatch.setattr(rt_module, "_apt_knows_packages", lambda: True)
    monkeypatch.setattr(rt_module, "_apt", fake_apt)
    with pytest.raises(RTInstallError, match="could not be installed(.|\n)*mirror unreachable"):
        rt_module.ensure_rt_installed()
    # apt knew the packages, so no update first; after the failed install, one update + retry
    assert [c[0] for c in calls] == ["install", "update", "install"]
