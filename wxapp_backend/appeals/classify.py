"""Keyword rules (jieba) that suggest a category and department, the message type, and text similarity.

A library: no Flask, no database. The catalogue rows are passed in as plain (code, keywords) pairs.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import jieba

jieba.setLogLevel(60)

# 政府服务清单 defaults: code, name, owning department, promised working days, required fields, keywords.
DEFAULT_CATALOGUE: tuple[tuple[str, str, str, int, tuple[str, ...], tuple[str, ...]], ...] = (
    ("registration", "工商登记", "市场监管所", 5, ("enterprise_id",),
     ("营业执照", "执照", "工商", "注册", "登记", "变更", "注销", "经营范围", "法人", "股东", "开办", "迁入",
      "迁址", "地址变更", "年报", "市场监管", "吊销", "核名")),
    ("tax", "税务", "税务所", 5, ("enterprise_id",),
     ("税", "税务", "发票", "纳税", "退税", "申报", "增值税", "所得税", "个税", "税率", "开票", "税控", "减免",
      "留抵", "汇算", "税务局", "电子税务局")),
    ("talent", "人才/落户", "人才服务中心", 10, (),
     ("落户", "户口", "居住证", "人才", "引进", "积分", "留学", "应届", "博士", "公租房", "人才公寓", "子女入学",
      "入学", "学位", "签证", "外籍", "工作许可")),
    ("labour", "社保/用工", "劳动监察队", 7, (),
     ("社保", "公积金", "医保", "工资", "欠薪", "劳动", "合同", "招聘", "用工", "辞退", "裁员", "仲裁", "工伤",
      "退休", "养老", "失业", "稳岗", "加班", "员工", "培训补贴")),
    ("finance", "融资", "营商服务中心", 10, ("enterprise_id",),
     ("融资", "贷款", "银行", "担保", "授信", "资金", "利息", "贴息", "上市", "投资", "信贷", "抵押", "周转",
      "风险", "还款", "基金")),
    ("policy", "政策兑现", "营商服务中心", 10, ("enterprise_id",),
     ("政策", "补贴", "扶持", "奖励", "兑现", "申报", "资助", "专项", "补助", "认定", "高新", "专精特新",
      "惠企", "返还", "拨付", "到账")),
    ("property", "楼宇物业", "楼宇服务站", 3, ("building_id",),
     ("物业", "电梯", "空调", "停电", "停水", "漏水", "保洁", "门禁", "租金", "租赁", "房东", "装修", "消防",
      "楼宇", "办公室", "网络", "宽带", "供暖", "水电", "维修")),
    ("environment", "市容环境", "城运中心", 3, ("building_id",),
     ("垃圾", "噪音", "噪声", "油烟", "污染", "绿化", "环境", "卫生", "占道", "施工", "扰民", "异味", "脏乱",
      "违建", "乱", "排水", "下水道", "积水")),
    ("traffic", "交通停车", "交警中队", 5, (),
     ("停车", "车位", "交通", "公交", "地铁", "道路", "拥堵", "红绿灯", "违停", "出行", "班车", "共享单车",
      "路口", "充电桩", "停车场", "罚单")),
    ("ip", "知识产权", "市场监管所", 10, ("enterprise_id",),
     ("专利", "商标", "版权", "著作权", "知识产权", "侵权", "仿冒", "假冒", "软著", "品牌")),
    ("other", "其他", "营商服务中心", 5, (), ()),
)

OTHER_CODE = "other"
TRIAGE_THRESHOLD = 0.5  # below this the appeal waits in the triage queue for a person to route it


@dataclass(frozen=True)
class Suggestion:
    code: str | None
    confidence: float
    scores: dict[str, float]


def tokens(text: str) -> list[str]:
    return [t for t in jieba.lcut(text or "") if t.strip() and not _PUNCT.fullmatch(t)]


_PUNCT = re.compile(r"[\W_]+", re.UNICODE)


def suggest(text: str, rules: Iterable[tuple[str, Sequence[str]]]) -> Suggestion:
    """Score each category by its keywords found in the text; confidence is the top share of all hits.

    A keyword counts once; longer keywords weigh more (a two-character word says more than one character).
    """
    words = set(tokens(text))
    scores: dict[str, float] = {}
    for code, keywords in rules:
        score = 0.0
        for kw in keywords:
            if kw in words or (len(kw) >= 2 and kw in text):
                score += 1.0 + 0.25 * (len(kw) - 1)
        if score:
            scores[code] = score
    if not scores:
        return Suggestion(None, 0.0, {})
    ranked = sorted(scores.items(), key=lambda kv: -kv[1])
    top_code, top = ranked[0]
    total = sum(scores.values())
    # Share of the evidence, damped when there is little of it (one weak hit is not certainty).
    confidence = (top / total) * (1 - math.exp(-top / 1.5))
    return Suggestion(top_code, round(confidence, 3), scores)


# --- message type: 咨询 / 投诉/求助 / 建言 ---------------------------------------------------------------

_TYPE_RULES: dict[str, tuple[tuple[str, float], ...]] = {
    "咨询": (("请问", 3), ("咨询", 3), ("想问", 3), ("想了解", 2.5), ("问一下", 3), ("能否告知", 3),
           ("如何", 1.5), ("怎么办理", 2.5), ("在哪里", 2), ("哪里可以", 2), ("需要哪些", 2.5), ("什么时候", 1.5),
           ("是否", 1), ("吗？", 1.5), ("吗?", 1.5), ("吗", 0.5), ("多少", 1), ("怎样", 1), ("流程", 1.5),
           ("材料", 1), ("条件", 1), ("可不可以", 1.5), ("有没有", 1)),
    "投诉/求助": (("投诉", 3.5), ("举报", 3.5), ("求助", 3.5), ("反映", 1.5), ("严重", 1.5), ("无人管", 3),
              ("没人管", 3), ("不作为", 3), ("拖欠", 2.5), ("欠薪", 3), ("扰民", 2.5), ("噪音", 2), ("违规", 2),
              ("违法", 2), ("乱收费", 3), ("霸王", 2), ("强行", 2), ("受害", 2), ("恳请", 1.5), ("请求", 1),
              ("帮帮", 2.5), ("救救", 3), ("无奈", 1.5), ("至今", 1.5), ("多次", 1.5), ("一直", 1),
              ("占用", 1.5), ("损坏", 1.5), ("污染", 1.5), ("拒绝", 1), ("不给", 1.5), ("不退", 2), ("骗", 2)),
    "建言": (("建议", 3.5), ("希望", 2), ("呼吁", 3), ("应该", 1.5), ("能否", 1.5), ("是否可以", 1.5), ("提议", 3),
           ("加快", 1.5), ("增设", 2.5), ("增加", 1.5), ("完善", 1.5), ("尽快", 1), ("规划", 1), ("改善", 1.5),
           ("加强", 1.5), ("设立", 1.5), ("开通", 1.5), ("修建", 2), ("考虑", 1.5), ("推动", 1.5), ("提升", 1)),
}
TYPE_LABELS = tuple(_TYPE_RULES)


def message_type(text: str) -> tuple[str, float]:
    """咨询 vs 投诉/求助 vs 建言 with a confidence; ties and silence fall back to 投诉/求助 (an appeal)."""
    text = text or ""
    scores = {label: sum(w for kw, w in rules if kw in text) for label, rules in _TYPE_RULES.items()}
    if text.rstrip().endswith(("？", "?")):
        scores["咨询"] += 1.5
    best = max(scores, key=lambda k: (scores[k], k == "投诉/求助"))
    total = sum(scores.values())
    if scores[best] == 0:
        return "投诉/求助", 0.0
    return best, round(scores[best] / total, 3)


# --- public-service domain (the labels of the gov message set; used by the benchmark) -------------------

DOMAIN_RULES: dict[str, tuple[str, ...]] = {
    "城建": ("小区", "物业", "房屋", "住房", "拆迁", "房产", "开发商", "楼盘", "业主", "公积金", "装修", "电梯",
           "供暖", "暖气", "燃气", "自来水", "停水", "停电", "规划", "棚改", "安置", "产权", "房本", "不动产",
           "违建", "建设", "工地", "施工", "道路", "路灯", "下水", "排水", "改造", "旧改", "交房", "商品房"),
    "交通": ("交通", "公交", "地铁", "高速", "车站", "停车", "驾驶", "驾照", "车辆", "红绿灯", "路口", "拥堵",
           "出租车", "网约车", "客运", "铁路", "高铁", "机场", "航班", "车牌", "违章", "收费站", "线路", "班次"),
    "教育": ("学校", "学生", "教师", "老师", "教育", "入学", "学位", "招生", "考试", "高考", "中考", "幼儿园",
           "小学", "中学", "大学", "培训", "补课", "学费", "校园", "班主任", "毕业", "学籍"),
    "政务": ("政府", "办事", "窗口", "审批", "证明", "户口", "户籍", "身份证", "政务", "公务员", "信访",
           "派出所", "一网通办", "政策", "编制", "事业单位", "干部", "村委", "居委"),
    "企业": ("企业", "公司", "营业执照", "工商", "个体", "经营", "商户", "贷款", "融资", "税", "发票", "注册",
           "厂", "老板", "生意", "门店"),
    "治安": ("派出所", "警察", "报警", "诈骗", "偷", "盗", "打架", "治安", "赌博", "黑恶", "传销", "民警", "110"),
    "环保": ("污染", "环保", "排放", "噪音", "噪声", "垃圾", "异味", "臭", "废气", "废水", "粉尘", "油烟",
           "扰民", "环境", "河道", "水质", "秸秆"),
    "就业": ("工资", "欠薪", "社保", "就业", "劳动", "招聘", "失业", "养老保险", "辞退", "工伤", "仲裁",
           "农民工", "劳务", "退休", "职称"),
    "医疗": ("医院", "医生", "医保", "看病", "疫苗", "药", "卫生", "医疗", "挂号", "诊所", "核酸", "疫情",
           "护士", "住院"),
    "三农": ("农民", "农村", "土地", "耕地", "种植", "养殖", "村民", "宅基地", "扶贫", "农业", "承包", "粮食",
           "补贴款", "合作社"),
    "文娱": ("文化", "图书馆", "体育", "健身", "广场舞", "电影", "演出", "博物馆", "文艺"),
    "旅游": ("旅游", "景区", "景点", "门票", "游客", "酒店", "导游"),
    "金融": ("银行", "信用卡", "理财", "保险", "证券", "股票", "利率", "征信", "存款"),
}


def domain(text: str) -> tuple[str, float]:
    """The public-service domain by keyword hits; '' (no domain) when nothing matches."""
    text = text or ""
    scores = {label: sum(1 + 0.25 * (len(kw) - 1) for kw in kws if kw in text) for label, kws in DOMAIN_RULES.items()}
    best = max(scores, key=lambda k: scores[k])
    if scores[best] == 0:
        return "", 0.0
    return best, round(scores[best] / sum(scores.values()), 3)


# --- similarity for duplicate suggestions ------------------------------------------------------------

_STOP = frozenset("的 了 是 在 我 我们 你 您 和 与 及 有 也 就 都 而 被 把 请 吗 呢 啊 吧 这 那 一个 没有 现在 公司 企业".split())


def _bigrams(text: str) -> set[str]:
    chars = [c for c in text if not _PUNCT.fullmatch(c)]
    return {a + b for a, b in zip(chars, chars[1:], strict=False)}


def similarity(a: str, b: str) -> float:
    """Mean of the jieba-token Jaccard and the character-bigram Jaccard, 0..1."""
    ta = {t for t in tokens(a) if t not in _STOP}
    tb = {t for t in tokens(b) if t not in _STOP}
    ba, bb = _bigrams(a), _bigrams(b)
    j1 = len(ta & tb) / len(ta | tb) if ta | tb else 0.0
    j2 = len(ba & bb) / len(ba | bb) if ba | bb else 0.0
    return round((j1 + j2) / 2, 3)
