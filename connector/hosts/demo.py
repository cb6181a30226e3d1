"""A demo host for trying the connector with curl: no helpdesk, always dry-run.

    curl -X POST localhost:8080/hooks/demo -H 'Content-Type: application/json' \\
         -d '{"ticket_id": "1", "subject": "Printer", "body": "skriveren virker ikke"}'

The decision is then visible with `bpsm decisions` (and in the service's log).
"""

from __future__ import annotations

import hashlib

from connector.events import TicketEvent
from connector.hosts.base import BadPayload, Host, Ignored, WebhookRequest, json_object, need


class DemoHost(Host):
    name = "demo"

    def parse(self, request: WebhookRequest) -> TicketEvent | Ignored:
        data = json_object(request.body)
        ticket_id = need(data, "ticket_id", (str, int), "")
        subject = data.get("subject", "")
        body = data.get("body", "")
        if not isinstance(subject, str) or not isinstance(body, str):
            raise BadPayload("subject and body must be strings", "body")
        if not (subject.strip() or body.strip()):
            return Ignored("no text to classify", str(ticket_id), "no-text")
        delivery = request.header("X-Delivery-Id") or data.get("delivery_id")
        if not isinstance(delivery, str) or not delivery:
            # Without a delivery id the same content counts as the same delivery.
            delivery = hashlib.sha256(request.body).hexdigest()[:32]
        return TicketEvent(
            host=self.name,
            delivery_id=delivery,
            ticket_id=str(ticket_id),
            subject=subject,
            body=body,
        )


HOST = DemoHost
