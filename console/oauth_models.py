"""Rows of the MCP OAuth sign-in: client registrations per authorization server, and flows in progress.

A registration serves every member of the organization, so it is keyed by (organization, issuer).
A flow is one sign-in between the redirect to the authorization server and its callback: its
`state` is stored hashed and is single use, expiring, and bound to the member's session (or to the
signed sign-in link that started it), so a forged, replayed or stolen callback stores nothing.
"""

from __future__ import annotations

import hashlib

from django.db import models
from django.utils import timezone

from console import crypto


class RegistrationMethod(models.TextChoices):
    PRE_REGISTERED = "pre_registered"
    METADATA_DOCUMENT = "metadata_document"  # a Client ID Metadata Document URL is the client id
    DYNAMIC = "dynamic"  # RFC 7591
    MANUAL = "manual"  # entered by an admin


class OAuthClient(models.Model):
    """Our OAuth client at one authorization server, for one organization."""

    organization = models.ForeignKey(
        "console.Organization", on_delete=models.CASCADE, related_name="oauth_clients"
    )
    issuer = models.CharField(max_length=500)
    client_id = models.CharField(max_length=500)
    client_secret_encrypted = models.TextField(blank=True, default="")
    redirect_uri = models.CharField(max_length=500)
    method = models.CharField(max_length=32, choices=RegistrationMethod.choices)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["organization", "issuer", "redirect_uri"], name="uniq_oauth_client"
            )
        ]

    def __str__(self) -> str:
        return f"{self.client_id} at {self.issuer} ({self.method})"

    def secret(self) -> str:
        return crypto.decrypt(self.client_secret_encrypted) if self.client_secret_encrypted else ""


def hash_state(state: str) -> str:
    return hashlib.sha256(state.encode()).hexdigest()


class OAuthFlow(models.Model):
    """One sign-in in progress: what the callback needs to finish it for the right owner."""

    state_hash = models.CharField(max_length=64, unique=True)
    organization = models.ForeignKey(
        "console.Organization", on_delete=models.CASCADE, related_name="oauth_flows"
    )
    member = models.ForeignKey("console.Membership", null=True, blank=True, on_delete=models.CASCADE)
    external_user_id = models.CharField(max_length=200, blank=True, default="")
    graph_item = models.ForeignKey("console.GraphItem", on_delete=models.CASCADE, related_name="oauth_flows")
    # Hash of the session key that started it: the callback must come back to the same session.
    session_hash = models.CharField(max_length=64, blank=True, default="")
    # The signed sign-in link that started it, if any: a link starts one flow only.
    link_nonce = models.CharField(max_length=64, null=True, blank=True, unique=True)
    code_verifier_encrypted = models.TextField()
    client_id = models.CharField(max_length=500)
    client_secret_encrypted = models.TextField(blank=True, default="")
    redirect_uri = models.CharField(max_length=500)
    resource = models.CharField(max_length=500)
    scopes = models.CharField(max_length=1000, blank=True, default="")
    server_metadata = models.JSONField(default=dict)  # the authorization server's, checked at start
    created_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField()
    used_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"sign-in to {self.graph_item_id} started {self.created_at:%Y-%m-%d %H:%M}"
