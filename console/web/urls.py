"""Addresses of the console (bookmarkable; the tests and the README use them)."""

from __future__ import annotations

from django.urls import path

from console.web import (
    account,
    agent_views,
    audit_views,
    dashboard,
    export,
    key_views,
    member_views,
    profile_views,
    retention_views,
    views,
)

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
    # part 2: administration, each change on the audit log
    path("dashboard/", dashboard.dashboard, name="dashboard"),
    path("agents/", agent_views.agent_list, name="agents"),
    path("agents/new/", agent_views.agent_new, name="agent-new"),
    path("agents/<str:agent_id>/", agent_views.agent_edit, name="agent"),
    path("agents/<str:agent_id>/delete/", agent_views.agent_delete, name="agent-delete"),
    path("audit/", audit_views.audit_log, name="audit"),
    path("audit/export.csv", audit_views.export, {"fmt": "csv"}, name="audit-csv"),
    path("audit/export.jsonl", audit_views.export, {"fmt": "jsonl"}, name="audit-jsonl"),
    path("keys/", key_views.keys_page, name="keys"),
    path("keys/<str:key_id>/revoke/", key_views.revoke, name="key-revoke"),
    path("account/", profile_views.account, name="account"),
    path("members/", member_views.members_page, name="members"),
    path("members/invite/", member_views.invite, name="member-invite"),
    path("members/<str:member_id>/role/", member_views.change_role, name="member-role"),
    path("members/<str:member_id>/deactivate/", member_views.deactivate, name="member-deactivate"),
    path("members/<str:member_id>/reactivate/", member_views.reactivate, name="member-reactivate"),
    path(
        "members/invitations/<str:invitation_id>/revoke/",
        member_views.revoke_invitation,
        name="invitation-revoke",
    ),
    path("retention/", retention_views.retention_page, name="retention"),
    path("invite/", member_views.accept, name="invite"),
    path("invite/<str:token>/", member_views.invite_link, name="invite-link"),
]
