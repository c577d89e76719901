"""Settings: the only reader of the environment."""

from __future__ import annotations

import pytest

from wxapp_backend.config import ConfigError, Settings


def test_production_refuses_to_start_without_secret_key(tmp_path):
    with pytest.raises(ConfigError) as exc:
        Settings.from_env({"APP_ENV": "production", "INSTANCE_PATH": str(tmp_path)})
    assert "SECRET_KEY" in str(exc.value)


def test_production_rejects_a_short_secret(tmp_path):
    with pytest.raises(ConfigError):
        Settings.from_env({"APP_ENV": "production", "SECRET_KEY": "short", "INSTANCE_PATH": str(tmp_path)})


def test_development_makes_and_keeps_a_secret(tmp_path):
    a = Settings.from_env({"INSTANCE_PATH": str(tmp_path)})
    b = Settings.from_env({"INSTANCE_PATH": str(tmp_path)})
    assert a.secret_key and a.secret_key == b.secret_key


def test_embedded_defaults(tmp_path):
    s = Settings.from_env({"INSTANCE_PATH": str(tmp_path)})
    assert s.resolved_database_url == f"sqlite:///{tmp_path / 'wxapp.sqlite3'}"
    assert s.uses_embedded_redis
    assert s.wechat_api_base == "https://api.weixin.qq.com"


def test_contract_names_are_read(tmp_path):
    env = {"INSTANCE_PATH": str(tmp_path), "DATABASE_URL": "postgresql://u@h/db", "REDIS_URL": "redis://h:1/2",
           "WECHAT_APPID": "a", "WECHAT_SECRET": "b", "WECHAT_TOKEN": "c", "WECHAT_AES_KEY": "d" * 43,
           "WECHAT_AES_KEY_PREVIOUS": "e" * 43, "WXA_APPID": "f", "WXA_SECRET": "g", "WXA_TOKEN": "h",
           "WXA_AES_KEY": "i" * 43, "WXA_MSG_FORMAT": "xml", "WECHAT_API_BASE": "http://127.0.0.1:9/"}
    s = Settings.from_env(env)
    assert (s.database_url, s.redis_url, s.wechat_appid, s.wechat_secret, s.wechat_token) == \
        ("postgresql://u@h/db", "redis://h:1/2", "a", "b", "c")
    assert s.wechat_aes_key_previous == "e" * 43 and s.wxa_msg_format == "xml"
    assert s.wechat_api_base == "http://127.0.0.1:9"
    assert s.describe()["wechat_secret"] == "***"


def test_bad_message_format_is_refused(tmp_path):
    with pytest.raises(ConfigError):
        Settings.from_env({"INSTANCE_PATH": str(tmp_path), "WXA_MSG_FORMAT": "yaml"})


def test_bad_number_names_the_variable(tmp_path):
    with pytest.raises(ConfigError) as exc:
        Settings.from_env({"INSTANCE_PATH": str(tmp_path), "WEBHOOK_DEADLINE": "soon"})
    assert "WEBHOOK_DEADLINE" in str(exc.value)


def test_fanout_tuning_comes_from_the_environment(tmp_path):
    base = {"INSTANCE_PATH": str(tmp_path)}
    s = Settings.from_env({**base, "FANOUT_RATE": "12.5", "FANOUT_BURST": "4", "FANOUT_JOBS": "2"})
    assert s.extra == {"fanout_rate": 12.5, "fanout_burst": 4, "fanout_jobs": 2}
    assert Settings.from_env(base).extra == {}
    for name, bad in (("FANOUT_RATE", "abc"), ("FANOUT_JOBS", "0"), ("FANOUT_BURST", "-1"), ("FANOUT_JOBS", "1.5"),
                      ("FANOUT_RATE", "nan"), ("FANOUT_RATE", "NaN"), ("FANOUT_RATE", "inf"), ("FANOUT_JOBS", "100000")):
        with pytest.raises(ConfigError) as exc:
            Settings.from_env({**base, name: bad})
        assert name in str(exc.value)


def test_a_wrong_aes_key_or_log_level_names_the_variable(tmp_path):
    """A pasted EncodingAESKey with a trailing space is taken; a wrong one stopped the start with "EncodingAESKey must
    be 43 characters" (which of the three?), an unknown LOG_LEVEL with a bare traceback from logging."""
    key = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG"
    base = {"INSTANCE_PATH": str(tmp_path)}
    assert Settings.from_env({**base, "WXA_AES_KEY": key + " \n"}).wxa_aes_key == key
    for name in ("WECHAT_AES_KEY", "WECHAT_AES_KEY_PREVIOUS", "WXA_AES_KEY"):
        for bad in (key[:-1], key[:-1] + "!"):
            with pytest.raises(ConfigError) as info:
                Settings.from_env({**base, name: bad})
            assert name in str(info.value) and bad not in str(info.value)  # the key itself is never shown
    with pytest.raises(ConfigError, match="LOG_LEVEL"):
        Settings.from_env({**base, "LOG_LEVEL": "verbose"})
    assert Settings.from_env({**base, "LOG_LEVEL": " debug "}).log_level == "DEBUG"
