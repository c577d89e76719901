"""Subscribe-message field rules: every type's limits, fit(), and the kinds file."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from wxapp_backend.config import ConfigError
from wxapp_backend.notices.kinds import DEFAULT_KINDS, Kind, load_kinds, parse_kinds, render
from wxapp_backend.wechat.templates import (
    TemplateFieldError,
    field_type,
    fit,
    format_time,
    validate,
    validate_value,
)

GOOD = {
    "thing1": "一" * 20,
    "phrase2": "已受理",
    "character_string3": "A-2025/10#16_" + "x" * 19,
    "number4": "1" * 32,
    "letter5": "a" * 32,
    "symbol6": "#-+%*",
    "name7": "欧阳娜娜",
    "name8": "Alice Smith",
    "phone_number9": "+86-021-12345678",
    "car_number10": "沪A12345",
    "amount11": "99.50元",
    "date12": "2025年10月16日",
    "time13": "2025-10-16 14:30",
    "time14": "14:30",
    "date15": "2025/10/16 09:05",
    "time16": "2025年10月16日 14:30~16:00",
    "amount17": "¥1000",
    "name18": "阿依古丽·买买提",
    "number19": "-3.5",
}

BAD = [
    ("thing1", "一" * 21),
    ("phrase2", "已经受理了的"),  # 6 characters
    ("phrase2", "OK"),
    ("character_string3", "x" * 33),
    ("character_string3", "编号12"),
    ("character_string3", "a b"),
    ("number4", "1" * 33),
    ("number4", "12a"),
    ("letter5", "a" * 33),
    ("letter5", "abc1"),
    ("symbol6", "######"),
    ("symbol6", "a#"),
    ("name7", "一" * 11),
    ("name8", "A" * 21),
    ("name7", "张三3"),
    ("phone_number9", "1" * 18),
    ("phone_number9", "021 1234"),
    ("phone_number9", "电话123"),
    ("car_number10", "沪A1234567"),
    ("car_number10", "沪A-1234"),
    ("amount11", "一百元"),
    ("amount11", "1.234"),
    ("date12", "2025年13月1日"),
    ("date12", "2025年2月30日"),
    ("time13", "2:30 PM"),
    ("time13", "24:00"),
    ("time13", "2025-10-16T14:30"),
    ("time14", "14:30~"),
    ("thing1", ""),
    ("thing1", "   "),
    ("unknown1", "x"),
]


def test_field_type_is_the_prefix_without_digits():
    assert field_type("thing1") == "thing"
    assert field_type("character_string12") == "character_string"
    assert field_type("phone_number3") == "phone_number"
    assert field_type("time") == "time"


def test_valid_values_pass_unchanged():
    assert validate(GOOD) == GOOD


@pytest.mark.parametrize(("key", "value"), BAD)
def test_invalid_values_name_the_field(key, value):
    with pytest.raises(TemplateFieldError) as info:
        validate_value(key, value)
    assert info.value.field == key
    assert key in str(info.value)
    assert isinstance(info.value, ValueError)


def test_non_string_and_empty_data_are_refused():
    with pytest.raises(TemplateFieldError):
        validate_value("number1", 12)
    with pytest.raises(TemplateFieldError):
        validate({})


def test_fit_truncates_things_only():
    data = fit({"thing1": "一" * 30, "thing2": "短", "character_string3": "x" * 40, "thing4": "  多  空格 "})
    assert data["thing1"] == "一" * 19 + "…" and len(data["thing1"]) == 20
    assert data["thing2"] == "短"
    assert data["character_string3"] == "x" * 40  # not a thing: left for validate() to refuse
    assert data["thing4"] == "多 空格"
    validate({"thing1": data["thing1"]})


def test_what_we_accept_the_standin_accepts():
    """Every value we pass also passes the stand-in's 47003 rules (we may be stricter, never looser)."""
    from wxapp_backend.wechat.standin import _field_ok

    for key, value in GOOD.items():
        assert _field_ok(key, value), key


def test_format_time_is_shanghai_24h():
    moment = datetime(2025, 10, 16, 6, 30, tzinfo=UTC)
    assert format_time(moment) == "2025年10月16日 14:30"
    validate_value("time1", format_time(moment))


def test_render_maps_fields_defaults_and_times():
    kind = DEFAULT_KINDS["appeal_accepted"]
    created = datetime(2025, 10, 16, 6, 30, tzinfo=UTC)
    data = render(kind, {"number": "SQ20251016-0001", "title": "办公室空调噪音扰民，希望物业尽快处理一下谢谢"},
                  created_at=created)
    assert data["character_string1"] == "SQ20251016-0001"
    assert data["thing2"].endswith("…") and len(data["thing2"]) == 20
    assert data["phrase3"] == "已受理"
    assert data["time4"] == "2025年10月16日 14:30"
    data = render(kind, {"number": "SQ1", "status": "处理中", "time": "2025-10-17T09:00:00+08:00",
                         "note": "网格员将联系您"}, title="诉求进展")
    assert data == {"character_string1": "SQ1", "thing2": "诉求进展", "phrase3": "处理中",
                    "time4": "2025年10月17日 09:00", "thing5": "网格员将联系您"}
    # Fields keyed by template keys work too.
    assert render(kind, {"character_string1": "SQ2", "thing2": "直接给模板字段", "time4": "10:00"})["thing2"] \
        == "直接给模板字段"
    with pytest.raises(TemplateFieldError) as info:
        render(kind, {"number": "SQ1", "status": "not chinese"}, title="x", created_at=created)
    assert info.value.field == "phrase3"
    with pytest.raises(TemplateFieldError):
        render(kind, {"number": "SQ1"}, title="", created_at=created)  # no title
    with pytest.raises(TemplateFieldError) as info:
        render(kind, {}, title="诉求", created_at=created)  # no appeal number
    assert info.value.field == "character_string1"


def test_every_default_kind_renders_from_what_its_callers_pass():
    created = datetime(2025, 10, 16, 6, 30, tzinfo=UTC)
    given = {"appeal": {"number": "SQ20251016-0001"}, "activity_changed": {"activity": "垂直马拉松"}}
    for kind in DEFAULT_KINDS.values():
        render(kind, next((v for k, v in given.items() if kind.name.startswith(k)), {}), title="标题",
               created_at=created)
    assert set(DEFAULT_KINDS) == {
        "appeal_accepted", "appeal_needs_info", "appeal_resolved", "appeal_closed", "appeal_escalated", "appeal_merged",
        "appeal_split", "appeal_extended", "appeal_staff_alert",
        "activity_reminder", "waitlist_promoted", "registration_approved", "registration_rejected",
        "registration_cancelled", "notice", "binding_result", "activity_changed"}


def test_kinds_file_overrides_and_adds(tmp_path):
    path = tmp_path / "kinds.yaml"
    path.write_text(
        "appeal_accepted:\n  template_id: REAL-accepted\n"
        "policy_digest:\n  template_id: REAL-digest\n  long_term: true\n  fields: {thing1: title}\n"
        "notice:\n  template_id: ''\n",
        encoding="utf-8")
    kinds = load_kinds(path)
    assert kinds["appeal_accepted"].template_id == "REAL-accepted"
    assert kinds["appeal_accepted"].fields == DEFAULT_KINDS["appeal_accepted"].fields
    assert kinds["policy_digest"] == Kind("policy_digest", "REAL-digest", {"thing1": "title"}, long_term=True)
    assert kinds["notice"].template_id == ""
    jpath = tmp_path / "kinds.json"
    jpath.write_text(json.dumps({"notice": {"fields": {"thing1": "title"}}}), encoding="utf-8")
    assert load_kinds(jpath)["notice"].fields == {"thing1": "title"}
    assert load_kinds(None) == DEFAULT_KINDS


@pytest.mark.parametrize("raw", [
    ["not", "a", "mapping"],
    {"notice": "x"},
    {"notice": {"colour": "red"}},
    {"notice": {"template_id": "x" * 65}},
    {"notice": {"fields": {"title": "thing1"}}},  # keys must be template keys
    {"notice": {"long_term": "yes"}},
    {"new_kind": {"template_id": "T"}},  # a template without fields
    {"notice": {"template_id": "SAME"}, "appeal_closed": {"template_id": "SAME", "long_term": True}},
])
def test_bad_kinds_files_are_refused(raw):
    with pytest.raises(ConfigError):
        parse_kinds(raw)


def test_unreadable_kinds_file(tmp_path):
    with pytest.raises(ConfigError):
        load_kinds(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("a: [1,\n", encoding="utf-8")
    with pytest.raises(ConfigError):
        load_kinds(bad)
