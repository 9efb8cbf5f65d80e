"""Vault owners: each member gets a vault id; each token belongs to a member or an external end user.

Existing tokens become external end users' tokens under the id they were stored with, so no member
gains a token they did not give.
"""

import uuid

import django.db.models.deletion
from django.db import migrations, models

import console.models


def fill_vault_ids(apps, schema_editor):
    Membership = apps.get_model("console", "Membership")
    for member in Membership.objects.filter(vault_id__isnull=True).only("pk"):
        Membership.objects.filter(pk=member.pk).update(vault_id="mbr_" + uuid.uuid4().hex)


class Migration(migrations.Migration):
    dependencies = [
        ("console", "0003_token_access"),
    ]

    operations = [
        migrations.AddField(
            model_name="membership",
            name="vault_id",
            field=models.CharField(max_length=64, null=True),
        ),
        migrations.RunPython(fill_vault_ids, migrations.RunPython.noop),
        migrations.AlterField(
            model_name="membership",
            name="vault_id",
            field=models.CharField(
                default=console.models.new_vault_id, editable=False, max_length=64, unique=True
            ),
        ),
        migrations.RemoveConstraint(model_name="usertoken", name="uniq_user_token_per_item"),
        migrations.RenameField(model_name="usertoken", old_name="user_id", new_name="external_user_id"),
        migrations.AlterField(
            model_name="usertoken",
            name="external_user_id",
            field=models.CharField(blank=True, default="", max_length=200),
        ),
        migrations.AddField(
            model_name="usertoken",
            name="member",
            field=models.ForeignKey(
                blank=True,
                null=True,
                on_delete=django.db.models.deletion.CASCADE,
                related_name="vault_tokens",
                to="console.membership",
            ),
        ),
        migrations.AddConstraint(
            model_name="usertoken",
            constraint=models.CheckConstraint(
                condition=models.Q(("external_user_id", ""), ("member__isnull", False))
                | models.Q(("member__isnull", True), models.Q(("external_user_id", ""), _negated=True)),
                name="user_token_one_owner",
            ),
        ),
        migrations.AddConstraint(
            model_name="usertoken",
            constraint=models.UniqueConstraint(
                condition=models.Q(("member__isnull", False)),
                fields=("organization", "member", "graph_item_key"),
                name="uniq_member_token_per_item",
            ),
        ),
        migrations.AddConstraint(
            model_name="usertoken",
            constraint=models.UniqueConstraint(
                condition=models.Q(("member__isnull", True)),
                fields=("organization", "external_user_id", "graph_item_key"),
                name="uniq_external_token_per_item",
            ),
        ),
    ]
