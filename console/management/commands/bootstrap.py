"""Create (idempotently) an organization, its owner and an API key.

`--json` prints {"organization_id", "user_id", "api_key"}; the raw key exists only in that output.
Without --new-key an existing bootstrap key is kept and api_key is null (we store only its hash).
`--if-empty` does nothing when any organization exists (used by `make run`).
"""

from __future__ import annotations

import json
import secrets

from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.core.validators import validate_email
from django.db import transaction

from console.models import ApiKey, Membership, Organization, Role


class Command(BaseCommand):
    help = "Create an organization, an owner and an API key (idempotent)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--org", default="Default")
        parser.add_argument("--email", default="admin@example.com")
        parser.add_argument("--password", default=None, help="generated and printed when omitted")
        parser.add_argument("--role", default=Role.OWNER, choices=[r.value for r in Role])
        parser.add_argument("--new-key", action="store_true", help="issue another API key")
        parser.add_argument("--json", action="store_true", help="print JSON only")
        parser.add_argument("--if-empty", action="store_true", help="do nothing if an organization exists")
        parser.add_argument("--url", default="/", help="the console's address, printed with the sign-in")

    def handle(self, *args, **opts) -> None:
        if opts["if_empty"] and Organization.objects.exists():
            return
        try:
            validate_email(opts["email"])
        except ValidationError:
            raise CommandError(f"--email {opts['email']!r} is not an email address") from None
        if not opts["org"].strip():
            raise CommandError("--org must not be empty")
        password = opts["password"]
        generated = password is None
        User = get_user_model()
        with transaction.atomic():
            org, _ = Organization.objects.get_or_create(name=opts["org"].strip())
            user = User.objects.filter(username=opts["email"]).first()
            is_first_user = not User.objects.exists()
            if user is None:
                password = password or secrets.token_urlsafe(12)
                user = User.objects.create_user(
                    username=opts["email"], email=opts["email"], password=password
                )
                if is_first_user:  # the instance's first user administers it (Django admin)
                    user.is_staff = user.is_superuser = True
                    user.save(update_fields=["is_staff", "is_superuser"])
            elif not generated:
                user.set_password(password)
                user.save(update_fields=["password"])
            else:
                password = None
            member, created = Membership.objects.get_or_create(
                organization=org, user=user, defaults={"role": opts["role"]}
            )
            if not created and member.role != opts["role"]:
                member.role = opts["role"]
                member.save(update_fields=["role"])
            raw_key = None
            has_key = ApiKey.objects.filter(
                membership=member, name="bootstrap", revoked_at__isnull=True
            ).exists()
            if opts["new_key"] or not has_key:
                _, raw_key = ApiKey.issue(member, name="bootstrap")
        if opts["json"]:
            self.stdout.write(json.dumps({"organization_id": org.id, "user_id": user.pk, "api_key": raw_key}))
            return
        self.stdout.write(f"Organization: {org.name} ({org.id})")
        self.stdout.write(
            f"Sign in at {opts['url']} with email {user.email}"
            + (f" and password {password}" if password else " (password unchanged)")
        )
        if raw_key:
            self.stdout.write(f"API key (shown once, keep it): {raw_key}")
        else:
            self.stdout.write("API key: unchanged (run with --new-key for another)")
