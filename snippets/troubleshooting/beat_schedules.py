"""Beat schedules: an entry deleted from CELERY_BEAT_SCHEDULE keeps running under
django-celery-beat's DatabaseScheduler, which copies settings entries into PeriodicTask rows
and never deletes one. A data migration deletes the rows of the entries you removed."""

# --8<-- [start:removed-entries]
from django.apps.registry import Apps
from django.db import migrations
from django.db.backends.base.schema import BaseDatabaseSchemaEditor
from django.utils import timezone

# The names you deleted from CELERY_BEAT_SCHEDULE in this release.
REMOVED_ENTRIES = ["nightly-report"]  # (1)!


def delete_removed_entries(apps: Apps, schema_editor: BaseDatabaseSchemaEditor) -> None:
    PeriodicTask = apps.get_model("django_celery_beat", "PeriodicTask")
    PeriodicTasks = apps.get_model("django_celery_beat", "PeriodicTasks")
    PeriodicTask.objects.filter(name__in=REMOVED_ENTRIES).delete()
    changed = {"last_update": timezone.now()}  # what PeriodicTasks.update_changed() writes
    PeriodicTasks.objects.update_or_create(ident=1, defaults=changed)  # (2)!


class Migration(migrations.Migration):  # e.g. yourapp/migrations/0007_remove_nightly_report.py
    dependencies = [("django_celery_beat", "0019_alter_periodictasks_options")]  # (3)!
    operations = [migrations.RunPython(delete_removed_entries, migrations.RunPython.noop)]


# --8<-- [end:removed-entries]
