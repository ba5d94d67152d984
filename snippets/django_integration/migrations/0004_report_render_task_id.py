from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("django_integration", "0003_job_claim_id_reservation"),
    ]

    operations = [
        migrations.AddField(
            model_name="report",
            name="render_task_id",
            field=models.UUIDField(blank=True, null=True),
        ),
    ]
