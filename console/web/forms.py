"""Forms of the task pages; the task API validates again, and its errors land next to the field."""

from __future__ import annotations

from django import forms
from django.conf import settings

from console.models import Agent
from tasks_app.models import INTERNAL_STATUS_MAX


class MultipleFileInput(forms.ClearableFileInput):
    allow_multiple_selected = True


class MultipleFileField(forms.FileField):
    widget = MultipleFileInput

    def clean(self, data, initial=None):
        files = data if isinstance(data, list | tuple) else [data] if data else []
        return [super(MultipleFileField, self).clean(f, initial) for f in files]


class NewTaskForm(forms.Form):
    agent = forms.ChoiceField(label="Agent")
    prompt = forms.CharField(label="Prompt", widget=forms.Textarea({"rows": 8}))
    files = MultipleFileField(
        label="Files", required=False, help_text="PDFs, images or text files; several at once."
    )
    urls = forms.CharField(
        label="File URLs",
        required=False,
        widget=forms.Textarea({"rows": 2, "placeholder": "https://example.com/report.pdf"}),
        help_text="Or paste links to files, one per line.",
    )
    stream = forms.BooleanField(label="Stream the answer as it is written", required=False, initial=True)

    def __init__(self, organization_id: str, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        agents = Agent.objects.filter(organization_id=organization_id).order_by("name")
        self.fields["agent"].choices = [("", "Choose an agent")] + [(a.id, a.name) for a in agents]
        self.fields["prompt"].max_length = settings.TASK_PROMPT_MAX_CHARS
        self.fields["prompt"].widget.attrs["maxlength"] = settings.TASK_PROMPT_MAX_CHARS

    def clean_urls(self) -> list[str]:
        urls = [line.strip() for line in (self.cleaned_data.get("urls") or "").splitlines() if line.strip()]
        for url in urls:
            if not url.startswith(("http://", "https://")) or len(url) > 2048:
                raise forms.ValidationError(f"Not an http(s) link: {url[:100]}")
        return urls

    def clean(self) -> dict:
        data = super().clean()
        count = len(data.get("files") or []) + len(data.get("urls") or [])
        if count > settings.TASK_MAX_FILES:
            self.add_error("files", f"At most {settings.TASK_MAX_FILES} files per task (got {count}).")
        for f in data.get("files") or []:
            if f.size > settings.TASK_UPLOAD_MAX_BYTES:
                self.add_error("files", f"{f.name} is larger than {settings.TASK_UPLOAD_MAX_BYTES} bytes.")
        return data


class InternalStatusForm(forms.Form):
    internal_status = forms.CharField(
        label="Internal status",
        required=False,
        max_length=INTERNAL_STATUS_MAX,
        help_text=f"Your team's own label, up to {INTERNAL_STATUS_MAX} characters; empty clears it.",
    )


class FollowUpForm(forms.Form):
    prompt = forms.CharField(label="Follow-up", widget=forms.Textarea({"rows": 3}))

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.fields["prompt"].max_length = settings.TASK_PROMPT_MAX_CHARS
