import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("django_integration", "0002_job_outboxmessage_stockitem"),
    ]

    operations = [
        migrations.AddField(
            model_name="job",
            name="claim_id",
            field=models.CharField(blank=True, db_index=True, max_length=255),
        ),
        migrations.CreateModel(
            name="Reservation",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("task_id", models.CharField(max_length=255, unique=True)),
                ("quantity", models.IntegerField()),
                ("granted", models.BooleanField()),
                (
                    "item",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.CASCADE,
                        to="django_integration.stockitem",
                    ),
                ),
            ],
        ),
    ]
