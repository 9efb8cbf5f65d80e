"""/retention/: how long finished tasks are kept (admins see it; owners change it)."""

from __future__ import annotations

from django import forms
from django.conf import settings
from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_http_methods

from console import retention
from console.errors import Invalid
from console.models import Organization, Role
from console.web.guard import forbidden, member_page


class RetentionForm(forms.Form):
    retention_days = forms.IntegerField(
        label="Keep finished tasks for (days)",
        required=False,
        min_value=0,
        max_value=retention.MAX_DAYS,
        help_text="0 keeps them forever; empty uses the server's default.",
    )


@member_page(role=Role.ADMIN)
@require_http_methods(["GET", "POST"])
def retention_page(request: HttpRequest) -> HttpResponse:
    org = Organization.objects.get(pk=request.actor.organization_id)
    form = RetentionForm(request.POST or None, initial={"retention_days": org.retention_days})
    status = 200
    if request.method == "POST":
        if not request.actor.can(Role.OWNER):
            return forbidden(request, "Only owners change the retention.")
        if form.is_valid():
            try:
                retention.set_retention(request.actor, form.cleaned_data["retention_days"])
            except Invalid as exc:
                form.add_error("retention_days", exc.message.split(": ", 1)[-1])
            else:
                messages.success(request, "Retention saved.")
                return redirect("/retention/")
        status = 400
    context = {
        "nav": "retention",
        "form": form,
        "org": org,
        "days": retention.effective_days(org),
        "default_days": settings.TASK_RETENTION_DAYS,
        "can_change": request.actor.can(Role.OWNER),
    }
    return render(request, "admin_pages/retention.html", context, status=status)
