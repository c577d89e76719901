"""The appeal timeline speaks Chinese: the console showed each event's code (submitted, accepted) and an actor's
type (system) in the 操作 / 操作人 columns."""

from __future__ import annotations

import re
from pathlib import Path

from wxapp_backend.appeals.states import EVENT_LABELS

ROOT = Path(__file__).resolve().parents[3]


def test_the_console_timeline_names_events_in_chinese(client, world, console_login):
    a = world.submit()
    csrf = console_login(world.admin)
    client.post(f"/console/appeals/{a['id']}/action", data={"csrf_token": csrf, "action": "accept",
                                                            "version": world.detail(a["id"])["version"]})
    html = client.get(f"/console/appeals/{a['id']}").get_data(as_text=True)
    timeline = html[html.index('id="timeline"'):]
    assert "<td>提交诉求</td>" in timeline and "<td>受理</td>" in timeline
    assert not re.search(r"<td>(submitted|accepted|system|user|staff)</td>", timeline)
    detail = world.detail(a["id"])
    assert [e["action_label"] for e in detail["timeline"]][:2] == ["提交诉求", "受理"]


def test_every_event_the_code_writes_has_a_label():
    """A new event added without its Chinese name would show its code again."""
    source = "\n".join(p.read_text(encoding="utf-8") for d in ("wxapp_backend/appeals", "handlers")
                       for p in (ROOT / d).glob("*.py"))
    written = set(re.findall(r"_event\(\s*\w+,\s*\w+,\s*[\w.()]+,\s*\"([a-z_]+)\"", source))
    written |= set(re.findall(r"\baction=\"([a-z_]+)\"", source))
    for chosen in re.findall(r"_event\(\s*\w+,\s*\w+,\s*[\w.()]+,\s*\"([a-z_]+)\" if [^\n]*? else \"([a-z_]+)\"", source):
        written |= set(chosen)  # _event(..., "task_done" if ... else "task_cancelled", ...)
    assert len(written) > 25  # the scan finds them (a broken pattern would pass vacuously)
    assert written <= set(EVENT_LABELS), sorted(written - set(EVENT_LABELS))
