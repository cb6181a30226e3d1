"""bpsm_helpdesk: optional django-helpdesk add-on shipped with bpsm-connector.

It adds the ``bpsm_queues`` management command, which creates the helpdesk queues
the connector routes tickets to and prints their ids.
"""
