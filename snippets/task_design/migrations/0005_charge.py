from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("task_design", "0004_item"),
    ]

    operations = [
        migrations.CreateModel(
            name="Charge",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("key", models.CharField(max_length=200, unique=True)),
                ("order_id", models.IntegerField()),
                ("amount_cents", models.BigIntegerField()),
                (
                    "status",
                    models.CharField(
                        choices=[("pending", "Pending"), ("charged", "Charged")],
                        default="pending",
                        max_length=10,
                    ),
                ),
                ("provider_charge_id", models.CharField(blank=True, max_length=100)),
            ],
        ),
    ]
