"""A task's vault owner is a member or an external end user; existing ids stay external ones."""

import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("console", "0004_vault_owner"),
        ("tasks_app", "0003_task_vault_user"),
    ]

    operations = [
        migrations.RenameField(model_name="task", old_name="vault_user_id", new_name="vault_external_id"),
        migrations.AddField(
            model_name="task",
            name="vault_member",
            field=models.ForeignKey(
                blank=True,
                null=True,
                on_delete=django.db.models.deletion.SET_NULL,
                related_name="+",
                to="console.membership",
            ),
        ),
        migrations.AddConstraint(
            model_name="task",
            constraint=models.CheckConstraint(
                condition=models.Q(("vault_member__isnull", True), ("vault_external_id", ""), _connector="OR"),
                name="task_one_vault_owner",
            ),
        ),
    ]
