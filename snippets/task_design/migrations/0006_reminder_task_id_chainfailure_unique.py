from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("task_design", "0005_charge"),
    ]

    operations = [
        migrations.AlterField(
            model_name="chainfailure",
            name="task_id",
            field=models.CharField(max_length=255, unique=True),
        ),
        migrations.AddField(
            model_name="reminder",
            name="task_id",
            field=models.CharField(default="", max_length=255, unique=True),
            preserve_default=False,
        ),
    ]
