from django.apps import AppConfig


class BpsmHelpdeskConfig(AppConfig):
    name = "bpsm_helpdesk"
    verbose_name = "BPSM connector helpers"
    default_auto_field = "django.db.models.AutoField"
