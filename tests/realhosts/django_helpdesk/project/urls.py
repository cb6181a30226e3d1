"""URLconf: Django admin under /admin/, django-helpdesk (UI and REST API) at the root."""

from django.contrib import admin
from django.urls import include, path

urlpatterns = [
    path("admin/", admin.site.urls),
    # The helpdesk's own URLconf carries the REST API at /api/.
    path("", include("helpdesk.urls", namespace="helpdesk")),
]
