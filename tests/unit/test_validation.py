"""Input validation and the credit-code check digit."""

from __future__ import annotations

import pytest

from wxapp_backend.errors import ValidationError
from wxapp_backend.validation import Field, credit_code_problem, validate

# Real, published codes of well-known companies (public business registration data).
VALID_CODES = ["91310000607216596U", "91110000100010433L", "91440300708461136T"]


@pytest.mark.parametrize("code", VALID_CODES)
def test_real_credit_codes_pass(code):
    assert credit_code_problem(code) is None


def test_wrong_check_digit_is_named():
    code = VALID_CODES[0][:-1] + ("A" if VALID_CODES[0][-1] != "A" else "B")
    assert "校验位" in credit_code_problem(code)


@pytest.mark.parametrize("code,why", [("9131000060721659", "18 位"), ("91310000607216596I", "不允许"),
                                      ("913100X0607216596U", "行政区划")])
def test_malformed_credit_codes(code, why):
    assert why in credit_code_problem(code)


def test_validate_names_every_bad_field():
    fields = [Field("name", "str", "名称", required=True, max_len=5), Field("phone", "phone", "手机号"),
              Field("n", "int", "数量", min=1)]
    with pytest.raises(ValidationError) as exc:
        validate({"name": "一二三四五六", "phone": "123", "n": 0}, fields)
    assert set(exc.value.fields) == {"name", "phone", "n"}
    assert "5" in exc.value.fields["name"]


def test_validate_strips_control_characters_and_keeps_html_as_text():
    out = validate({"name": "  <b>x</b>\x00 "}, [Field("name", "str", max_len=50)])
    assert out["name"] == "<b>x</b>"


def test_missing_required_field():
    with pytest.raises(ValidationError) as exc:
        validate({}, [Field("code", "str", "登录凭证", required=True)])
    assert exc.value.fields == {"code": "请填写登录凭证"}


def test_bool_is_not_an_int():
    with pytest.raises(ValidationError):
        validate({"n": True}, [Field("n", "int")])


@pytest.mark.parametrize("kind", ["date", "datetime"])
@pytest.mark.parametrize("value", [20240101, 2024.0101, True])
def test_a_date_sent_as_a_number_is_refused_in_words(kind, value):
    """The JSON number 20240101 was read as 2024-01-01 (str() of it is ISO's basic form): a client sending numbers
    for dates got by on luck. A date or time is text."""
    with pytest.raises(ValidationError) as exc:
        validate({"d": value}, [Field("d", kind, "日期")])
    assert "不是数字" in exc.value.fields["d"], exc.value.fields
    assert validate({"d": "2024-01-01"}, [Field("d", kind, "日期")])["d"].year == 2024


def test_a_yes_no_field_takes_the_numbers_1_and_0_as_it_takes_the_strings():
    """“1”/“0” were taken for a yes/no field and the JSON numbers 1/0 refused (应为是或否): a client sending its
    checkbox as 1 got a 422. Other numbers are still refused."""
    f = [Field("b", "bool", "同意")]
    assert validate({"b": 1}, f)["b"] is True and validate({"b": 0}, f)["b"] is False
    assert validate({"b": "1"}, f)["b"] is True
    for bad in (2, -1, 1.0, 0.5):
        with pytest.raises(ValidationError):
            validate({"b": bad}, f)
