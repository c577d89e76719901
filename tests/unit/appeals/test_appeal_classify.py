"""Keyword classification, message type and similarity."""

from __future__ import annotations

from wxapp_backend.appeals import classify

RULES = [(c[0], c[5]) for c in classify.DEFAULT_CATALOGUE]


def test_categories_by_keywords():
    cases = {
        "增值税发票开不出来，税控盘坏了": "tax",
        "想办理营业执照地址变更": "registration",
        "员工社保断缴了怎么补": "labour",
        "园区停车位太少，经常违停": "traffic",
        "楼上装修噪音很大，垃圾堆在门口": "environment",
        "我们的商标被人仿冒了": "ip",
        "办公室空调坏了物业不管": "property",
        "申请的专精特新补贴一直没到账": "policy",
        "想申请贷款贴息，银行不给授信": "finance",
        "应届生落户需要什么条件": "talent",
    }
    for text, code in cases.items():
        s = classify.suggest(text, RULES)
        assert s.code == code, (text, s)


def test_no_evidence_means_no_suggestion():
    s = classify.suggest("你好，在吗", RULES)
    assert s.code is None and s.confidence == 0.0


def test_confidence_falls_with_mixed_evidence():
    clear = classify.suggest("增值税发票开票税控盘", RULES)
    mixed = classify.suggest("停车场的发票", RULES)
    assert clear.confidence > mixed.confidence


def test_message_type():
    assert classify.message_type("请问营业执照怎么办理？")[0] == "咨询"
    assert classify.message_type("投诉楼下饭店油烟扰民，多次反映没人管")[0] == "投诉/求助"
    assert classify.message_type("建议在园区增设共享单车停放点")[0] == "建言"


def test_similarity():
    a = "新华大厦电梯坏了三天了一直没人修"
    assert classify.similarity(a, "新华大厦的电梯坏了好几天没人修理") > 0.3
    assert classify.similarity(a, "增值税发票开不出来") < 0.1
    assert classify.similarity("", "") == 0.0
