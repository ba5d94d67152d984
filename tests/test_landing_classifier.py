"""The landing page's "describe your request" box, run under Node with the page's own script
(docs/assets/javascripts/classifier.js) and keyword table (docs/assets/data/classifier.json).
Its page ranking is measured on the whole request list in Chromium: tests/site/test_search.py."""

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from docs.hooks.site import SECTION_TITLES

# Reads the site and its sources only: .ci/run runs it in one of its two runs (tests/conftest.py).
pytestmark = pytest.mark.once

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "docs/assets/javascripts/classifier.js"
TABLE = ROOT / "docs/assets/data/classifier.json"
SECTIONS = set(SECTION_TITLES) - {"recipes"}  # the branches of the landing page


def classify(*requests: str) -> list[list[str]]:
    node = shutil.which("node") or pytest.fail("node is needed to run the page's classifier")
    program = (
        f"const {{classify}} = require({json.dumps(str(SCRIPT))});"
        f"const table = require({json.dumps(str(TABLE))});"
        "const requests = JSON.parse(process.argv[1]);"
        "console.log(JSON.stringify(requests.map(r => classify(r, table).map(s => s.slug))));"
    )
    out = subprocess.run(
        [node, "-e", program, json.dumps(requests)], capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout)


def test_the_table_covers_every_section_and_their_index_pages_exist():
    table = json.loads(TABLE.read_text())
    assert {s["slug"] for s in table["sections"]} == SECTIONS
    for section in table["sections"]:
        assert section["url"] == f"{section['slug']}/"
        assert (ROOT / "docs" / section["slug"] / "index.md").is_file()
        assert section["keywords"], section["slug"]


@pytest.mark.parametrize(
    ("request_text", "expected"),
    [
        (
            "Send welcome emails in the background after user registration",
            {"django-integration", "task-design"},
        ),
        ("Process a large CSV import with progress updates", {"task-design"}),
        (
            "Process an order: validate inventory, charge payment, then send confirmation",
            {"task-design", "error-handling"},
        ),
        (
            "My task fails with DoesNotExist right after I save the model",
            {"django-integration", "error-handling"},
        ),
        ("Run a cleanup every night at 2am Berlin time", {"periodic-tasks"}),
        ("Alert when the queue length grows", {"monitoring", "configuration"}),
        ("Deploy workers on Kubernetes with graceful shutdown", {"production"}),
        ("Retry an HTTP call with exponential backoff", {"error-handling"}),
        ("Which broker should I use, Redis or RabbitMQ?", {"configuration"}),
    ],
)
def test_requests_are_classified_into_their_sections(request_text, expected):
    [found] = classify(request_text)
    assert set(found) >= expected, found
    assert set(found) <= SECTIONS


def test_a_pasted_error_message_suggests_troubleshooting():
    [found] = classify("Received unregistered task of type 'demoapp.tasks.add'")
    assert "troubleshooting" in found


def test_an_unrelated_request_suggests_nothing():
    assert classify("What is the capital of France?") == [[]]


# A search index as docs/hooks/search.py writes it: each page's own entry (no "#") holds its
# title, description and problem statement; sections are other entries.
INDEX = {
    "config": {
        "separator": r"[\s\-_.,:!=\[\]()\"/]+|\b(?:[cC][eE][lL][eE][rR][yY]|[tT][hH][eE])\b"
    },
    "docs": [
        {
            "location": "task-design/locking/",
            "title": "One run at a time (locking)",
            "text": "<p>Stop two runs of the same job overlapping with a Redis lock.</p>",
        },
        {
            "location": "task-design/locking/#notes",
            "title": "Notes",
            "text": "<p>serializable serializable serializable</p>",
        },
        {
            "location": "django-integration/orm-patterns/",
            "title": "The ORM in tasks",
            "text": "<p>Pass primary keys, not model instances: not JSON serializable.</p>",
        },
        {
            "location": "periodic-tasks/beat/",
            "title": "Celery beat",
            "text": "<p>My periodic task runs twice.</p>",
        },
    ],
}


def rank(*requests: str) -> list[list[str]]:
    node = shutil.which("node") or pytest.fail("node is needed to run the page's classifier")
    program = (
        f"const {{rankPages}} = require({json.dumps(str(SCRIPT))});"
        "const [requests, index] = JSON.parse(process.argv[1]);"
        "const pages = r => rankPages(r, index, 5).map(p => p.location);"
        "console.log(JSON.stringify(requests.map(pages)));"
    )
    out = subprocess.run(
        [node, "-e", program, json.dumps([requests, INDEX])],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout)


def test_the_request_box_ranks_pages_by_their_own_entry_best_first():
    [serializable, overlap, twice] = rank(
        "EncodeError: Object of type Event is not JSON serializable",
        "prevent two runs overlapping",
        "celery beat runs the task twice",
    )
    assert serializable == ["django-integration/orm-patterns/"]  # a section's words do not count
    assert overlap[0] == "task-design/locking/"
    assert twice[0] == "periodic-tasks/beat/"


def test_stop_words_and_the_index_separator_words_rank_nothing():
    assert rank("the celery of a", "") == [[], []]
