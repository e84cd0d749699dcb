"""Writes the bundled synthetic telecom_demo / telecom_demo_test splits (data/).

The real telecom table cannot ship here, so the demo and the tests use
a synthetic table in its shape: instruction
``回答中国电信手机用户的问题,{question},应该怎么做？``, empty input, and an answer of
``|``-joined labels such as ``取消方式_68`` or ``业务简介_111|9.9|开通方式_98``.
Each (service, action) pair has one answer; the test split asks every pair with a
phrasing that the train split never uses, so a model must generalise over wording.

    python -m lfkit.dataset_registry.generate_demo
"""

from __future__ import annotations

import random
from pathlib import Path

from lfkit.atomic import write_json

SERVICES = [
    "9元百度专属定向流量包",
    "7天5g视频会员流量包",
    "畅享套餐",
    "宽带提速包",
    "国际漫游",
    "视频会员",
    "副卡",
    "亲情号",
    "来电显示",
    "彩铃",
    "天翼云盘",
    "爱奇艺会员",
    "腾讯视频会员",
    "5G升级包",
    "夜间流量包",
    "语音包",
    "短信包",
    "积分兑换",
    "话费充值",
    "流量日包",
]
# action -> (category label, phrasings: the last one is held out for the test split).
# Every phrasing of an action carries its key word (取消, 开通, 介绍, 多少钱) and the
# filler words (请问, 我的, 这个业务, 怎样, 要花, 呀) appear with other actions or in other
# places, so the held-out wording can be answered from what the train split teaches,
# and only from that. Every character of a held-out question occurs in train: one that
# train never shows keeps its random embedding, and that noise alone made a tiny model
# drop or misread the price in held-out price questions.
ACTIONS = {
    "取消": (
        "取消方式",
        [
            "{s}如何取消",
            "我想取消{s}呀",
            "请问{s}怎么取消",
            "帮我取消我的{s}",
            "取消{s}这个业务要怎样做",
            "怎样取消我的{s}呀",
        ],
    ),
    "开通": (
        "开通方式",
        [
            "{s}如何开通",
            "我想开通{s}呀",
            "请问{s}怎么开通",
            "帮我开通我的{s}",
            "开通{s}这个业务要怎样做",
            "怎样开通我的{s}呀",
        ],
    ),
    "介绍": (
        "业务简介",
        [
            "介绍一下{s}呀",
            "我想了解{s}的介绍",
            "请问{s}是什么,介绍一下",
            "帮我介绍我的{s}",
            "介绍{s}这个业务包含哪些内容",
            "请介绍我的{s}这个业务呀",
        ],
    ),
    "资费": (
        "业务简介",
        [
            "{s}多少钱",
            "我想知道{s}要花多少钱",
            "请问{s}怎么收费,多少钱",
            "帮我查我的{s}多少钱呀",
            "{s}这个业务要多少钱",
            "请问我的{s}要花多少钱呀",
        ],
    ),
}
TEMPLATE = "回答中国电信手机用户的问题,{question},应该怎么做？"


def _answer(rng: random.Random, category: str, action: str, service_id: int) -> str:
    label = f"{category}_{service_id}"
    if action == "资费":
        price = rng.choice(["5", "9.9", "10", "19", "29", "39"])
        return f"{label}|{price}|开通方式_{service_id}"
    return label


def build(seed: int = 0) -> tuple[list[dict], list[dict]]:
    rng = random.Random(seed)
    train, test = [], []
    for index, service in enumerate(SERVICES):
        service_id = 60 + index * 3
        for action, (category, phrasings) in ACTIONS.items():
            answer = _answer(rng, category, action, service_id)
            for n, phrasing in enumerate(phrasings):
                row = {
                    "instruction": TEMPLATE.format(question=phrasing.format(s=service)),
                    "input": "",
                    "output": answer,
                }
                (test if n == len(phrasings) - 1 else train).append(row)
    rng.shuffle(train)
    rng.shuffle(test)
    return train, test


def main() -> None:
    train, test = build()
    data = Path(__file__).resolve().parent / "data"
    write_json(data / "telecom_demo.json", train)
    write_json(data / "telecom_demo_test.json", test)
    print(f"telecom_demo: {len(train)} rows, telecom_demo_test: {len(test)} rows -> {data}")


if __name__ == "__main__":
    main()
