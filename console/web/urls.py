"""Addresses of the console (bookmarkable; the tests and the README use them)."""

from __future__ import annotations

from django.urls import path

from console.web import account, connections, export, views

urlpatterns = [
    path("", account.sign_in, name="sign-in"),
    path("signout/", account.sign_out, name="sign-out"),
    path("account/password/", account.password_change, name="password"),
    path("org/", account.switch_organization, name="switch-org"),
    path("tasks/", views.history, name="history"),
    path("tasks/export.csv", export.export, {"fmt": "csv"}, name="export-csv"),
    path("tasks/export.jsonl", export.export, {"fmt": "jsonl"}, name="export-jsonl"),
    path("tasks/new/", views.new_task, name="new-task"),
    path("tasks/stop/", views.bulk_stop, name="bulk-stop"),
    path("tasks/<str:task_id>/", views.task_page, name="task"),
    path("tasks/<str:task_id>/stop/", views.stop, name="task-stop"),
    path("tasks/<str:task_id>/internal-status/", views.internal_status, name="task-internal-status"),
    path("tasks/<str:task_id>/follow-up/", views.follow_up, name="task-follow-up"),
    path("tasks/<str:task_id>/activity/", views.activity, name="task-activity"),
    path("connections/", connections.connections, name="connections"),
    path("connections/callback/", connections.callback, name="connections-callback"),
    path("connections/client-metadata.json", connections.client_metadata_document, name="client-metadata"),
    path("connections/signin/<str:token>/", connections.signin_link, name="signin-link"),
    path("connections/revoke/<int:row_id>/", connections.revoke, name="connection-revoke"),
    path("connections/<int:item_id>/signin/", connections.sign_in, name="connection-signin"),
    path("connections/<int:item_id>/paste/", connections.paste, name="connection-paste"),
    path("connections/<int:item_id>/refresh/", connections.refresh_now, name="connection-refresh"),
    path("connections/<int:item_id>/disconnect/", connections.disconnect, name="connection-disconnect"),
]
