"""Request Tracker 5: polled with TicketSQL, routed through REST 2 (`/REST/2.0`).

RT 5.0 has no outgoing webhooks, so the poller asks for tickets changed in the watched
queues (`options.watch_queues`, default RT's own `General`) and the worker moves each one to
its BPSM queue, sets the service custom field and `Due`, and adds a comment (for relation
tickets, with `relation.reply`, also the answer: correspondence or a draft comment). The RT
facts this module relies on (RT 5.0.3, pinned in tests/realhosts/test_rt_harness.py):

* TicketSQL reads date values in the *API user's* time zone and ignores any zone written in
  the value, so the connector's RT user must have Timezone UTC: `poll` checks it once and
  refuses to poll otherwise (it would silently miss updates, not fail).
* Date comparisons are to the second and `>` is strict: poll with `>=` from the mark minus
  an overlap; the delivery id `rt:<id>:<LastUpdated>` lets the store drop what was seen.
  (Two changes of a ticket within one second are one delivery; routing is decided once per
  ticket anyway.)
* `PUT /ticket/N` answers 200 with a list of messages even when RT refused the change
  (`["Ticket 7: Permission Denied"]`): every answer's messages are read.
* `Due` is written as UTC `YYYY-MM-DD HH:MM:SS` (ISO with `Z` is stored and reads as unset).
* A comment posted as a `text/plain` body is stored UTF-8-encoded twice ("kø" → "kÃ¸");
  posted as JSON (`Content` + `ContentType: text/plain`) it is stored as sent.
* Links in answers (`_url`, `next_page`) are built from RT's `$WebBaseURL`, which need not be
  the address the connector calls: pages are requested by number, never by link.
* REST 2 in 5.0.3 cannot grant rights, apply custom fields to queues or make auth tokens:
  `setup` prints an RT initialdata file for `rt-setup-database` that does the first two.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from connector.events import TicketEvent
from connector.hosts.base import (
    BadPayload,
    Host,
    HostError,
    Ignored,
    WebhookRequest,
    hinted_error_text,
    parse_time,
)
from connector.hosts.rt.settings import RTOptions, RTSettings
from connector.notes import messages
from connector.text import html_to_text

log = logging.getLogger("bpsm.rt")

REST_PATH = "/REST/2.0"
DEFAULT_CONNECTOR_USER = "bpsm-connector"
TICKET_CF_TYPE = "RT::Queue-RT::Ticket"
PER_PAGE = 100  # RT caps per_page at 100
BODY_CACHE_SIZE = 2000
UNSET = "1970-01-01T00:00:00Z"  # how REST 2 prints a date that is not set

MessageKind = Literal["comment", "correspond"]  # REST 2's /ticket/N/<kind>

# Least privilege, per queue (checked against RT 5.0.3; see guide.md). ModifyTicket also
# allows commenting and replying (RT::Ticket::Comment and ::Correspond accept it), so neither
# CommentOnTicket nor ReplyToTicket is needed where ModifyTicket is granted.
WATCHED_RIGHTS = ("SeeQueue", "ShowTicket", "ShowTicketComments", "ModifyTicket")
TARGET_RIGHTS = ("SeeQueue", "ShowTicket", "ShowTicketComments", "CreateTicket", "ModifyTicket")
FIELD_RIGHTS = ("SeeCustomField", "ModifyCustomField")

# Messages in a PUT answer that mean RT refused (part of) the change; RT answers 200 anyway.
_REFUSED = re.compile(
    r"Permission Denied|does not exist|is disabled|invalid|illegal|could not|couldn't|"
    r"can't|cannot|no mapping|is incomplete|not allowed",
    re.IGNORECASE,
)


# ----- pure helpers ---------------------------------------------------------------------------


# ----- pure helpers ---------------------------------------------------------------------------


def rt_time(moment: datetime) -> str:
    """A date as RT wants it in TicketSQL and in writes: UTC `YYYY-MM-DD HH:MM:SS`."""
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


def rt_stamp(moment: datetime) -> str:
    """A date as REST 2 prints it (`2026-11-24T17:37:19Z`); the form of the stored mark."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_rt_time(value: Any) -> datetime | None:
    """REST 2's `...Z` dates; None for RT's "not set" (1970-01-01) and for garbage."""
    if value == UNSET:
        return None
    moment = parse_time(value)
    if moment is None:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def sql_quote(value: str) -> str:
    """A TicketSQL string literal."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def queues_clause(queues: Iterable[str]) -> str:
    return "(" + " OR ".join(f"Queue = {sql_quote(q)}" for q in queues) + ")"


def watch_query(queues: Iterable[str], since: datetime) -> str:
    """Active tickets of the watched queues changed at or after `since` (`>=`: `>` is strict
    to the second, so an update in the mark's own second would be lost)."""
    return (
        f"{queues_clause(queues)} AND LastUpdated >= {sql_quote(rt_time(since))} "
        "AND Status = '__Active__'"
    )


def search_params(query: str) -> dict[str, Any]:
    """A ticket search with what an event needs; the queue's name needs SeeQueue."""
    return {
        "query": query,
        "fields": "Subject,Queue,LastUpdated,Created,CustomFields",
        "fields[Queue]": "Name",
        "orderby": ["LastUpdated", "id"],
        "order": ["ASC", "ASC"],
    }


def field_value(ticket: dict[str, Any], field: str | None) -> str | None:
    """The first value of the custom field `field` in a ticket or search item read with
    its CustomFields; None when it has none (or is not read)."""
    if not field:
        return None
    for custom in ticket.get("CustomFields") or []:
        if isinstance(custom, dict) and custom.get("name") == field:
            values = custom.get("values") or []
            return str(values[0]).strip() or None if values else None
    return None


def refusals(messages: Any) -> list[str]:
    """The messages of a PUT answer that say RT refused something."""
    if not isinstance(messages, list):
        return [f"unexpected answer: {str(messages)[:200]}"]
    return [str(m) for m in messages if _REFUSED.search(str(m))]


def token_user_id(token: str) -> str | None:
    """RT auth tokens read `1-<user id>-<32 hex>` (RT::AuthToken::ParseAuthString)."""
    found = re.fullmatch(r"1-(\d+)-[0-9a-fA-F]{32}", token.strip())
    return found.group(1) if found else None


def is_utc_zone(name: str) -> bool:
    """True for zone names that never differ from UTC ('UTC', 'Etc/UTC', 'GMT', …)."""
    try:
        zone = ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return False
    probes = (datetime(2024, 1, 15, tzinfo=UTC), datetime(2024, 7, 15, tzinfo=UTC))
    return all(p.astimezone(zone).utcoffset() == timedelta(0) for p in probes)


def mail_text(markup: str) -> str:
    """Plain text of an HTML mail body, one non-empty line per block, spaces collapsed
    (connector.text's html_to_text, which is safe on hostile markup)."""
    lines = (" ".join(line.split()) for line in html_to_text(markup).splitlines())
    return "\n".join(line for line in lines if line)


def create_text(attachments: list[dict[str, Any]]) -> str:
    """The customer's text from the attachments of a ticket's Create transaction."""
    plain = [a for a in attachments if str(a.get("ContentType", "")).startswith("text/plain")]
    if plain:
        return "\n".join(str(a.get("Content") or "") for a in plain)
    html = [a for a in attachments if str(a.get("ContentType", "")).startswith("text/html")]
    return "\n".join(mail_text(str(a.get("Content") or "")) for a in html)


def queue_name(ticket: dict[str, Any]) -> str:
    """The queue name of a ticket or search item read with `fields[Queue]=Name`. Without
    SeeQueue RT sends an empty name: say so rather than treat every ticket as moved."""
    queue = ticket.get("Queue")
    name = queue.get("Name") if isinstance(queue, dict) else None
    if not name:
        where = queue.get("id") if isinstance(queue, dict) else "?"
        raise HostError(
            f"rt: cannot read the name of queue #{where} of ticket {ticket.get('id')}: "
            "the connector's RT user needs SeeQueue on the watched and BPSM queues",
            permanent=True,
        )
    return str(name)


def agent_kept_line(language: str, queue: str) -> str:
    texts = messages().get(language) or messages()["en"]
    template = str(texts.get("left_by_agent") or messages()["en"]["left_by_agent"])
    return template.format(queue=queue)


# RT answers `{"message": …}`; the hint says what the admin should check.
ERROR_HINTS = {
    401: "check BPSM_RT_TOKEN (or BPSM_RT_USER + BPSM_RT_PASSWORD)",
    403: "the connector's RT user lacks a right on this queue or object (see the RT guide)",
    404: "no such ticket, queue or user (or BPSM_RT_URL does not point at RT's base URL)",
}
rt_error_text = hinted_error_text(
    ERROR_HINTS, lambda data: data.get("message") if isinstance(data, dict) else data
)


# ----- the host -------------------------------------------------------------------------------


class RTSansIO(Host[RTSettings]):
    """RT sends no webhooks; `connector.hosts.rt.RTHost` adds the API client that polls."""

    name = "rt"
    settings_model = RTSettings
    options_model = RTOptions
    polling = True

    def parse(self, request: WebhookRequest) -> TicketEvent | Ignored:
        raise BadPayload(
            "Request Tracker 5 sends no webhooks: the connector polls RT "
            "(BPSM_RT_URL, BPSM_RT_POLL_INTERVAL); nothing is accepted at /hooks/rt"
        )


# ----- rights -----------------------------------------------------------------------------------


def _perl(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _perl_items(values: Iterable[str]) -> str:
    return ", ".join(_perl(v) for v in values)


def initialdata(user: str, options: RTOptions, queues: list[str]) -> str:
    """An RT initialdata file that grants the connector's rights and applies the service
    field to the BPSM queues. `rt-setup-database --action insert` runs its @Final code with
    RT's own libraries; every step checks first, so running it again changes nothing."""
    grants: list[tuple[str, tuple[str, ...]]] = [(q, WATCHED_RIGHTS) for q in options.watch_queues]
    grants += [(q, TARGET_RIGHTS) for q in queues if q not in options.watch_queues]
    grant_lines = "\n".join(f"    [{_perl(q)}, [{_perl_items(r)}]]," for q, r in grants)
    field = options.service_field or ""
    return f"""# bpsm-connector: rights of the RT user {user} (generated by `bpsm setup rt`).
# Run on the RT server: rt-setup-database-5 --action insert --skip-create --datafile THIS_FILE
my $user_name = {_perl(user)};
my @queue_rights = (
{grant_lines}
);
my $field_name = {_perl(field)};
my @field_rights = ({_perl_items(FIELD_RIGHTS)});
my @field_queues = ({_perl_items(queues)});

@Final = (sub {{
    my $user = RT::User->new(RT->SystemUser);
    $user->Load($user_name);
    die "bpsm: no RT user '$user_name' (run bpsm setup rt first)\\n" unless $user->Id;
    my $grant = sub {{
        my ($object, $label, @rights) = @_;
        for my $right (@rights) {{
            if ($user->PrincipalObj->HasRight(Right => $right, Object => $object)) {{
                print "bpsm: $user_name has $right on $label\\n";
                next;
            }}
            my ($ok, $msg) = $user->PrincipalObj->GrantRight(Right => $right, Object => $object);
            die "bpsm: granting $right on $label: $msg\\n" unless $ok;
            print "bpsm: granted $right on $label\\n";
        }}
    }};
    for my $entry (@queue_rights) {{
        my ($name, $rights) = @$entry;
        my $queue = RT::Queue->new(RT->SystemUser);
        $queue->Load($name);
        die "bpsm: no queue '$name'\\n" unless $queue->Id;
        $grant->($queue, "queue '$name'", @$rights);
    }}
    return unless length $field_name;
    my $cf = RT::CustomField->new(RT->SystemUser);
    $cf->LoadByName(Name => $field_name, LookupType => '{TICKET_CF_TYPE}');
    die "bpsm: no ticket custom field '$field_name'\\n" unless $cf->Id;
    $grant->($cf, "custom field '$field_name'", @field_rights);
    for my $name (@field_queues) {{
        my $queue = RT::Queue->new(RT->SystemUser);
        $queue->Load($name);
        die "bpsm: no queue '$name'\\n" unless $queue->Id;
        next if $cf->IsAdded($queue->Id);
        my ($ok, $msg) = $cf->AddToObject($queue);
        die "bpsm: applying '$field_name' to '$name': $msg\\n" unless $ok;
        print "bpsm: applied custom field '$field_name' to queue '$name'\\n";
    }}
}});
1;
"""


def rights_instructions(user: str, options: RTOptions, queues: list[str]) -> list[str]:
    """What the admin does by hand: REST 2 in RT 5.0.3 has no way to grant rights."""
    watched = ", ".join(options.watch_queues)
    lines = [
        "",
        f"Rights of {user} (REST 2 in RT 5.0 cannot grant rights; an RT admin does it once):",
        f"  watched queues ({watched}): {', '.join(WATCHED_RIGHTS)}",
        f"  BPSM queues: {', '.join(TARGET_RIGHTS)}",
    ]
    if options.service_field:
        lines.append(
            f"  custom field {options.service_field!r}: {', '.join(FIELD_RIGHTS)}; "
            "applied to the BPSM queues"
        )
    lines += [
        "Either in RT's web UI (Admin → Queues → <queue> → User Rights; Admin → Custom Fields),",
        "or on the RT server as root, paste this (it checks first: safe to run again):",
        "",
        "cat > bpsm-rt-rights.pl <<'BPSM_EOF'",
        *initialdata(user, options, queues).splitlines(),
        "BPSM_EOF",
        "rt-setup-database-5 --action insert --skip-create --datafile bpsm-rt-rights.pl",
        "",
        f"Then give {user} an auth token (Admin → Users → {user} → Auth Tokens) and run the",
        "connector with BPSM_RT_URL and BPSM_RT_TOKEN (or BPSM_RT_TOKEN_FILE).",
    ]
    return lines
