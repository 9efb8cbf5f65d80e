"""/members/ and /invite/<token>/: invitations (single use, expiring), roles, deactivation, the last
owner protected; the rules hold whoever asks."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.core import mail
from django.core.cache import cache
from django.test import Client
from django.utils import timezone

from console.models import AuditEvent, Invitation, Membership
from tests.console_helpers import PASSWORD, signed_in

pytestmark = pytest.mark.django_db
NEW_PASSWORD = "a long enough new passphrase 42"


@pytest.fixture(autouse=True)
def _fresh(settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    cache.clear()


def _invite(client: Client, email: str = "dana@example.com", role: str = "member") -> str:
    r = client.post("/members/invite/", {"email": email, "role": role})
    assert r.status_code == 200, r.content
    return re.search(r'id="invite-link" value="http://testserver(/invite/[^"]+/)"', r.content.decode()).group(
        1
    )


def opened(link: str) -> Client:
    """A fresh browser that followed the invitation link (its token now in that session only)."""
    client = Client()
    r = client.get(link)
    assert r.status_code == 302 and r["Location"] == "/invite/"
    return client


def join(link: str, password: str = NEW_PASSWORD, again: str | None = None):
    return opened(link).post("/invite/", {"password1": password, "password2": again or password})


def test_an_invited_person_sets_a_password_and_lands_in_the_organization(
    alice, settings, django_capture_on_commit_callbacks
):
    # The operator configured email: the link is mailed too (to Django's test outbox).
    settings.MAILERS = {"default": {"BACKEND": "django.core.mail.backends.locmem.EmailBackend"}}
    with django_capture_on_commit_callbacks(execute=True):
        link = _invite(signed_in(alice))
    assert len(mail.outbox) == 1 and link in mail.outbox[0].body  # Django's test mail backend
    dana = opened(link)
    page = dana.get("/invite/")
    assert page.status_code == 200 and "Join Acme" in page.content.decode()
    assert link not in page.content.decode()
    r = dana.post("/invite/", {"password1": NEW_PASSWORD, "password2": NEW_PASSWORD})
    assert r.status_code == 302 and r["Location"] == "/tasks/"
    assert dana.get("/tasks/").status_code == 200
    member = Membership.objects.get(user__email="dana@example.com")
    assert member.organization == alice.org and member.role == "member"
    assert list(AuditEvent.objects.filter(action__startswith="member.").values_list("action", flat=True)) == [
        "member.invited",
        "member.joined",
    ]


def test_the_link_works_once(alice):
    link = _invite(signed_in(alice))
    assert not mail.outbox  # no email configured: the inviter copies the link
    assert join(link).status_code == 302
    again = join(link)
    assert again.status_code == 404 and "unknown, used or expired" in again.content.decode()


def test_an_expired_link_is_refused(alice):
    link = _invite(signed_in(alice))
    Invitation.objects.update(expires_at=timezone.now() - timedelta(seconds=1))
    assert opened(link).get("/invite/").status_code == 404
    assert not Membership.objects.filter(user__email="dana@example.com").exists()


def test_a_weak_or_mismatched_password_is_shown_by_its_field(alice):
    link = _invite(signed_in(alice))
    r = join(link, "short")
    assert r.status_code == 400 and 'id="id_password1_error"' in r.content.decode()
    r = join(link, NEW_PASSWORD, NEW_PASSWORD + "x")
    assert 'id="id_password2_error"' in r.content.decode()


def test_the_link_alone_never_joins_an_existing_account(alice, charlie):
    link = _invite(signed_in(alice), email="charlie@example.com")
    page = opened(link).get("/invite/").content.decode()
    assert "already exists" in page and "password1" not in page
    join(link)
    assert not Membership.objects.filter(user__email="charlie@example.com", organization=alice.org).exists()
    as_charlie = signed_in(charlie)
    as_charlie.get(link)
    assert as_charlie.post("/invite/").status_code == 302
    assert Membership.objects.filter(user__email="charlie@example.com", organization=alice.org).exists()


def test_an_admin_cannot_invite_or_make_an_owner(alice, bob):
    bob.member.role = "admin"
    bob.member.save()
    client = signed_in(bob)
    r = client.post("/members/invite/", {"email": "eve@example.com", "role": "owner"})
    assert r.status_code == 400 and 'id="id_role_error"' in r.content.decode()
    client.post(f"/members/{bob.member.pk}/role/", {"role": "owner"})
    assert Membership.objects.get(pk=bob.member.pk).role == "admin"
    assert client.post(f"/members/{alice.member.pk}/deactivate/").status_code == 403


def test_the_last_owner_cannot_be_demoted_or_deactivated(alice):
    client = signed_in(alice)
    r = client.post(f"/members/{alice.member.pk}/role/", {"role": "admin"}, follow=True)
    assert "last owner" in r.content.decode()
    r = client.post(f"/members/{alice.member.pk}/deactivate/", follow=True)
    assert "last owner" in r.content.decode()
    assert Membership.objects.get(pk=alice.member.pk).role == "owner"


def test_a_deactivated_member_loses_pages_and_keys_at_once_and_can_come_back(alice, bob):
    bobs = signed_in(bob)
    client = signed_in(alice)
    client.post(f"/members/{bob.member.pk}/deactivate/")
    assert bobs.get("/tasks/").status_code == 302  # signed out with the reason
    assert bob.get("/api/v1/agents").status_code == 401
    client.post(f"/members/{bob.member.pk}/reactivate/")
    assert bob.get("/api/v1/agents").status_code == 200
    actions = list(AuditEvent.objects.filter(object_type="member").values_list("action", flat=True))
    assert actions == ["member.deactivated", "member.reactivated"]


def test_role_changes_are_recorded_with_before_and_after(alice, bob):
    signed_in(alice).post(f"/members/{bob.member.pk}/role/", {"role": "viewer"})
    entry = AuditEvent.objects.get(action="member.role_changed")
    assert entry.changes == {"role": {"from": "member", "to": "viewer"}}
    assert bob.post("/api/v1/keys", {"name": "x"}).status_code == 403


def test_members_and_viewers_cannot_manage_members(bob, vera):
    assert signed_in(bob).get("/members/").status_code == 403
    assert (
        signed_in(vera).post("/members/invite/", {"email": "x@example.com", "role": "viewer"}).status_code
        == 403
    )


def test_charlie_from_another_org_cannot_touch_alices_members(alice, bob, charlie):
    client = signed_in(charlie)
    assert "bob@example.com" not in client.get("/members/").content.decode()
    assert client.post(f"/members/{bob.member.pk}/deactivate/").status_code == 404
    assert client.post(f"/members/{bob.member.pk}/role/", {"role": "viewer"}).status_code == 404
    assert Membership.objects.get(pk=bob.member.pk).deactivated_at is None


def test_password_stays_usable_for_the_invited_account(alice):
    link = _invite(signed_in(alice))
    join(link)
    r = Client().post("/", {"email": "dana@example.com", "password": NEW_PASSWORD})
    assert r.status_code == 302 and PASSWORD != NEW_PASSWORD


def test_ids_out_of_range_are_404(alice):
    client = signed_in(alice)
    assert client.post(f"/members/{2**70}/deactivate/").status_code == 404
    assert client.post(f"/members/invitations/{2**70}/revoke/").status_code == 404
    assert client.get(f"/audit/?before={2**70}").status_code == 200
