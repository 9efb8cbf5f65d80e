"""A run's writes to the task's logs: masked with the secrets the run resolved once (the task's
user tokens are not decrypted again for every batch), and published as the rows were stored."""

from __future__ import annotations

import pytest

from console import crypto
from tasks_app import actions, bus
from tasks_app.models import ActivityEntry, ActivityKind, TaskEvent
from tests.test_secrets import everything_stored

TOKEN = "ghp_SuperSecretUserToken1234567890"


@pytest.fixture
def decryptions(monkeypatch) -> list[str]:
    """Counts decryptions; the real decryption still runs."""
    seen: list[str] = []
    real = crypto.decrypt_json

    def counting(value):
        seen.append(value)
        return real(value)

    monkeypatch.setattr(crypto, "decrypt_json", counting)
    return seen


def said(text: str) -> tuple[str, dict]:
    return ActivityKind.MESSAGE, {"role": "agent", "content": {"text": text}}


def test_it_masks_a_runs_batches_without_decrypting_the_tokens_again(task_of, decryptions):
    task = task_of(user_tokens={"gi-github": TOKEN})
    actions.claim_task(task["id"], "w1", 30)
    secrets = [TOKEN]  # what the runner resolved when the run started
    decryptions.clear()
    for i in range(3):
        actions.record_progress(
            task["id"],
            events=[("chunk", f"{TOKEN} {i}")],
            activity=[said(f"used {TOKEN}"), said("twice")],
            secrets=secrets,
            worker_id="w1",
        )
    assert decryptions == []
    assert TOKEN not in everything_stored(task["id"])
    assert [e.data for e in TaskEvent.objects.filter(task_id=task["id"], type="chunk")] == [
        "REDACTED 0",
        "REDACTED 1",
        "REDACTED 2",
    ]


def test_a_write_without_the_runs_secrets_masks_the_tasks_tokens(task_of, decryptions):
    task = task_of(user_tokens={"gi-github": TOKEN})
    actions.claim_task(task["id"], "w1", 30)
    decryptions.clear()
    actions.record_progress(
        task["id"], events=[("chunk", TOKEN)], activity=[said(TOKEN), said(TOKEN)], worker_id="w1"
    )
    assert len(decryptions) == 1  # once for the batch, not once per entry
    assert TOKEN not in everything_stored(task["id"])
    assert ActivityEntry.objects.filter(task_id=task["id"], data__content__text="REDACTED").count() == 2


@pytest.mark.django_db(transaction=True)
async def test_the_bus_carries_each_event_as_it_was_stored(task_of):
    from asgiref.sync import sync_to_async
    from channels.layers import get_channel_layer

    task = await sync_to_async(task_of)(user_tokens={"gi-github": TOKEN})
    await sync_to_async(actions.claim_task)(task["id"], "w1", 30)
    layer = get_channel_layer()
    channel = await layer.new_channel()
    await layer.group_add(bus.group_name(task["id"]), channel)
    [row] = await actions.arecord_progress(
        task["id"], events=[("chunk", TOKEN)], secrets=[TOKEN], worker_id="w1"
    )
    message = await layer.receive(channel)
    assert message["events"] == [
        {
            "seq": row.seq,
            "type": "chunk",
            "time": row.time.isoformat().replace("+00:00", "Z"),
            "data": "REDACTED",
        }
    ]


@pytest.mark.django_db(transaction=True)
async def test_a_run_that_ends_writes_its_last_text_at_once_not_when_the_window_closes(task_of, settings):
    """Text gathers for CHUNK_COALESCE_SECONDS; a short answer's run must not wait the window out."""
    import asyncio

    from asgiref.sync import sync_to_async

    from tasks_app.runtime.sink import EventSink

    settings.CHUNK_COALESCE_SECONDS = 60  # far longer than the wait below
    task = await sync_to_async(task_of)()
    await sync_to_async(actions.claim_task)(task["id"], "w1", 30)
    sink = EventSink(task["id"], [], "w1")
    for part in ("The answer", " is ", "5."):
        sink.chunk(part)
        await asyncio.sleep(0)  # the writer starts gathering after the first
    await asyncio.wait_for(sink.close(), 10)
    chunks = await sync_to_async(list)(
        TaskEvent.objects.filter(task_id=task["id"], type="chunk").values_list("data", flat=True)
    )
    assert chunks == ["The answer is 5."]  # still gathered into one event


def test_a_finish_stores_the_runs_last_progress_before_its_final_events(task_of):
    task = task_of(user_tokens={"gi-github": TOKEN})
    actions.claim_task(task["id"], "w1", 30)
    done = actions.finish_task(
        task["id"],
        "completed",
        "The answer.",
        worker_id="w1",
        final_message="The answer.",
        events=[("chunk", f"The {TOKEN} answer.")],
        activity=[said("thinking it over")],
        secrets=[TOKEN],
    )
    assert done is not None
    rows = list(
        TaskEvent.objects.filter(task_id=task["id"]).order_by("seq").values_list("seq", "type", "data")
    )
    assert [seq for seq, _, _ in rows] == list(range(1, len(rows) + 1))
    assert [t for _, t, _ in rows][-3:] == ["chunk", "task_updated", "task_finished"]
    assert rows[-3][2] == "The REDACTED answer."
    texts = [
        e.data["content"]["text"]
        for e in ActivityEntry.objects.filter(task_id=task["id"]).order_by("position")
        if e.data.get("role") == "agent"
    ]
    assert texts == ["thinking it over", "The answer."]
    assert TOKEN not in everything_stored(task["id"])
    done.refresh_from_db()
    assert done.last_seq == rows[-1][0]
    assert done.last_activity == ActivityEntry.objects.filter(task_id=task["id"]).count()


def test_a_run_that_lost_its_task_finishes_nothing_and_writes_none_of_its_progress(task_of):
    task = task_of()
    actions.claim_task(task["id"], "w1", 30)
    assert (
        actions.finish_task(task["id"], "completed", "late", worker_id="w2", events=[("chunk", "late")])
        is None
    )
    assert not TaskEvent.objects.filter(task_id=task["id"], type="chunk").exists()
